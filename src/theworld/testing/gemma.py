"""Gemma 3 configs of any size, built offline: one builder for the tiny test model, the benchmarks' random
models, the memory estimate's small models and gemma-3-4b itself (`theworld.memory.configs`).

The conventions every one of them needs (see /work/shared/notes/facts.md): `head_dim` and
`query_pre_attn_scalar` set, `layer_types` explicit, a SigLIP vision tower without its head, and
the image token ids inside the vocabulary (a tokenizer's, or fixed ones for random models).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GemmaSpec:
    """Sizes of a Gemma 3 (language model + SigLIP image path). The defaults are the tiny test model's:
    a forward in milliseconds."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    sliding_window: int = 256
    vision_hidden_size: int = 32
    vision_image_size: int = 32
    vision_patch_size: int = 8
    mm_tokens_per_image: int = 4
    vocab_size: int = 1024
    seed: int = 0
    layer_types: list[str] = field(default_factory=lambda: ["sliding_attention", "full_attention"])
    # None: the library's defaults (1e6 global, 1e4 sliding, no scaling). Set them to check that rope
    # settings survive a save/load (real gemma-3-4b scales its global layers linearly by 8).
    rope_theta: float | None = None
    rope_local_base_freq: float | None = None
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    vision_intermediate_size: int | None = None  # None: twice vision_hidden_size
    vision_num_hidden_layers: int = 1
    vision_num_attention_heads: int = 2


def gemma3_layer_types(num_layers: int, pattern: int = 6) -> list[str]:
    """Gemma 3's interleave: every `pattern`-th layer global, the rest sliding-window (with fewer layers, the last global)."""
    return ["full_attention" if (i + 1) % pattern == 0 or i + 1 == num_layers < pattern else "sliding_attention"
            for i in range(num_layers)]  # fmt: skip


def gemma3_config(spec: GemmaSpec, *, pad: int, bos: int, eos: int, boi: int, eoi: int, image: int, **text: object):
    """The `Gemma3Config` of `spec`, with these token ids; `text` adds language-model settings (e.g. `rope_parameters`)."""
    from transformers import Gemma3Config

    rope = {name: getattr(spec, name) for name in ("rope_theta", "rope_local_base_freq", "rope_scaling") if getattr(spec, name) is not None}
    text_config = dict(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads, head_dim=spec.head_dim, query_pre_attn_scalar=spec.head_dim,
        sliding_window=spec.sliding_window, layer_types=list(spec.layer_types),
        max_position_embeddings=spec.max_position_embeddings, **rope, **text, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos,
    )  # fmt: skip
    vision = dict(
        model_type="siglip_vision_model", hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_intermediate_size or 2 * spec.vision_hidden_size,
        num_hidden_layers=spec.vision_num_hidden_layers, num_attention_heads=spec.vision_num_attention_heads,
        image_size=spec.vision_image_size, patch_size=spec.vision_patch_size, vision_use_head=False,
    )  # fmt: skip
    return Gemma3Config(
        text_config=text_config, vision_config=vision, mm_tokens_per_image=spec.mm_tokens_per_image,
        boi_token_index=boi, eoi_token_index=eoi, image_token_index=image, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos,
    )  # fmt: skip
