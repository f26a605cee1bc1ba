"""One entry point for training data: a file or Hub id plus a format name -> `list[Sample]`.

Config files name a data source and (optionally) its format; this module reads the records
(JSON array streamed with ijson, JSON Lines line by line, or a Hub dataset), picks the format's
converter, and returns validated samples. Format modules build their hooks and `load_<format>`
functions from `samples_from_records` and `load_file` here; this module imports them lazily so the
dependency runs one way at import time.
"""

from __future__ import annotations

import importlib
import itertools
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ijson

from theworld.data.images import DEFAULT_MAX_SKIP_FRACTION, convert_records, naming_sample
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)

# Format name -> "module:hook", the hook taking (records, *, source, image_folder,
# max_skip_fraction, limit, **options); each is `samples_from_records` bound to the format's
# converter. Names, not imports, so loading.py can be imported by the format modules.
_SAMPLERS: dict[str, str] = {
    "llava": "theworld.data.llava:llava_samples",
    "cc3m": "theworld.data.llava:llava_samples",
    "messages": "theworld.data.messages:messages_samples",
    "qa": "theworld.data.messages:qa_samples",
    "openspatial": "theworld.data.openspatial:openspatial_samples",
    "vsr": "theworld.data.vsr:vsr_samples",
}
FORMATS: tuple[str, ...] = ("auto", *_SAMPLERS)

# `owner/name` or `owner/name:split`; a data file name is never taken for one.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.-]+)?$")
_BOM = b"\xef\xbb\xbf"
_DATA_FILE = re.compile(r"\.(json|jsonl|ndjson|txt|csv|parquet)$", re.IGNORECASE)


def record_id(record: dict[str, Any], index: int, source: str, key: str = "id") -> str:
    """The record's own id when it has one, else `<file name>#<index>`, for logs and errors."""
    value = record.get(key)
    if value is not None and str(value) != "":
        return str(value)
    return f"{os.path.basename(source)}#{index}"


def iter_records(path: str) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSON array or JSON Lines file, one dict at a time.

    Arrays are streamed with ijson because some (OpenSpatialDataset, ~30 GB) do not fit in
    memory. Malformed input raises `TheWorldUserError` naming the file (and line for JSONL).
    """
    with open(path, "rb") as handle:
        first = _first_char(handle)
        handle.seek(0)
        if handle.read(3) != _BOM:  # ijson does not skip a BOM itself
            handle.seek(0)
        if first == b"[":
            yield from _array_records(handle, path)
        else:
            yield from _jsonl_records(handle, path)


def _first_char(handle: Any) -> bytes:
    """The first non-blank byte after an optional UTF-8 BOM; it tells an array from JSONL."""
    head = handle.read(4096)
    if head.startswith(_BOM):
        head = head[3:]
    while head:
        stripped = head.lstrip()
        if stripped:
            return stripped[:1]
        head = handle.read(4096)
    return b""


def _array_records(handle: Any, path: str) -> Iterator[dict[str, Any]]:
    """Stream the items of a top-level JSON array (floats as float, not Decimal)."""
    try:
        for index, item in enumerate(ijson.items(handle, "item", use_float=True)):
            if not isinstance(item, dict):
                raise TheWorldUserError(f"{path}: item {index} is not a JSON object")
            yield item
    except ijson.JSONError as err:
        raise TheWorldUserError(f"{path}: not a valid JSON array ({err})") from err


def _jsonl_records(handle: Any, path: str) -> Iterator[dict[str, Any]]:
    """Parse one JSON object per non-blank line."""
    for line_number, raw in enumerate(handle, start=1):
        line = raw.decode("utf-8").strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise TheWorldUserError(
                f"{path}:{line_number}: not valid JSON ({err.msg}); expected a JSON array or "
                f"JSON Lines (one object per line)"
            ) from err
        if not isinstance(item, dict):
            raise TheWorldUserError(f"{path}:{line_number}: not a JSON object")
        yield item


def detect_format(record: dict[str, Any], source: str = "data") -> str:
    """The format name a record's keys imply, so configs may say `format: auto`."""
    keys = set(record)
    if "messages" in keys:
        return "messages"
    if "conversations" in keys and "filename" in keys and "bbox" in keys:
        return "openspatial"
    if "conversations" in keys:
        return "llava"
    if "question" in keys:
        return "qa"
    if {"caption", "label", "image"} <= keys:
        return "vsr"
    raise TheWorldUserError(
        f"{source}: cannot tell the data format from the first record's keys "
        f"{sorted(keys)}; pass format= one of {', '.join(FORMATS[1:])}"
    )


