"""Under the running transformers version: TheWorld without world inputs is Gemma 3, bit for bit.

Runs under 4.57 and 5.x alike (`make test-compat` runs it in `.venv-457`), on a tiny checkpoint
written by the running version with non-default rope settings, in fp32.
"""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3ForConditionalGeneration, Gemma3Processor

from theworld import TheWorld, TheWorldProcessor
from theworld.evaluation.harness import count_world_usage
from theworld.testing.inputs import clip_chat, image_chat
from theworld.testing.tiny import TINY_WORLD_SETTINGS

TEXT_CHAT = [{"role": "user", "content": [{"type": "text", "text": "Which way is the ball moving?"}]}]
COMMON = dict(tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True)


@pytest.fixture(scope="module")
def gemma_inputs(rope_gemma_dir):
    processor = Gemma3Processor.from_pretrained(rope_gemma_dir)
    return {
        "text": processor.apply_chat_template(TEXT_CHAT, **COMMON),
        "image": processor.apply_chat_template([image_chat(1), image_chat(2, question="Describe this scene.")], padding=True, **COMMON),
    }


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    from theworld.testing.tiny import make_tiny_vae

    return str(make_tiny_vae(tmp_path_factory.mktemp("compat_vae")))


def _load(rope_gemma_dir, tiny_vae, enable_world, attn):
    return TheWorld.from_pretrained(
        rope_gemma_dir, enable_world=enable_world, cosmos_model_name=tiny_vae if enable_world else None,
        dtype=torch.float32, attn_implementation=attn, **(TINY_WORLD_SETTINGS if enable_world else {}),
    ).eval()  # fmt: skip


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("enable_world", [False, True], ids=["world_off", "world_on_no_block"])
def test_logits_bit_identical_to_gemma(rope_gemma_dir, tiny_vae, gemma_inputs, enable_world, attn):
    gemma = Gemma3ForConditionalGeneration.from_pretrained(rope_gemma_dir, dtype=torch.float32, attn_implementation=attn).eval()
    # Same trainability as TheWorld's default load (Gemma frozen): matmul picks kernels by requires_grad.
    gemma.requires_grad_(False)
    model = _load(rope_gemma_dir, tiny_vae, enable_world, attn)
    assert (model.world_projector is not None) == enable_world
    for kind, inputs in gemma_inputs.items():
        with torch.no_grad():
            expected = gemma(**inputs).logits
            actual = model(**inputs).logits
        assert actual.dtype == torch.float32
        assert torch.equal(actual, expected), f"{kind}: max |diff| {(actual - expected).abs().max().item()}"


def test_image_reaches_the_logits(rope_gemma_dir, gemma_inputs):
    """So that the equivalence above covers the vision tower and projector, not just the text path."""
    gemma = Gemma3ForConditionalGeneration.from_pretrained(rope_gemma_dir, dtype=torch.float32, attn_implementation="eager").eval()
    inputs = gemma_inputs["image"]
    with torch.no_grad():
        with_image = gemma(**inputs).logits
        other_pixels = gemma(**{**inputs, "pixel_values": inputs["pixel_values"].flip(-1)}).logits
    assert (with_image - other_pixels).abs().max().item() > 1e-4


def test_generate_identical_to_gemma(rope_gemma_dir, tiny_vae, gemma_inputs):
    gemma = Gemma3ForConditionalGeneration.from_pretrained(rope_gemma_dir, dtype=torch.float32, attn_implementation="eager").eval()
    model = _load(rope_gemma_dir, tiny_vae, True, "eager")
    inputs = {k: v[:1] for k, v in gemma_inputs["image"].items()}
    expected = gemma.generate(**inputs, max_new_tokens=6, do_sample=False)
    actual = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(actual, expected)


def test_world_generate_feeds_the_world_block_at_prefill(rope_gemma_dir, tiny_vae):
    """The world path under this version: world inputs go in at prefill (and only then) and change the logits."""
    model = _load(rope_gemma_dir, tiny_vae, True, "eager")
    processor = TheWorldProcessor.from_model_config(rope_gemma_dir, model.config)
    inputs = processor.apply_chat_template(clip_chat(5, frames=5), **COMMON)
    assert inputs["world_pixel_values"].shape == (1, 3, 5, 64, 64)
    with count_world_usage(model) as usage:
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
    assert usage.world_forward_count == 1
    with torch.no_grad():
        with_world = model(**inputs).logits
        other_world = model(**{**inputs, "world_pixel_values": -inputs["world_pixel_values"]}).logits
    assert (with_world - other_world).abs().max().item() > 1e-4
