"""A tiny random Cosmos-Predict2 Video2World repo in diffusers' layout, and the test double of its guardrail.

`make_tiny_world_model(dir)` writes what `nvidia/Cosmos-Predict2-2B-Video2World` holds, at toy
sizes and seeded: `vae/` (the tiny `AutoencoderKLWan` of `make_tiny_vae`), `transformer/` (a
`CosmosTransformer3DModel` with the real model's layout: 16 latent channels + 1 condition-mask
channel in, (1, 2, 2) patches), `scheduler/` (`FlowMatchEulerDiscreteScheduler` with Karras
sigmas, as diffusers' Cosmos conversion script writes it), `text_encoder/` + `tokenizer/` (a tiny
random T5 encoder and a T5 tokenizer built here) and `model_index.json`. Both TheWorld's world-model
loader and `diffusers.Cosmos2VideoToWorldPipeline.from_pretrained` read it.

The real DiT concatenates a padding mask resized with torchvision, which does not import with this
machine's CPU torch, so the tiny DiT sets `concat_padding_mask=False` (everything else is the same
code path).

`TinyTestSafetyChecker` stands in for `cosmos_guardrail.CosmosSafetyChecker`, which downloads its
guard models at run time. It is a test double, named as such: it blocks only the texts it is told
to block and records what it was asked. TheWorld accepts it only for world models of test size
(`theworld.world_model.guardrail.TEST_DOUBLE_MAX_PARAMETERS`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from theworld.testing.tiny import TinyVAESpec, make_tiny_vae

logger = logging.getLogger(__name__)

# Words the tiny T5 tokenizer knows as whole pieces (anything else falls back to characters).
_T5_WORDS = (
    "a the of and with in on to is are no not video captures series frames showing ugly scenes static motion blur "
    "over saturation shaky footage low resolution grainy texture pixelated images poorly lit areas underexposed "
    "overexposed poor color balance washed out colors choppy sequences jerky movements frame rate artifacting "
    "banding unnatural transitions outdated special effects fake elements unconvincing visuals edited content jump "
    "cuts visual noise flickering overall quality ball balls bounces moves wall red blue square scene camera"
).split()


@dataclass
class TinyDiTSpec:
    """Sizes of the tiny `CosmosTransformer3DModel` (hidden = heads x head_dim)."""

    num_attention_heads: int = 2
    attention_head_dim: int = 16
    num_layers: int = 2
    mlp_ratio: float = 2.0
    adaln_lora_dim: int = 8
    max_size: tuple[int, int, int] = (16, 16, 16)
    """Latent (frames, height, width) the DiT can take, as in the real config's (128, 240, 240)."""
    extra_pos_embed_type: str | None = None
    """None as in Cosmos-Predict2-2B (rotary positions only); "learnable" adds learned ones."""
    rope_scale: tuple[float, float, float] = (1.0, 3.0, 3.0)
    seed: int = 0

    def transformer_config(self, text_embed_dim: int) -> dict[str, Any]:
        """`CosmosTransformer3DModel` keywords: the real Video2World layout at this size."""
        return dict(
            in_channels=16 + 1,  # 16 latent channels + the condition-mask channel
            out_channels=16,
            num_attention_heads=self.num_attention_heads,
            attention_head_dim=self.attention_head_dim,
            num_layers=self.num_layers,
            mlp_ratio=self.mlp_ratio,
            text_embed_dim=text_embed_dim,
            adaln_lora_dim=self.adaln_lora_dim,
            max_size=tuple(self.max_size),
            patch_size=(1, 2, 2),
            rope_scale=tuple(self.rope_scale),
            concat_padding_mask=False,  # the real one is True; resizing its mask needs torchvision
            extra_pos_embed_type=self.extra_pos_embed_type,
        )


@dataclass
class TinyT5Spec:
    d_model: int = 32
    d_kv: int = 8
    d_ff: int = 64
    num_layers: int = 1
    num_heads: int = 4
    seed: int = 0


