"""Evaluation fixtures: a saved world-enabled TheWorld directory, shared by the harness, control and CLI tests."""

from __future__ import annotations

import pytest
import torch

from theworld import TheWorld, TheWorldProcessor


@pytest.fixture(scope="session")
def world_dir(tiny_gemma_dir, tiny_vae_dir, world_settings, tmp_path_factory):
    """The tiny TheWorld saved with its processor; non-zero temporal embeddings, as after training."""
    out = tmp_path_factory.mktemp("theworld_eval")
    model = TheWorld.from_pretrained(tiny_gemma_dir, cosmos_model_name=tiny_vae_dir, **world_settings)
    torch.manual_seed(1)
    with torch.no_grad():
        model.world_projector.temporal_embedding.normal_(0, 0.1)
    model.save_pretrained(out)
    TheWorldProcessor.from_model_config(tiny_gemma_dir, model.config).save_pretrained(out)
    return str(out)
