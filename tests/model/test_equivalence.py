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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("enable_world", [False, True])
def test_logits_bit_identical_to_gemma(tiny_gemma_dir, tiny_vae_dir, world_settings, dtype, enable_world):
    gemma = Gemma3ForConditionalGeneration.from_pretrained(tiny_gemma_dir, dtype=dtype, attn_implementation="sdpa").eval()
    model = TheWorld.from_pretrained(
        tiny_gemma_dir, enable_world=enable_world, cosmos_model_name=tiny_vae_dir, dtype=dtype,
        attn_implementation="sdpa", **world_settings,
    ).eval()
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
