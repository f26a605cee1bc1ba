"""World off, or no world inputs: logits bit-identical to Gemma 3 from the same checkpoint."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3ForConditionalGeneration, Gemma3Processor

from theworld import TheWorld

from theworld.testing.inputs import image_chat


def gemma_inputs(tiny_gemma_dir, batch: int = 1):
    processor = Gemma3Processor.from_pretrained(tiny_gemma_dir)
    chats = [image_chat(seed, question="Describe this scene " * (seed + 1)) for seed in range(batch)]
    return processor.apply_chat_template(
        chats, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True, padding=True
    )


FREEZE_NOTHING = dict(freeze_gemma_vision=False, freeze_gemma_language=False)


@pytest.mark.parametrize("trainability", ["frozen", "trainable"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("enable_world", [False, True])
def test_logits_bit_identical_to_gemma(tiny_gemma_dir, tiny_vae_dir, world_settings, dtype, enable_world, trainability):
    """Bit-identical to Gemma 3 in the same trainability state: TheWorld as loaded by default
    (Gemma frozen) against a frozen Gemma 3, and TheWorld with nothing frozen against Gemma 3 as
    loaded. The state matters: `torch.matmul` picks its kernel by whether the weight requires grad
    (Gemma's image projector takes mm or bmm), and on some CPUs those round differently."""
    gemma = Gemma3ForConditionalGeneration.from_pretrained(tiny_gemma_dir, dtype=dtype, attn_implementation="sdpa").eval()
    flags = FREEZE_NOTHING if trainability == "trainable" else {}
    model = TheWorld.from_pretrained(
        tiny_gemma_dir, enable_world=enable_world, cosmos_model_name=tiny_vae_dir, dtype=dtype,
        attn_implementation="sdpa", **world_settings, **flags,
    ).eval()  # fmt: skip
    if trainability == "frozen":
        gemma.requires_grad_(False)
        assert not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("world_"))
    else:
        assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("world_encoder."))
    inputs = gemma_inputs(tiny_gemma_dir, batch=2)
    assert "pixel_values" in inputs and int(inputs["token_type_ids"].sum()) > 0
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    with torch.no_grad():
        expected = gemma(**inputs).logits
        actual = model(**inputs).logits
    assert actual.dtype == expected.dtype == dtype
    assert (actual - expected).abs().max().item() == 0.0
    # The image really reaches the logits, so this equivalence covers the image path too.
    with torch.no_grad():
        no_image = gemma(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert (no_image - expected).abs().max().item() > 0


def test_trainability_mismatch_stays_within_stated_tolerance(tiny_gemma_dir):
    """Frozen TheWorld against a trainable Gemma 3 is not guaranteed bit-identical (the kernel
    choice above); docs/parity.md states the bound: 1e-5 absolute on fp32 logits (measured: 0 on
    AVX-512 Xeon and EPYC, 3.9e-7 with MKL restricted to AVX2)."""
    gemma = Gemma3ForConditionalGeneration.from_pretrained(tiny_gemma_dir, attn_implementation="sdpa").eval()
    model = TheWorld.from_pretrained(tiny_gemma_dir, enable_world=False, attn_implementation="sdpa").eval()
    assert gemma.model.multi_modal_projector.mm_input_projection_weight.requires_grad
    assert not model.model.multi_modal_projector.mm_input_projection_weight.requires_grad
    inputs = gemma_inputs(tiny_gemma_dir, batch=2)
    with torch.no_grad():
        diff = (model(**inputs).logits - gemma(**inputs).logits).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("enable_world", [False, True])
def test_greedy_generate_identical_to_gemma(tiny_gemma_dir, tiny_vae_dir, world_settings, gemma_model, enable_world):
    model = TheWorld.from_pretrained(
        tiny_gemma_dir, enable_world=enable_world, cosmos_model_name=tiny_vae_dir, **world_settings
    ).eval()
    inputs = gemma_inputs(tiny_gemma_dir)
    expected = gemma_model.generate(**inputs, max_new_tokens=8, do_sample=False)
    actual = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert torch.equal(actual, expected)


def test_world_off_has_no_world_modules(tiny_gemma_dir, gemma_model):
    model = TheWorld.from_pretrained(tiny_gemma_dir, enable_world=False)
    assert model.world_projector is None and model.world_encoder is None
    assert set(model.state_dict()) == set(gemma_model.state_dict())