def looks_like_hub_id(path_or_id: str) -> bool:
    """True for `owner/name[:split]` that is not a data file name."""
    return bool(_HUB_ID.match(path_or_id)) and not _DATA_FILE.search(path_or_id.split(":")[0])


def _sampler(format: str) -> Callable[..., list[Sample]]:
    module_name, function_name = _SAMPLERS[format].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def _hub_records(dataset_id: str) -> Iterator[dict[str, Any]]:
    """Rows of a Hub dataset (`owner/name` or `owner/name:split`, default split `train`)."""
    import datasets  # heavy; only when a Hub id is asked for

    name, _, split = dataset_id.partition(":")
    logger.info("loading Hub dataset %s (split %s)", name, split or "train")
    yield from datasets.load_dataset(name, split=split or "train")


def load_samples(
    path_or_id: str,
    format: str = "auto",
    image_folder: str | None = None,
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
    limit: int | None = None,
    **options: Any,
) -> list[Sample]:
    """Read a data file (or Hub dataset id) in one of `FORMATS` into validated samples.

    `image_folder` defaults to the data file's folder (the working directory for a Hub id).
    `options` go to the format's converter (e.g. `draw_boxes=True, cache_dir=...` for
    openspatial). Raises `TheWorldUserError` for an unknown format, a missing file, an empty
    source, a malformed record, or more skipped samples than `max_skip_fraction` allows.
    """
    if format not in FORMATS:
        raise TheWorldUserError(
            f"unknown data format {format!r}; valid formats: {', '.join(FORMATS)}"
        )
    path_or_id = str(path_or_id)
    if os.path.exists(path_or_id):
        if os.path.isdir(path_or_id):
            raise TheWorldUserError(f"{path_or_id} is a folder; give the JSON/JSONL data file")
        records: Iterator[dict[str, Any]] = iter_records(path_or_id)
        default_folder = _folder_of(path_or_id)
    elif looks_like_hub_id(path_or_id):
        records = _hub_records(path_or_id)
        default_folder = os.getcwd()
    else:
        raise TheWorldUserError(
            f"data file {path_or_id} does not exist (and is not a Hub dataset id owner/name)"
        )
    first = next(records, None)
    if first is None:
        raise TheWorldUserError(f"{path_or_id} holds no records")
    if format == "auto":
        format = detect_format(first, path_or_id)
        logger.info("%s: detected format %s", path_or_id, format)
    return _sampler(format)(
        itertools.chain([first], records),
        source=path_or_id,
        image_folder=image_folder if image_folder is not None else default_folder,
        max_skip_fraction=max_skip_fraction,
        limit=limit,
        **options,
    )


def samples_from_records(
    records: Iterable[dict[str, Any]],
    *,
    to_sample: Callable[..., Sample],
    source: str,
    image_folder: str | None,
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
    limit: int | None = None,
    id_rule: Callable[[dict[str, Any], int, str], str] = record_id,
    **options: Any,
) -> list[Sample]:
    """Convert and validate records of one format: the body of every format's hook.

    `to_sample(record, image_folder=..., sample_id=..., **options)` builds one `Sample` (options
    are format-specific, e.g. openspatial's `draw_boxes`); `id_rule(record, index, source)` names
    it, so a format whose records carry no id can name them better than `<file>#<index>`.
    Skips and the skip budget are `convert_records`'s.
    """

    def convert(record: dict[str, Any], index: int) -> Sample:
        sample_id = id_rule(record, index, source)
        with naming_sample(sample_id):  # a skipped visual is logged with the sample it belongs to
            return to_sample(record, image_folder=image_folder, sample_id=sample_id, **options)

    return convert_records(
        records, convert, source=source, max_skip_fraction=max_skip_fraction, limit=limit
    )


def load_file(
    path: str,
    samples: Callable[..., list[Sample]],
    image_folder: str | None = None,
    *,
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
    limit: int | None = None,
    **options: Any,
) -> list[Sample]:
    """Read a local JSON/JSONL file with one format's hook: what `load_<format>` functions share.

    `image_folder` defaults to the file's folder. Unlike `load_samples` this neither detects the
    format nor tries the Hub, and an empty file gives no samples rather than an error.
    """
    return samples(
        iter_records(path),
        source=path,
        image_folder=image_folder if image_folder is not None else _folder_of(path),
        max_skip_fraction=max_skip_fraction,
        limit=limit,
        **options,
    )


def _folder_of(path: str) -> str:
    """The folder holding a data file: where its relative image paths point by default."""
    return os.path.dirname(os.path.abspath(path))