@dataclass
class TinyWorldModelSpec:
    vae: TinyVAESpec = field(default_factory=TinyVAESpec)
    transformer: TinyDiTSpec = field(default_factory=TinyDiTSpec)
    text_encoder: TinyT5Spec = field(default_factory=TinyT5Spec)


class TinyTestSafetyChecker:
    """Test double of `cosmos_guardrail.CosmosSafetyChecker` for the tiny random world models only.

    It has the methods `Cosmos2VideoToWorldPipeline` calls (`check_text_safety`,
    `check_video_safety`, `to`). It blocks exactly the texts in `blocked` and records every text
    and video it was asked about, so tests can see that the guardrail ran and what it saw.
    """

    def __init__(self, blocked: tuple[str, ...] = ()) -> None:
        self.blocked = tuple(blocked)
        self.checked_texts: list[str] = []
        self.checked_videos = 0

    def check_text_safety(self, prompt: str) -> bool:
        self.checked_texts.append(prompt)
        return prompt not in self.blocked

    def check_video_safety(self, frames: np.ndarray) -> np.ndarray:
        self.checked_videos += 1
        return frames

    def to(self, *args: Any, **kwargs: Any) -> TinyTestSafetyChecker:
        return self


def build_t5_tokenizer():
    """A T5 tokenizer (Unigram, `</s>` appended) over a small fixed vocabulary, built offline.

    Whole pieces for the words of the default negative prompt and a few scene words; every other
    text splits into single characters, which are all in the vocabulary (no `<unk>` for ASCII).
    """
    from transformers import T5TokenizerFast

    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    seen = {piece for piece, _ in vocab}
    for word in _T5_WORDS:
        for piece in (f"▁{word}", word):
            if piece not in seen:
                seen.add(piece)
                vocab.append((piece, -4.0))
    for code in range(33, 127):
        for piece in (chr(code), f"▁{chr(code)}"):
            if piece not in seen:
                seen.add(piece)
                vocab.append((piece, -8.0))
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def make_tiny_world_model(output_dir: str | Path, spec: TinyWorldModelSpec | None = None) -> Path:
    """Write a tiny random Cosmos-Predict2 Video2World repo (diffusers layout) to `output_dir`."""
    from diffusers import CosmosTransformer3DModel, FlowMatchEulerDiscreteScheduler
    from transformers import T5Config, T5EncoderModel

    spec = spec or TinyWorldModelSpec()
    out = Path(output_dir)
    make_tiny_vae(out, spec.vae)

    tokenizer = build_t5_tokenizer()
    tokenizer.save_pretrained(out / "tokenizer")
    t5 = spec.text_encoder
    torch.manual_seed(t5.seed)
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer), d_model=t5.d_model, d_kv=t5.d_kv, d_ff=t5.d_ff,
            num_layers=t5.num_layers, num_heads=t5.num_heads, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    ).eval()  # fmt: skip
    text_encoder.save_pretrained(out / "text_encoder")

    torch.manual_seed(spec.transformer.seed)
    transformer = CosmosTransformer3DModel(**spec.transformer.transformer_config(text_embed_dim=t5.d_model))
    transformer.save_pretrained(out / "transformer")

    # As diffusers' Cosmos-Predict2 conversion writes it; the pipeline adds its EDM sigmas on load.
    FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True).save_pretrained(out / "scheduler")
    write_model_index(out)
    logger.info("Wrote tiny Cosmos-Predict2 Video2World repo to %s", out)
    return out


def write_model_index(out: Path) -> None:
    """`model_index.json` of a Cosmos2VideoToWorldPipeline repo. The safety checker is not stored:
    the pipeline builds `cosmos_guardrail.CosmosSafetyChecker` itself unless one is passed."""
    import diffusers

    index = {
        "_class_name": "Cosmos2VideoToWorldPipeline",
        "_diffusers_version": diffusers.__version__,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "CosmosTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
