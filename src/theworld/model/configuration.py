"""`TheWorldConfig`: Gemma 3's config plus the world settings.

Everything Gemma 3 reads stays where Gemma 3 reads it, so a `TheWorldConfig` with the world off
builds exactly Gemma 3. The world fields describe the world encoder (the Cosmos-Predict2 VAE),
its token budget and the projector; the freeze flags record which parts were meant to train.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from transformers import Gemma3Config

DEFAULT_COSMOS_MODEL = "nvidia/Cosmos-Predict2-2B-Video2World"
PROJECTOR_TYPES = ("mlp", "linear")

# transformers 5 configs are (strict) dataclasses whose fields are annotated class attributes;
# transformers 4.57 configs take their fields as `__init__` keywords. Both are supported: the
# world fields and their defaults are listed once here, the class is built for the running version.
DATACLASS_CONFIGS = dataclasses.is_dataclass(Gemma3Config)
WORLD_DEFAULTS: dict[str, Any] = dict(
    enable_world=True,
    cosmos_model_name=None,
    world_num_frames=17,
    world_image_size=512,
    world_tokens_per_frame=256,
    world_latent_channels=16,
    world_spatial_compression=8,
    world_temporal_compression=4,
    world_projector_type="mlp",
    world_bidirectional=True,
    world_embed_rms=None,
    start_of_world_token_id=None,
    world_token_id=None,
    end_of_world_token_id=None,
    freeze_gemma_vision=True,
    freeze_gemma_language=True,
    freeze_cosmos_vae=True,
    base_model_name_or_path=None,
)


def add_legacy_rope_fields(config_dict: dict[str, Any]) -> dict[str, Any]:
    """Add transformers 4.x's rope fields to a serialised Gemma 3 config that has only 5.x's.

    transformers 5 writes `text_config.rope_parameters` (one entry per layer type); 4.57 ignores it
    and reads `rope_theta` (global layers), `rope_local_base_freq` (sliding layers) and
    `rope_scaling` (global layers), silently using its defaults when they are absent: a checkpoint
    with rope scaling (gemma-3-4b uses linear x8) would load with other positions. Writing both
    is safe: 5.x prefers `rope_parameters` when both are present. Changes `config_dict` in place.
    """
    text = config_dict.get("text_config")
    params = text.get("rope_parameters") if isinstance(text, dict) else None
    if not isinstance(params, dict):
        return config_dict
    full = params.get("full_attention", params)
    sliding = params.get("sliding_attention")
    if isinstance(full, dict) and "rope_theta" in full:
        text.setdefault("rope_theta", full["rope_theta"])
        scaling = {k: v for k, v in full.items() if k != "rope_theta"}
        text.setdefault("rope_scaling", None if scaling in ({}, {"rope_type": "default"}) else scaling)
    if isinstance(sliding, dict) and "rope_theta" in sliding:
        text.setdefault("rope_local_base_freq", sliding["rope_theta"])
    return config_dict


class _WorldConfigMixin:
    r"""Gemma 3 config with a world path.

    enable_world: build the world projector and accept world inputs. False gives plain Gemma 3.
    cosmos_model_name: hub id or directory of the world model (a repo with `vae/`, or a VAE dir).
    world_num_frames: the longest clip, in frames (4k+1), the world path accepts; sets the size of
        the learned temporal embedding table (1 + (frames - 1) // 4 latent frames).
    world_image_size: side of the square frames fed to the VAE (512 for Cosmos-Predict2).
    world_tokens_per_frame: world tokens per latent frame; a square whose root divides the latent
        side (world_image_size / 8). 512 px -> 64x64 latents -> 4x4 space-to-depth -> 256 tokens.
    world_latent_channels / world_spatial_compression / world_temporal_compression: the VAE's
        latent layout (16 channels, 8x space, 4x causal time for the Wan 2.1 VAE).
    world_projector_type: "mlp" (two layers, GELU) or "linear".
    world_bidirectional: world tokens attend to each other both ways, as Gemma's image tokens do.
    world_embed_rms: the RMS world tokens are projected to; set from Gemma's text embeddings when
        the world path is attached, so world tokens enter the LM at the scale text tokens do.
    start_of_world_token_id / world_token_id / end_of_world_token_id: tokenizer ids of the world
        block markers (Gemma's reserved `<unusedN>` tokens), resolved from the tokenizer.
    freeze_gemma_vision / freeze_gemma_language / freeze_cosmos_vae: what `from_pretrained` leaves
        trainable (a model built from the config trains everything until a stage or a load decides).
    base_model_name_or_path: the Gemma 3 checkpoint an adapter-only directory is applied to. Saved
        relative to the saved folder when it is a local folder ('../gemma'), so a run moved or copied
        together with its base still loads; a Hub id is saved as is.
    """

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """Save, writing `base_model_name_or_path` relative to `save_directory` when it is a local folder."""
        from theworld.model.checkpoints import portable_base_reference

        base = self.base_model_name_or_path
        self.base_model_name_or_path = portable_base_reference(base, save_directory)
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.base_model_name_or_path = base

    def validate_world(self) -> None:
        """Check the world settings; each error names the config key to fix."""
        if self.world_projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"world_projector_type={self.world_projector_type!r}: expected one of {PROJECTOR_TYPES}")
        if self.world_num_frames < 1 or (self.world_num_frames - 1) % self.world_temporal_compression:
            raise ValueError(
                f"world_num_frames={self.world_num_frames}: clips need "
                f"{self.world_temporal_compression}k+1 frames (1, 5, 9, 17, ...)"
            )
        if self.world_image_size % self.world_spatial_compression:
            raise ValueError(
                f"world_image_size={self.world_image_size} is not a multiple of the VAE's "
                f"spatial compression {self.world_spatial_compression}"
            )
        side = math.isqrt(self.world_tokens_per_frame)
        latent_side = self.world_image_size // self.world_spatial_compression
        if side * side != self.world_tokens_per_frame or side == 0 or latent_side % side:
            raise ValueError(
                f"world_tokens_per_frame={self.world_tokens_per_frame} must be a square whose root divides the "
                f"latent side {latent_side} (world_image_size={self.world_image_size} / {self.world_spatial_compression})"
            )

    @property
    def world_patch_size(self) -> int:
        """Space-to-depth factor turning the latent grid into `world_tokens_per_frame` tokens."""
        latent_side = self.world_image_size // self.world_spatial_compression
        return latent_side // math.isqrt(self.world_tokens_per_frame)

    @property
    def world_max_latent_frames(self) -> int:
        return 1 + (self.world_num_frames - 1) // self.world_temporal_compression

    def world_latent_frames(self, num_frames: int) -> int:
        """Latent frames of a clip of `num_frames` frames (the VAE's causal 4x compression)."""
        return 1 + (num_frames - 1) // self.world_temporal_compression

    def world_tokens_for_frames(self, num_frames: int) -> int:
        return self.world_latent_frames(num_frames) * self.world_tokens_per_frame

    def to_dict(self) -> dict[str, Any]:
        return add_legacy_rope_fields(super().to_dict())

    def to_diff_dict(self) -> dict[str, Any]:
        return add_legacy_rope_fields(super().to_diff_dict())

    @classmethod
    def from_gemma_config(cls, gemma_config: Gemma3Config | dict[str, Any], **world_kwargs: Any) -> TheWorldConfig:
        """Build from a plain Gemma 3 config, keeping every Gemma field and adding the world ones.

        The source's `model_type`/`architectures` are dropped: kept, they would make the saved
        config claim to be plain Gemma 3.
        """
        data = gemma_config.to_dict() if not isinstance(gemma_config, dict) else dict(gemma_config)
        for key in ("model_type", "architectures", "transformers_version", "auto_map"):
            data.pop(key, None)
        data.update({k: v for k, v in world_kwargs.items() if v is not None})
        return cls(**data)


if DATACLASS_CONFIGS:  # transformers 5
    from huggingface_hub.dataclasses import strict

    @strict
    class TheWorldConfig(_WorldConfigMixin, Gemma3Config):
        __doc__ = _WorldConfigMixin.__doc__
        model_type = "theworld"

        enable_world: bool = True
        cosmos_model_name: str | None = None
        world_num_frames: int = 17
        world_image_size: int = 512
        world_tokens_per_frame: int = 256
        world_latent_channels: int = 16
        world_spatial_compression: int = 8
        world_temporal_compression: int = 4
        world_projector_type: str = "mlp"
        world_bidirectional: bool = True
        world_embed_rms: float | None = None
        start_of_world_token_id: int | None = None
        world_token_id: int | None = None
        end_of_world_token_id: int | None = None
        freeze_gemma_vision: bool = True
        freeze_gemma_language: bool = True
        freeze_cosmos_vae: bool = True
        base_model_name_or_path: str | None = None

        def __post_init__(self, **kwargs: Any) -> None:
            super().__post_init__(**kwargs)
            self.validate_world()

else:  # transformers 4.x

    class TheWorldConfig(_WorldConfigMixin, Gemma3Config):  # type: ignore[no-redef]
        __doc__ = _WorldConfigMixin.__doc__
        model_type = "theworld"

        def __init__(self, **kwargs: Any) -> None:
            world = {key: kwargs.pop(key, default) for key, default in WORLD_DEFAULTS.items()}
            add_legacy_rope_fields(kwargs)  # a config written by transformers 5 has only `rope_parameters`
            super().__init__(**kwargs)
            for key, value in world.items():
                setattr(self, key, value)
            self.validate_world()
