"""Shared fixtures: tiny random checkpoints built once per test session, offline and seeded."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Training data is read into Arrow tables in the `datasets` cache: one per test session, removed after it.
_DATASETS_CACHE = tempfile.mkdtemp(prefix="theworld-test-datasets-")
os.environ.setdefault("HF_DATASETS_CACHE", _DATASETS_CACHE)
atexit.register(shutil.rmtree, _DATASETS_CACHE, ignore_errors=True)

import pytest
import torch

from theworld.testing.tiny import TINY_WORLD_SETTINGS, make_tiny_gemma, make_tiny_vae

# Tiny models are dominated by per-op overhead: one thread is 3-5x faster than two here
# (the tiny Wan VAE most of all), and leaves the second core to a parallel process.
# THEWORLD_TEST_THREADS runs the suite at another count (the thread-count matrix of docs/parity.md).
torch.set_num_threads(int(os.environ.get("THEWORLD_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory):
    """A tiny Gemma 3 checkpoint: weights, trained tokenizer, chat template, processor."""
    return str(make_tiny_gemma(tmp_path_factory.mktemp("tiny_gemma")))


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory):
    """A tiny Cosmos-style repo holding `vae/` (an `AutoencoderKLWan`)."""
    return str(make_tiny_vae(tmp_path_factory.mktemp("tiny_cosmos")))


@pytest.fixture(scope="session")
def world_settings():
    return dict(TINY_WORLD_SETTINGS)


@pytest.fixture(scope="session")
def tiny_world_dir(tmp_path_factory):
    """A tiny random Cosmos-Predict2 Video2World repo: vae/, transformer/, scheduler/, T5, model_index.json."""
    from theworld.testing.tiny_world_model import make_tiny_world_model

    return str(make_tiny_world_model(tmp_path_factory.mktemp("tiny_world")))
