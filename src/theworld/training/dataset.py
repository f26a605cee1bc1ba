"""Training data for the Trainer: records held on disk (Arrow, memory-mapped, so a ~30 GB file fits), a
`Sample` built when drawn."""

from __future__ import annotations

import json
import logging
import os
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from theworld.data.images import DEFAULT_MAX_SKIP_FRACTION, iter_converted
from theworld.data.loading import detect_format, open_records, record_format
from theworld.data.records import iter_records
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)

# Records per Arrow write: what the conversion holds at once (OpenSpatial records are ~1-2 KB).
WRITER_BATCH_SIZE = 256


def _encoded_records(path: str, stamp: str) -> Iterator[dict[str, str]]:
    """A data file's records as one JSON string column; `stamp` (size-mtime_ns) keys the cache to the file."""
    for record in iter_records(path):
        yield {"record": json.dumps(record, ensure_ascii=False)}


def _decode(row: dict[str, Any], encoded: bool) -> dict[str, Any]:
    return json.loads(row["record"]) if encoded else dict(row)


class SampleDataset(Dataset):
    """Samples of one data source, converted from their records as they are drawn; `dataset[i]` is a `Sample`."""

    def __init__(self, rows: Any, convert: Callable[[dict[str, Any], int], Sample], name: str = "train", encoded: bool = False) -> None:
        self.rows = rows  # a `datasets.Dataset` (or any sequence of records)
        self.convert = convert
        self.name = name
        self.encoded = encoded
        self.indices = np.arange(len(rows), dtype=np.int64)

    def record(self, index: int) -> dict[str, Any]:
        return _decode(self.rows[int(index)], self.encoded)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in order, read in batches."""
        return (_decode(row, self.encoded) for row in self.rows)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Sample:
        index = int(self.indices[position])
        return self.convert(self.record(index), index)

    @property
    def samples(self) -> SampleDataset:
        """The samples, in order (built as read: nothing is held)."""
        return self

    def keep(self, positions: Sequence[int]) -> None:
        """Keep only the samples at these positions."""
        self.indices = self.indices[np.asarray(positions, dtype=np.int64)]


def load_dataset(
    path_or_id: str,
    *,
    format: str = "auto",
    image_folder: str | None = None,
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
    limit: int | None = None,
    name: str = "train",
) -> SampleDataset:
    """A data file or Hub dataset as a `SampleDataset`, validated like `load_samples`, never held in memory."""
    fmt = record_format(format) if format != "auto" else None
    records, default_folder = open_records(path_or_id)
    if isinstance(records, Iterator):  # a local file: stream it into Arrow
        import datasets

        stat = os.stat(path_or_id)
        rows = datasets.Dataset.from_generator(
            _encoded_records,
            gen_kwargs={"path": os.path.abspath(path_or_id), "stamp": f"{stat.st_size}-{stat.st_mtime_ns}"},
            writer_batch_size=WRITER_BATCH_SIZE,
        )
        encoded = True
    else:
        rows, encoded = records, False
    if len(rows) == 0:
        raise TheWorldUserError(f"{path_or_id} holds no records")
    if fmt is None:
        format = detect_format(_decode(rows[0], encoded), path_or_id)
        logger.info("%s: detected format %s", path_or_id, format)
        fmt = record_format(format)
    folder = image_folder if image_folder is not None else default_folder
    dataset = SampleDataset(rows, fmt.converter(source=path_or_id, image_folder=folder), name=name, encoded=encoded)
    kept, with_visuals = array("q"), 0
    for index, sample in iter_converted(
        dataset.records(), dataset.convert, source=path_or_id, max_skip_fraction=max_skip_fraction, limit=limit
    ):
        kept.append(index)
        with_visuals += bool(sample.visuals())
    dataset.keep(kept)
    logger.info("%s data: %d samples from %s (%d with images or clips)", name, len(dataset), path_or_id, with_visuals)
    return dataset


def load_datasets(config: Any, eval_data: bool = True) -> tuple[SampleDataset, SampleDataset | None]:
    """A training config's `train_data` and (unless told otherwise) `eval_data`, as datasets."""
    found = []
    for split in ("train", "eval") if eval_data and config.eval_data else ("train",):
        found.append(
            load_dataset(
                getattr(config, f"{split}_data"),
                format=getattr(config, f"{split}_data_format"),
                image_folder=config.image_folder,
                max_skip_fraction=config.max_skip_fraction,
                limit=getattr(config, f"max_{split}_samples"),
                name=split,
            )
        )
    return found[0], found[1] if len(found) > 1 else None
