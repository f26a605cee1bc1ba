"""Models and inputs shared by the model tests (module-scoped: each load costs about a second)."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3ForConditionalGeneration

from theworld import TheWorld, TheWorldProcessor


@pytest.fixture(scope="module")
def world_model(tiny_gemma_dir, tiny_vae_dir, world_settings):
    model = TheWorld.from_pretrained(tiny_gemma_dir, cosmos_model_name=tiny_vae_dir, **world_settings).eval()
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking projector: temporal embeddings non-zero
        model.world_projector.temporal_embedding.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def gemma_model(tiny_gemma_dir):
    return Gemma3ForConditionalGeneration.from_pretrained(tiny_gemma_dir).eval()


@pytest.fixture(scope="module")
def processor(tiny_gemma_dir, world_model):
    return TheWorldProcessor.from_model_config(tiny_gemma_dir, world_model.config)

