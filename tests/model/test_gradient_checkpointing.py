"""Gradient checkpointing makes inputs require grad (transformers' `enable_input_require_grads`),
but not those of a vision tower with nothing to train: autograd would record the frozen SigLIP
forward and the backward would recompute and differentiate all of it for nothing."""

from __future__ import annotations

import pytest
import torch

from theworld import TheWorld
from theworld.training.stages import apply_stage


def vision_output_requires_grad(model: TheWorld) -> bool:
    size = model.config.vision_config.image_size
    return model.model.vision_tower(pixel_values=torch.randn(1, 3, size, size)).last_hidden_state.requires_grad


@pytest.mark.parametrize("stage, vision_hooked", [("align", False), ("finetune", False), ("vision", True)])
def test_checkpointing_hooks_siglip_only_when_it_trains(tiny_gemma_dir, world_settings, stage, vision_hooked):
    model = TheWorld.from_pretrained(tiny_gemma_dir, **world_settings)
    apply_stage(model, stage)
    model.activation_checkpointing_enable({"use_reentrant": False})
    ids = torch.tensor([[2, 10, 11]])
    assert model.get_input_embeddings()(ids).requires_grad  # the text path keeps Gemma's hook
    assert vision_output_requires_grad(model) is vision_hooked
    if stage == "align":  # nothing of Gemma trains: what requires grad above came from the hooks
        model.disable_input_require_grads()
        assert not model.get_input_embeddings()(ids).requires_grad


def test_a_frozen_siglip_is_hooked_by_plain_gemma(tiny_gemma_dir, world_settings):
    """What the override removes: transformers' own hook on SigLIP, which a stage cannot undo."""
    model = TheWorld.from_pretrained(tiny_gemma_dir, **world_settings)
    apply_stage(model, "align")
    super(TheWorld, model).enable_input_require_grads()
    assert vision_output_requires_grad(model)
