"""Stages: exactly the intended parameters train, in a recorded order; the VAE never does unless asked."""

from __future__ import annotations

import pytest
import torch

from theworld.errors import TheWorldUserError
from theworld.model.modeling import TheWorld
from theworld.training.stages import (
    LoraSettings,
    apply_stage,
    cast_trainable_to_fp32,
    has_lora,
    merge_lora,
)

WORLD = ("world_projector.",)
LANGUAGE = ("model.language_model.", "lm_head.")
VISION = ("model.vision_tower.", "model.multi_modal_projector.")


@pytest.fixture
def load(tiny_gemma_dir, tiny_vae_dir, world_settings):
    def make(enable_world: bool = True, **kwargs):
        torch.manual_seed(0)
        extra = dict(cosmos_model_name=tiny_vae_dir, **world_settings) if enable_world else {}
        return TheWorld.from_pretrained(tiny_gemma_dir, enable_world=enable_world, dtype=torch.float32, **extra, **kwargs)

    return make


def _names(model, prefixes):
    return [n for n, _ in model.named_parameters() if n.startswith(prefixes)]


def test_align_trains_only_the_world_projector(load):
    model = load()
    names = apply_stage(model, "align")
    assert names == _names(model, WORLD) and names
    assert names == [n for n, p in model.named_parameters() if p.requires_grad]  # ordered as named_parameters
    assert not any(p.requires_grad for p in model.world_encoder.parameters())
    assert model.config.freeze_gemma_language and model.config.freeze_gemma_vision and model.config.freeze_cosmos_vae


def test_finetune_adds_the_language_model(load):
    model = load()
    names = apply_stage(model, "finetune")
    assert set(names) == set(_names(model, WORLD + LANGUAGE))
    assert "model.language_model.embed_tokens.weight" in names  # tied with lm_head: listed once
    assert not set(names) & set(_names(model, VISION))
    assert not any(p.requires_grad for p in model.world_encoder.parameters())


def test_full_adds_vision_but_keeps_the_vae_frozen_unless_asked(load):
    model = load()
    names = apply_stage(model, "full")
    assert set(names) == set(_names(model, WORLD + LANGUAGE + VISION))
    assert not any(p.requires_grad for p in model.world_encoder.parameters())
    with_vae = apply_stage(model, "full", train_cosmos_vae=True)
    assert set(with_vae) - set(names) == {n for n, _ in model.named_parameters() if n.startswith("world_encoder.")}
    assert not model.config.freeze_cosmos_vae
    with pytest.raises(TheWorldUserError, match="only allowed with stage full"):
        apply_stage(model, "finetune", train_cosmos_vae=True)


def test_lora_trains_adapters_on_the_language_model_only_and_merges_exactly(load, world_settings):
    model = load()
    names = apply_stage(model, "finetune", use_lora=True, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    lora = [n for n in names if ".lora_" in n]
    assert lora and all(n.startswith("model.language_model.") for n in lora)
    assert set(names) - set(lora) == set(_names(model, WORLD))
    assert not any(".lora_" in n for n in _names(model, VISION))  # SigLIP's q_proj untouched
    with torch.no_grad():  # LoRA B starts at zero: give it values so the merge has something to fold
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.eval()
    ids = torch.tensor([[2, 40, 41, 42, 43]])
    before = model(input_ids=ids).logits
    merged = merge_lora(model)
    assert not has_lora(model) and len(merged) == len(lora) // 2
    assert all(k in model.state_dict() for k in merged)
    torch.testing.assert_close(model(input_ids=ids).logits, before, atol=1e-5, rtol=1e-5)


def test_gemma_control_has_no_align_and_finetunes_the_language_model(load):
    model = load(enable_world=False)
    with pytest.raises(TheWorldUserError, match="enable_world=False"):
        apply_stage(model, "align")
    names = apply_stage(model, "finetune")
    assert set(names) == set(_names(model, LANGUAGE)) and names


def test_unknown_stage_and_lora_in_align_are_user_errors(load):
    model = load()
    with pytest.raises(TheWorldUserError, match="unknown stage 'warmup'"):
        apply_stage(model, "warmup")
    with pytest.raises(TheWorldUserError, match="use_lora needs stage finetune or full"):
        apply_stage(model, "align", use_lora=True)


def test_bf16_keeps_trainable_master_weights_in_fp32(tiny_gemma_dir, tiny_vae_dir, world_settings):
    model = TheWorld.from_pretrained(
        tiny_gemma_dir, cosmos_model_name=tiny_vae_dir, dtype=torch.bfloat16, **world_settings
    )
    apply_stage(model, "align")
    assert cast_trainable_to_fp32(model) > 0
    for name, param in model.named_parameters():
        expected = torch.float32 if param.requires_grad else torch.bfloat16
        assert param.dtype == expected, name
