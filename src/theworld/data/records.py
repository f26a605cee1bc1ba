"""Records of a data file or Hub dataset: the one reader of JSON, JSON Lines and parquet, for training and evaluation.
No file is read whole (OpenSpatial is one ~30 GB JSON array); malformed input names the file and row.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import ijson

from theworld.errors import TheWorldUserError

# `owner/name` or `owner/name:split`; a data file name is never taken for one.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.-]+)?$")
_DATA_FILE = re.compile(r"\.(json|jsonl|ndjson|txt|csv|parquet)$", re.IGNORECASE)
_BOM = b"\xef\xbb\xbf"


def looks_like_hub_id(value: str) -> bool:
    """True for `owner/name[:split]` that is not a data file name."""
    return bool(_HUB_ID.match(value)) and not _DATA_FILE.search(value.split(":")[0])


def iter_rows(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any]]]:
    """`(where, record)` for each record of a JSON array, JSON Lines or parquet file."""
    path = str(path)
    if path.lower().endswith(".parquet"):
        yield from _parquet_rows(path)
        return
    with open(path, "rb") as handle:
        head = handle.read(4096).removeprefix(_BOM).lstrip()
        handle.seek(0)
        if handle.read(3) != _BOM:  # ijson does not skip a BOM itself
            handle.seek(0)
        yield from (_array_rows if head[:1] == b"[" else _jsonl_rows)(handle, path)


def iter_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The records of a JSON array, JSON Lines or parquet file, one dict at a time."""
    return (record for _, record in iter_rows(path))


def _array_rows(handle: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Stream the items of a top-level JSON array (floats as float, not Decimal)."""
    try:
        for index, item in enumerate(ijson.items(handle, "item", use_float=True)):
            if not isinstance(item, dict):
                raise TheWorldUserError(f"{path}: item {index} is not a JSON object")
            yield f"{path} row {index}", item
    except ijson.JSONError as err:
        raise TheWorldUserError(f"{path}: not a valid JSON array ({err})") from err


def _jsonl_rows(handle: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Parse one JSON object per non-blank line."""
    for line_number, raw in enumerate(handle, start=1):
        line = raw.decode("utf-8").strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            expected = "expected a JSON array or JSON Lines (one object per line)"
            raise TheWorldUserError(f"{path}:{line_number}: not valid JSON ({err.msg}); {expected}") from err
        if not isinstance(item, dict):
            raise TheWorldUserError(f"{path}:{line_number}: not a JSON object")
        yield f"{path}:{line_number}", item


def _parquet_rows(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=256)
        for index, record in enumerate(record for batch in batches for record in batch.to_pylist()):
            yield f"{path} row {index}", record
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise TheWorldUserError(f"{path}: unreadable parquet file ({err})") from err


def hub_rows(dataset_id: str, config: str | None = None, split: str | None = None) -> Any:
    """The rows of a Hub dataset (`owner/name`, or `owner/name:split`; split `train` by default)."""
    import datasets  # heavy; only when a Hub id is asked for

    name, _, named_split = dataset_id.partition(":")
    split = split or named_split or "train"
    kwargs: dict[str, Any] = {"split": split, **({"name": config} if config else {})}
    try:
        return datasets.load_dataset(name, **kwargs)
    except (OSError, ValueError) as err:  # not found, offline, bad config/split
        raise TheWorldUserError(f"could not load Hub dataset {name!r} (config {config!r}, split {split!r}): {err}") from err
