"""Tiny random Gemma 3 models for the parity tests (built from configs: no download, CPU, ms).

Config traps (see /work/shared/notes/facts.md): `layer_types`, `head_dim` and
`query_pre_attn_scalar` set explicitly; `mm_tokens_per_image` a square whose root divides
image_size / patch_size; `sliding_window >= mm_tokens_per_image`; the projector weight that
Gemma 3 zero-initialises is given small random values so that the image reaches the logits.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    SiglipVisionConfig,
)

VOCAB = 64
IMAGE_TOKEN, BOI_TOKEN, EOI_TOKEN = 60, 61, 62
MM_TOKENS = 4


def text_config(vocab_size: int = VOCAB) -> Gemma3TextConfig:
    return Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=128,
        pad_token_id=0,
        attn_implementation="eager",
    )


def causal_lm(seed: int = 0, vocab_size: int = VOCAB) -> Gemma3ForCausalLM:
    torch.manual_seed(seed)
    return Gemma3ForCausalLM(text_config(vocab_size)).eval()


def conditional(seed: int = 0) -> Gemma3ForConditionalGeneration:
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    config = Gemma3Config(
        text_config=text_config().to_dict(),
        vision_config=vision.to_dict(),
        mm_tokens_per_image=MM_TOKENS,
        image_token_index=IMAGE_TOKEN,
        boi_token_index=BOI_TOKEN,
        eoi_token_index=EOI_TOKEN,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        weight = model.model.multi_modal_projector.mm_input_projection_weight
        weight.copy_(torch.randn_like(weight) * 0.2)
    return model


@pytest.fixture(scope="module")
def tiny_lm() -> Gemma3ForCausalLM:
    return causal_lm()


@pytest.fixture
def lm_pair(tiny_lm) -> tuple[Gemma3ForCausalLM, Gemma3ForCausalLM]:
    """The reference tiny model and an independent deep copy to damage."""
    return tiny_lm, copy.deepcopy(tiny_lm)


@pytest.fixture
def text_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(1, IMAGE_TOKEN, (2, 12), generator=generator)}


@pytest.fixture
def image_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    text = torch.randint(1, IMAGE_TOKEN, (1, 6), generator=generator)
    ids = torch.cat(
        [text[:, :3], torch.tensor([[BOI_TOKEN] + [IMAGE_TOKEN] * MM_TOKENS + [EOI_TOKEN]]), text[:, 3:]], dim=1
    )
    token_type_ids = (ids == IMAGE_TOKEN).long()
    pixel_values = torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1
    return {"input_ids": ids, "token_type_ids": token_type_ids, "pixel_values": pixel_values}
