"""Saving and loading: full directories, Auto classes, adapters, and initialisation on load."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from theworld import TheWorld, TheWorldConfig, TheWorldProcessor
from theworld.errors import TheWorldUserError
from theworld.testing.inputs import clip_chat


@pytest.fixture(scope="module")
def clip_inputs(processor):
    return processor.apply_chat_template(clip_chat(7, frames=5), tokenize=True, return_dict=True, return_tensors="pt")


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_save_then_load_reproduces_world_logits(world_model, processor, clip_inputs, tmp_path):
    world_model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert any(k.startswith("world_projector.") for k in keys)
    assert not any("world_encoder" in k or "decoder" in k for k in keys)  # the VAE is saved on its own
    assert os.path.isfile(tmp_path / "world_encoder" / "config.json")

    reloaded = TheWorld.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(reloaded, clip_inputs), logits(world_model, clip_inputs))

    auto_model = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert type(auto_model) is TheWorld
    assert torch.equal(logits(auto_model, clip_inputs), logits(world_model, clip_inputs))
    assert isinstance(AutoConfig.from_pretrained(tmp_path), TheWorldConfig)
    auto_processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(auto_processor, TheWorldProcessor)
    assert auto_processor.world_tokens_per_frame == processor.world_tokens_per_frame == 16
    assert auto_processor.world_image_size == 64


def test_loading_from_gemma_initialises_world_modules(tiny_gemma_dir, tiny_vae_dir, world_settings, gemma_model):
    """transformers 5 loads on meta: every world tensor must come from _init_weights, not garbage."""
    model = TheWorld.from_pretrained(tiny_gemma_dir, cosmos_model_name=tiny_vae_dir, **world_settings)
    projector = model.world_projector
    assert torch.count_nonzero(projector.temporal_embedding) == 0
    for layer in (projector.proj[0], projector.proj[2]):
        assert torch.isfinite(layer.weight).all() and 0.01 < layer.weight.std() < 0.03  # initializer_range 0.02
        assert torch.count_nonzero(layer.bias) == 0
    embed = gemma_model.get_input_embeddings()
    expected_rms = float(embed.weight.detach().pow(2).mean().sqrt() * embed.embed_scale)
    assert projector.output_scale.item() == pytest.approx(expected_rms, rel=1e-6)
    assert model.config.world_embed_rms == pytest.approx(expected_rms, rel=1e-6)
    # Every Gemma weight arrived under its renamed key (a new model_type gets no renaming by default).
    gemma_state = gemma_model.state_dict()
    for name, value in model.state_dict().items():
        if name in gemma_state:
            assert torch.equal(value, gemma_state[name]), name
    # World tokens come out at the RMS of the text embeddings.
    with torch.no_grad():
        tokens = projector(torch.randn(2, 16, 3, 8, 8))
    assert tokens.shape == (2, 3 * 16, 64)
    assert tokens.pow(2).mean(-1).sqrt().mean().item() == pytest.approx(expected_rms, rel=1e-3)


def test_direct_build_matches_init_rules(world_model):
    model = TheWorld(world_model.config)
    assert torch.count_nonzero(model.world_projector.temporal_embedding) == 0
    assert model.world_projector.output_scale.item() == pytest.approx(world_model.config.world_embed_rms)
    for buffer_name, buffer in model.named_buffers():
        assert torch.isfinite(buffer).all() and buffer.abs().max() < 1e10, buffer_name


def test_world_adapter_roundtrip_and_strictness(world_model, clip_inputs, tiny_gemma_dir, tmp_path):
    world_model.config.base_model_name_or_path = tiny_gemma_dir
    adapter_file = world_model.save_world_adapter(tmp_path / "adapter")
    keys = set(load_file(str(adapter_file)))
    assert keys == {n for n, _ in world_model.world_projector.named_parameters(prefix="world_projector")}
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    loaded = TheWorld.from_pretrained(tmp_path / "adapter").eval()
    assert torch.equal(logits(loaded, clip_inputs), logits(world_model, clip_inputs))

    bad = {k: v for k, v in load_file(str(adapter_file)).items() if "temporal" not in k}
    bad["world_projector.extra.weight"] = torch.zeros(2)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(TheWorldUserError) as err:
        loaded.load_world_adapter(tmp_path / "bad.safetensors")
    assert "world_projector.extra.weight" in str(err.value) and "world_projector.temporal_embedding" in str(err.value)


def test_saved_config_is_theworld_not_gemma(world_model, tmp_path):
    world_model.config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "theworld" and data["world_token_id"] == world_model.config.world_token_id


def test_bare_import_registers_auto_classes(world_model, tmp_path):
    """`import theworld` alone (nothing else touched) makes the Auto classes load a TheWorld dir."""
    import subprocess
    import sys

    world_model.save_pretrained(tmp_path)
    code = (
        "import theworld\n"
        "from transformers import AutoModelForImageTextToText\n"
        f"model = AutoModelForImageTextToText.from_pretrained({str(tmp_path)!r})\n"
        "print(type(model).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "TheWorld"
