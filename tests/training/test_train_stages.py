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


def test_vision_adds_the_vision_side_and_keeps_the_language_model_frozen(load):
    model = load()
    names = apply_stage(model, "vision")
    assert set(names) == set(_names(model, WORLD + VISION))
    assert names == [n for n, p in model.named_parameters() if p.requires_grad]  # ordered as named_parameters
    assert not any(p.requires_grad for p in model.world_encoder.parameters())
    assert model.config.freeze_gemma_language and not model.config.freeze_gemma_vision
    assert model.config.freeze_cosmos_vae
    with pytest.raises(TheWorldUserError, match="stage vision trains no language model"):
        apply_stage(model, "vision", use_lora=True)
    with pytest.raises(TheWorldUserError, match="only allowed with stage full"):
        apply_stage(model, "vision", train_cosmos_vae=True)
    control = load(enable_world=False)
    assert set(apply_stage(control, "vision")) == set(_names(control, VISION))  # the Gemma control: vision alone


def test_vision_stage_step_reaches_exactly_its_trainable_set(load, tiny_gemma_dir, train_data_file):
    """One real step (images and world pixels through the VAE): every tensor of the stage gets a gradient and
    moves; every other tensor gets none and stays bit-identical."""
    from theworld.data.loading import load_samples
    from theworld.processing.processor import TheWorldProcessor
    from theworld.training.collator import TheWorldCollator
    from theworld.training.loss import supervised_lm_loss

    model = load()
    trainable = set(apply_stage(model, "vision"))
    samples = [s for s in load_samples(train_data_file) if s.visuals()][:3]
    batch = TheWorldCollator(TheWorldProcessor.from_model_config(tiny_gemma_dir, model.config))(samples)
    assert batch.get("pixel_values") is not None and batch.get("world_pixel_values") is not None
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    before.update({f"buffer:{n}": b.clone() for n, b in model.named_buffers()})

    model.train()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    supervised_lm_loss(model, inputs, batch["labels"])[0].backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert all(float(p.grad.abs().sum()) > 0 for n, p in model.named_parameters() if n in trainable), [
        n for n, p in model.named_parameters() if n in trainable and float(p.grad.abs().sum()) == 0
    ]
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3).step()

    after = dict(model.named_parameters())
    changed = {n for n in after if not torch.equal(after[n].detach(), before[n])}
    assert changed == trainable
    assert all(torch.equal(b, before[f"buffer:{n}"]) for n, b in model.named_buffers())
    assert any(n.startswith("model.vision_tower.") for n in changed)
    assert any(n.startswith("model.multi_modal_projector.") for n in changed)


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
