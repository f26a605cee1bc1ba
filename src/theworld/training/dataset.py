"""Training data for the Trainer: samples from `theworld.data.loading.load_samples`, as a map-style dataset.

Samples stay as `Sample`s (messages + image paths) until the collator builds them, so images are
decoded in the dataloader (workers when `dataloader_num_workers > 0`), not all up front. The
Trainer's seeded sampler then gives a data order that a resumed run reproduces.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch.utils.data import Dataset

from theworld.data.sample import Sample

logger = logging.getLogger(__name__)


class SampleDataset(Dataset):
    """A list of `Sample`s; `dataset[i]` is the i-th sample, unchanged."""

    def __init__(self, samples: Sequence[Sample], name: str = "train") -> None:
        self.samples = list(samples)
        self.name = name

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def count_with_visuals(self) -> int:
        return sum(1 for s in self.samples if s.visuals())


def load_dataset(
    path_or_id: str,
    *,
    format: str = "auto",
    image_folder: str | None = None,
    max_skip_fraction: float = 0.01,
    limit: int | None = None,
    name: str = "train",
) -> SampleDataset:
    """Read a data source with the shared loaders and wrap it; logs how many samples carry images."""
    from theworld.data.loading import load_samples

    samples = load_samples(
        path_or_id, format=format, image_folder=image_folder, max_skip_fraction=max_skip_fraction, limit=limit
    )
    dataset = SampleDataset(samples, name=name)
    logger.info(
        "%s data: %d samples from %s (%d with images or clips)", name, len(dataset), path_or_id, dataset.count_with_visuals()
    )
    return dataset
