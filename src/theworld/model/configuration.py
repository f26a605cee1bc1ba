"""`TheWorldConfig`: Gemma 3's config plus the world settings; with the world off it builds exactly Gemma 3."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from transformers import Gemma3Config

PROJECTOR_TYPES = ("mlp", "linear")

# transformers 5 configs are (strict) dataclasses whose fields are annotated class attributes;
# transformers 4.57 configs take their fields as `__init__` keywords. One class body serves both:
# its annotated world fields are the dataclass fields under 5.x and the `__init__` defaults under 4.x.
DATACLASS_CONFIGS = dataclasses.is_dataclass(Gemma3Config)
# World rollouts (docs/rollout.md): the world model's DiT imagines `world_rollout_frames` latent
# frames after the observed ones. 0 (the default) is today's world path, unchanged.
ROLLOUT_SETTINGS = (
    "world_rollout_frames",
    "world_rollout_steps",
    "world_rollout_guidance",
    "world_rollout_seed",
    "world_rollout_prompt",
    "world_rollout_negative_prompt",
    "world_rollout_max_sequence_length",
)
# The world settings a user chooses: `from_pretrained` keywords, `theworld params` flags and the
# training config's keys. The other world fields are the VAE's layout or derived when loading.
WORLD_SETTINGS = (
    "enable_world",
    "cosmos_model_name",
    "world_num_frames",
    "world_image_size",
    "world_tokens_per_frame",
    "world_projector_type",
    "world_bidirectional",
    *ROLLOUT_SETTINGS,
)
# What `from_pretrained` leaves trainable; a training stage records what it trained in the same flags.
FREEZE_FLAGS = ("freeze_gemma_vision", "freeze_gemma_language", "freeze_cosmos_vae")


@dataclasses.dataclass(frozen=True)
class WorldGeometry:
    """The world path's shapes, computed here and nowhere else: frames (4k+1) -> 1 + (frames - 1) // 4 latent
    frames; image_size / 8 = latent_side; latent_side / patch_size = sqrt(tokens_per_frame) tokens a side."""

    image_size: int = 512
    tokens_per_frame: int = 256
    num_frames: int = 17
    temporal_compression: int = 4
    spatial_compression: int = 8
    rollout_frames: int = 0
    """K imagined latent frames the world model adds after each item's observed ones (0 = none)."""

    def check(self) -> None:
        """Raise ValueError naming the config key when the shapes do not fit together."""
        if self.num_frames < 1 or (self.num_frames - 1) % self.temporal_compression:
            raise ValueError(
                f"world_num_frames={self.num_frames}: clips need {self.temporal_compression}k+1 frames (1, 5, 9, 17, ...)"
            )
        if self.rollout_frames < 0:
            raise ValueError(f"world_rollout_frames={self.rollout_frames} must be >= 0 (0 = no rollout)")
        if self.image_size % self.spatial_compression:
            raise ValueError(
                f"world_image_size={self.image_size} is not a multiple of the VAE's spatial compression {self.spatial_compression}"
            )
        side = math.isqrt(self.tokens_per_frame)
        if side * side != self.tokens_per_frame or side == 0 or self.latent_side % side:
            raise ValueError(
                f"world_tokens_per_frame={self.tokens_per_frame} must be a square whose root divides the latent side "
                f"{self.latent_side} (world_image_size={self.image_size} / {self.spatial_compression})"
            )

    @property
    def latent_side(self) -> int:
        return self.image_size // self.spatial_compression

    @property
    def patch_size(self) -> int:
        """Space-to-depth factor turning the latent grid into `tokens_per_frame` tokens."""
        return self.latent_side // math.isqrt(self.tokens_per_frame)

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a clip of `frames` frames (the VAE's causal time compression)."""
        return 1 + (frames - 1) // self.temporal_compression

    def tokens_for_frames(self, frames: int) -> int:
        """World placeholders for one image (frames=1) or clip: (latent frames + K imagined) x tokens per frame."""
        return (self.latent_frames(frames) + self.rollout_frames) * self.tokens_per_frame

    def frames_problem(self, frames: int) -> str | None:
        """Why the world path cannot take a clip of `frames` frames, or None."""
        if frames < 1 or (frames - 1) % self.temporal_compression or frames > self.num_frames:
            return (
                f"a clip has {frames} frames: world clips need {self.temporal_compression}k+1 frames (1, 5, 9, ...) "
                f"and at most world_num_frames={self.num_frames}"
            )
        return None


def add_legacy_rope_fields(config_dict: dict[str, Any]) -> dict[str, Any]:
    """Add 4.x's rope fields beside 5.x's `rope_parameters`, in place: 4.57 would silently use its defaults."""
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


def _strict(cls: type) -> type:
    """huggingface_hub's `strict` (type-checked fields) under transformers 5, as Gemma3Config has it."""
    if not DATACLASS_CONFIGS:
        return cls
    from huggingface_hub.dataclasses import strict

    return strict(cls)


@_strict
class TheWorldConfig(Gemma3Config):
    r"""Gemma 3 config with a world path.

    enable_world: build the world projector and accept world inputs. False gives plain Gemma 3.
    cosmos_model_name: hub id or directory of the world model (a repo with `vae/`, or a VAE dir).
    world_num_frames: the longest clip (4k+1 frames) accepted; sizes the temporal embedding table.
    world_image_size: side of the square frames fed to the VAE (512 for Cosmos-Predict2).
    world_tokens_per_frame: world tokens per latent frame, a square whose root divides world_image_size / 8.
    world_latent_channels / world_spatial_compression / world_temporal_compression: the VAE's latent layout.
    world_projector_type: "mlp" (two layers, GELU) or "linear".
    world_bidirectional: world tokens attend to each other both ways, as Gemma's image tokens do.
    world_rollout_frames: K latent frames the world model's DiT imagines after each item's observed ones
        (0, the default: no world model, no rollout parameters); world_rollout_*: its sampler settings,
        as `Cosmos2VideoToWorldPipeline.__call__` names them (docs/rollout.md).
    world_embed_rms: the RMS world tokens are projected to (that of Gemma's text embeddings).
    start_of_world_token_id / world_token_id / end_of_world_token_id: the world block markers' ids.
    freeze_gemma_vision / freeze_gemma_language / freeze_cosmos_vae: what `from_pretrained` leaves trainable.
    base_model_name_or_path: the Gemma 3 checkpoint an adapter directory applies to (saved relative when local).
    """

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
    world_rollout_frames: int = 0
    world_rollout_steps: int = 35
    world_rollout_guidance: float = 7.0
    world_rollout_seed: int = 0
    world_rollout_prompt: str = ""
    world_rollout_negative_prompt: str | None = None
    world_rollout_max_sequence_length: int = 512
    world_embed_rms: float | None = None
    start_of_world_token_id: int | None = None
    world_token_id: int | None = None
    end_of_world_token_id: int | None = None
    freeze_gemma_vision: bool = True
    freeze_gemma_language: bool = True
    freeze_cosmos_vae: bool = True
    base_model_name_or_path: str | None = None

    if DATACLASS_CONFIGS:  # transformers 5

        def __post_init__(self, **kwargs: Any) -> None:
            super().__post_init__(**kwargs)
            self.validate_world()

    else:  # transformers 4.x: the class attributes above are the defaults

        def __init__(self, **kwargs: Any) -> None:
            world = {key: kwargs.pop(key, default) for key, default in WORLD_DEFAULTS.items()}
            add_legacy_rope_fields(kwargs)  # a config written by transformers 5 has only `rope_parameters`
            super().__init__(**kwargs)
            for key, value in world.items():
                setattr(self, key, value)
            self.validate_world()

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """Save, writing `base_model_name_or_path` relative to `save_directory` when it is a local folder."""
        from theworld.model.checkpoints import portable_base_reference

        base = self.base_model_name_or_path
        self.base_model_name_or_path = portable_base_reference(base, save_directory)
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.base_model_name_or_path = base

    @property
    def world_geometry(self) -> WorldGeometry:
        return WorldGeometry(
            self.world_image_size, self.world_tokens_per_frame, self.world_num_frames, self.world_temporal_compression,
            self.world_spatial_compression, self.world_rollout_frames,
        )  # fmt: skip

    def validate_world(self) -> None:
        """Check the world settings; each error names the config key to fix."""
        if self.world_projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"world_projector_type={self.world_projector_type!r}: expected one of {PROJECTOR_TYPES}")
        self.world_geometry.check()
        if self.world_rollout_frames:
            self.world_rollout_settings()  # raises naming the world_rollout_* key

    def world_rollout_settings(self):
        """The `RolloutSettings` of this config's world_rollout_* fields (K > 0 only)."""
        from theworld.errors import TheWorldUserError
        from theworld.world_model.settings import RolloutSettings

        try:
            return RolloutSettings(
                frames=self.world_rollout_frames,
                steps=self.world_rollout_steps,
                guidance=float(self.world_rollout_guidance),
                seed=self.world_rollout_seed,
                prompt=self.world_rollout_prompt,
                negative_prompt=self.world_rollout_negative_prompt,
                max_sequence_length=self.world_rollout_max_sequence_length,
            )
        except TheWorldUserError as err:
            raise ValueError(str(err).replace("rollout setting ", "world_rollout_")) from err

    @property
    def world_patch_size(self) -> int:
        return self.world_geometry.patch_size

    @property
    def world_max_latent_frames(self) -> int:
        return self.world_geometry.latent_frames(self.world_num_frames)

    def world_latent_frames(self, num_frames: int) -> int:
        return self.world_geometry.latent_frames(num_frames)

    def world_tokens_for_frames(self, num_frames: int) -> int:
        return self.world_geometry.tokens_for_frames(num_frames)

    def to_dict(self) -> dict[str, Any]:
        return add_legacy_rope_fields(super().to_dict())

    def to_diff_dict(self) -> dict[str, Any]:
        return add_legacy_rope_fields(super().to_diff_dict())

    @classmethod
    def from_gemma_config(cls, gemma_config: Gemma3Config | dict[str, Any], **world_kwargs: Any) -> TheWorldConfig:
        """Build from a plain Gemma 3 config, adding the world fields; the source's `model_type` and
        `architectures` are dropped, or the saved config would claim to be plain Gemma 3."""
        data = gemma_config.to_dict() if not isinstance(gemma_config, dict) else dict(gemma_config)
        for key in ("model_type", "architectures", "transformers_version", "auto_map"):
            data.pop(key, None)
        data.update({k: v for k, v in world_kwargs.items() if v is not None})
        return cls(**data)


# Every world field with its default, read from the class body above (the one table).
WORLD_DEFAULTS: dict[str, Any] = {key: getattr(TheWorldConfig, key) for key in vars(TheWorldConfig)["__annotations__"]}
