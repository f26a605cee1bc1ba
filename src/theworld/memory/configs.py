"""Model configs for memory estimates: a local checkpoint's config.json, or a known model written out here.

Nothing is downloaded. gemma-3-4b's config is written out below so its real numbers come out on a
machine without Hub access; its values (hidden 2560, intermediate 10240, 34 layers, 8 query / 4 KV
heads of 256, vocabulary 262,208, SigLIP-So400m at 896 px with 14 px patches, 256 image tokens)
give 4,300,079,472 parameters, the 4.3B of the model card (see benchmarks/gpu_stage1.py, which
uses the same config). The Cosmos-Predict2 VAE is the Wan 2.1 VAE: `AutoencoderKLWan()`'s defaults.
"""

from __future__ import annotations

import json
import os
from typing import Any

from theworld.errors import TheWorldUserError
from theworld.testing.gemma import GemmaSpec, gemma3_config, gemma3_layer_types

GEMMA3_4B = GemmaSpec(
    vocab_size=262_208, hidden_size=2560, intermediate_size=10_240, num_hidden_layers=34, num_attention_heads=8,
    num_key_value_heads=4, head_dim=256, sliding_window=1024, max_position_embeddings=131_072,
    layer_types=gemma3_layer_types(34), vision_hidden_size=1152, vision_intermediate_size=4304,
    vision_num_hidden_layers=27, vision_num_attention_heads=16, vision_image_size=896, vision_patch_size=14,
    mm_tokens_per_image=256,
)  # fmt: skip
GEMMA3_4B_TOKENS: dict[str, int] = dict(pad=0, eos=1, bos=2, boi=255_999, eoi=256_000, image=262_144)
GEMMA3_4B_ROPE = {
    "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
}
# `<unused0..2>`: placeholders (unverified ids); memory does not depend on them.
WORLD_MARKER_IDS: dict[str, int] = dict(start_of_world_token_id=6, world_token_id=7, end_of_world_token_id=8)

KNOWN_MODELS = ("google/gemma-3-4b-it", "google/gemma-3-4b-pt", "gemma-3-4b")
COSMOS_VAE_IDS = ("nvidia/Cosmos-Predict2-2B-Video2World", "nvidia/Cosmos-Predict2-14B-Video2World")


def gemma3_4b_config():
    """gemma-3-4b's `Gemma3Config`, built without a download."""
    return gemma3_config(GEMMA3_4B, **GEMMA3_4B_TOKENS, rope_parameters=GEMMA3_4B_ROPE)


def load_model_config(name_or_path: str, **world: Any):
    """A `TheWorldConfig` for a local checkpoint (Gemma 3, TheWorld or a TheWorld adapter folder) or a known id.

    `world` sets world fields (`world_image_size`, `world_tokens_per_frame`, ...); None values keep
    the checkpoint's own.
    """
    from theworld.model.configuration import TheWorldConfig

    world = {k: v for k, v in world.items() if v is not None}
    path = os.path.join(name_or_path, "config.json")
    if os.path.isdir(name_or_path):
        if not os.path.isfile(path):
            raise TheWorldUserError(f"--model {name_or_path}: no config.json in that folder")
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        model_type = data.get("model_type")
        if model_type == TheWorldConfig.model_type:
            config = TheWorldConfig.from_dict({**data, **world})
        elif model_type == "gemma3":
            config = TheWorldConfig.from_gemma_config(data, **world)
        else:
            raise TheWorldUserError(f"--model {name_or_path}: a {model_type!r} model; expected Gemma 3 or TheWorld")
    elif name_or_path in KNOWN_MODELS:
        config = TheWorldConfig.from_gemma_config(gemma3_4b_config(), **{**WORLD_MARKER_IDS, **world})
    else:
        raise TheWorldUserError(
            f"--model {name_or_path}: not a local folder and not a known model ({', '.join(KNOWN_MODELS)}); "
            "nothing is downloaded: give a folder holding the checkpoint's config.json"
        )
    for key, value in WORLD_MARKER_IDS.items():
        if getattr(config, key) is None:
            setattr(config, key, value)
    return config


def load_vae_config(name_or_path: str | None) -> dict[str, Any]:
    """The VAE's constructor arguments: a local VAE (`<dir>/vae/config.json` or `<dir>/config.json`), or the
    Cosmos-Predict2 VAE's (the Wan 2.1 defaults) for a known id or None."""
    if name_or_path is None or name_or_path in COSMOS_VAE_IDS:
        return {}
    for candidate in (os.path.join(name_or_path, "vae", "config.json"), os.path.join(name_or_path, "config.json")):
        if os.path.isfile(candidate):
            with open(candidate, encoding="utf-8") as handle:
                data = json.load(handle)
            keys = ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales", "temperal_downsample", "is_residual")
            return {k: data[k] for k in keys if k in data}
    raise TheWorldUserError(
        f"--cosmos {name_or_path}: no VAE config.json there and not a known id ({', '.join(COSMOS_VAE_IDS)})"
    )
