"""Clips and set-up helpers for the world-model tests (tiny random world model, test-double guardrail)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from theworld.processing.processor import Clip, world_pixels
from theworld.testing.tiny_world_model import TinyTestSafetyChecker
from theworld.world_model import RolloutSettings, WorldModel

SIZE = 32  # pixels: 4x4 latents, 2x2 DiT patches
SEQ = 16  # T5 tokens (the pipeline's default is 512; both sides get the same value)


def random_clip(seed: int, frames: int, size: int = SIZE) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(frames)]


def pixels_of(clips: list[list[Image.Image]], size: int = SIZE) -> torch.Tensor:
    """TheWorld's own world pixels (processing.processor.world_pixels), batched: (B, 3, T, S, S)."""
    arrays = [world_pixels(Clip(frames), size, max_frames=len(frames)) for frames in clips]
    return torch.from_numpy(np.stack(arrays))


def settings(**values) -> RolloutSettings:
    base = dict(frames=2, steps=4, guidance=1.0, seed=0, max_sequence_length=SEQ)
    base.update(values)
    return RolloutSettings(**base)


def set_up(folder: str, rollout: RolloutSettings, checker: TinyTestSafetyChecker | None = None, **kwargs) -> WorldModel:
    return WorldModel.from_pretrained(folder, rollout, safety_checker=checker or TinyTestSafetyChecker(), **kwargs)


@pytest.fixture(scope="module")
def world(tiny_world_dir) -> WorldModel:
    return set_up(tiny_world_dir, settings())
