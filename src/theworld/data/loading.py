"""One entry point for training data: a file or Hub id plus a format name -> validated `Sample`s.
Format modules are imported lazily, by name, so they may import this module.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from theworld.data.images import DEFAULT_MAX_SKIP_FRACTION, convert_records, naming_sample
from theworld.data.records import hub_rows, iter_records, looks_like_hub_id
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError

__all__ = ["FORMATS", "RecordFormat", "detect_format", "iter_records", "load_samples", "looks_like_hub_id", "open_records"]

logger = logging.getLogger(__name__)

# Format name -> "module:RecordFormat" in theworld.data. Names, not imports, so the format modules may import this one.
_FORMATS: dict[str, str] = {
    "llava": "llava:llava_samples", "cc3m": "llava:llava_samples", "messages": "messages:messages_samples",
    "qa": "messages:qa_samples", "openspatial": "openspatial:openspatial_samples", "vsr": "vsr:vsr_samples",
}
FORMATS: tuple[str, ...] = ("auto", *_FORMATS)


def record_id(record: dict[str, Any], index: int, source: str, name_key: str | None = None) -> str:
    """The record's own id; else `<its name_key field>#<index>` (formats without ids, where one image has many
    records); else `<file name>#<index>`."""
    value, name = record.get("id"), record.get(name_key) if name_key else None
    if value is None and isinstance(name, str) and name:
        return f"{name}#{index}"
    return str(value) if value is not None and str(value) != "" else f"{os.path.basename(source)}#{index}"


@dataclass(frozen=True)
class RecordFormat:
    """One data format: how a record becomes a `Sample`, and how a record without an id is named."""

    to_sample: Callable[..., Sample]
    name_key: str | None = None  # the field that names a record without an id (`record_id`)

    def converter(self, *, source: str, image_folder: str | None, **options: Any) -> Callable[..., Sample]:
        """`convert(record, index) -> Sample`, for records read from `source` (picklable, for dataloader workers)."""
        return functools.partial(self.convert, source=source, image_folder=image_folder, **options)

    def convert(self, record: dict[str, Any], index: int, *, source: str, image_folder: Any, **options: Any) -> Sample:
        sample_id = record_id(record, index, source, self.name_key)
        with naming_sample(sample_id):  # a skipped visual is logged with the sample it belongs to
            return self.to_sample(record, image_folder=image_folder, sample_id=sample_id, **options)

    def __call__(
        self,
        records: Iterable[dict[str, Any]],
        *,
        source: str,
        image_folder: str | None,
        max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
        limit: int | None = None,
        **options: Any,
    ) -> list[Sample]:
        convert = self.converter(source=source, image_folder=image_folder, **options)
        return convert_records(records, convert, source=source, max_skip_fraction=max_skip_fraction, limit=limit)

    def load(self, path: str, image_folder: str | None = None, **kwargs: Any) -> list[Sample]:
        """A local JSON/JSONL file's samples (no format detection, no Hub; images default to the file's folder)."""
        return self(iter_records(path), source=path, image_folder=image_folder or _folder_of(path), **kwargs)


# The keys that tell a format, tried in order (openspatial before llava: both have `conversations`).
_FORMAT_KEYS = (
    ("messages", {"messages"}),
    ("openspatial", {"conversations", "filename", "bbox"}),
    ("llava", {"conversations"}),
    ("qa", {"question"}),
    ("vsr", {"caption", "label", "image"}),
)


def detect_format(record: dict[str, Any], source: str = "data") -> str:
    """The format name a record's keys imply, so configs may say `format: auto`."""
    keys = set(record)
    found = next((name for name, needed in _FORMAT_KEYS if needed <= keys), None)
    if found is not None:
        return found
    raise TheWorldUserError(
        f"{source}: cannot tell the data format from the first record's keys "
        f"{sorted(keys)}; pass format= one of {', '.join(FORMATS[1:])}"
    )


def record_format(format: str) -> RecordFormat:
    if format not in FORMATS:
        raise TheWorldUserError(f"unknown data format {format!r}; valid formats: {', '.join(FORMATS)}")
    module_name, name = _FORMATS[format].split(":")
    return getattr(importlib.import_module(f"theworld.data.{module_name}"), name)


def open_records(path_or_id: str) -> tuple[Any, str]:
    """The records of a data file (streamed) or Hub dataset, and the folder relative image paths start from."""
    path_or_id = str(path_or_id)
    if os.path.exists(path_or_id):
        if os.path.isdir(path_or_id):
            raise TheWorldUserError(f"{path_or_id} is a folder; give the JSON/JSONL data file")
        return iter_records(path_or_id), _folder_of(path_or_id)
    if looks_like_hub_id(path_or_id):
        logger.info("loading Hub dataset %s", path_or_id)
        return hub_rows(path_or_id), os.getcwd()
    raise TheWorldUserError(f"data file {path_or_id} does not exist (and is not a Hub dataset id owner/name)")


def load_samples(
    path_or_id: str,
    format: str = "auto",
    image_folder: str | None = None,
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
    limit: int | None = None,
    **options: Any,
) -> list[Sample]:
    """A data file or Hub dataset in one of `FORMATS` as validated samples, in memory (`options`: the format's)."""
    fmt = record_format(format) if format != "auto" else None
    records, default_folder = open_records(path_or_id)
    records = iter(records)
    first = next(records, None)
    if first is None:
        raise TheWorldUserError(f"{path_or_id} holds no records")
    records = itertools.chain([first], records)
    if fmt is None:
        format = detect_format(first, str(path_or_id))
        logger.info("%s: detected format %s", path_or_id, format)
        fmt = record_format(format)
    folder = image_folder if image_folder is not None else default_folder
    options.update(max_skip_fraction=max_skip_fraction, limit=limit)
    return fmt(records, source=str(path_or_id), image_folder=folder, **options)


def _folder_of(path: str) -> str:
    """The folder holding a data file: where its relative image paths point by default."""
    return os.path.dirname(os.path.abspath(path))

