"""`WorldModel`: the Cosmos-Predict2 Video2World DiT set up to imagine what happens next.

Set-up (`WorldModel.from_pretrained`) reads a Cosmos repo in diffusers' layout:

- `transformer/`: the DiT (`CosmosTransformer3DModel`), the only large part kept;
- `scheduler/`: its config only (a fresh scheduler is built for every rollout);
- `vae/`: the *encoder half* (`CosmosWorldEncoder`; the decoder is never built), or the world
  encoder the caller already has;
- `text_encoder/` + `tokenizer/`: T5, loaded only to embed the fixed prompts once, then released
  (skipped entirely when a stored `WorldTextCondition` is given).

It also runs the Cosmos guardrail's text check on the prompt (see `guardrail.py`). Afterwards
the world model holds the DiT, the VAE encoder and two small embedding tensors: no decoder, no T5,
no checker. `imagine(pixel_values)` returns K imagined latent frames per clip, normalised like the
world encoder's latents.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from theworld.errors import TheWorldUserError
from theworld.world_encoder.vae import CosmosWorldEncoder
from theworld.world_model.guardrail import check_world_model_prompt, load_cosmos_safety_checker
from theworld.world_model.sampler import sample_rollouts
from theworld.world_model.settings import RolloutSettings
from theworld.world_model.text import WorldTextCondition, describe, encode_text_condition, text_encoder_id

logger = logging.getLogger(__name__)

REPO_LAYOUT = (
    "a Cosmos-Predict2 Video2World repo in diffusers' layout holds transformer/ (CosmosTransformer3DModel), "
    "scheduler/, vae/, text_encoder/ and tokenizer/"
)
_HUB_PATTERNS = ["model_index.json", "transformer/*", "scheduler/*"]
_HUB_TEXT_PATTERNS = ["text_encoder/*", "tokenizer/*"]


def resolve_world_model_folder(
    name_or_path: str | os.PathLike, need_text_encoder: bool = True, need_transformer: bool = True
) -> Path:
    """A local folder holding the world model's parts (a hub id is downloaded, VAE excepted: the
    world encoder fetches its own files). A folder without `transformer/` is a clear error."""
    name = str(name_or_path)
    if os.path.isdir(name):
        folder = Path(name)
    elif os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise TheWorldUserError(f"cosmos_model_name {name!r} is neither a folder nor a hub id (owner/name)")
    else:
        from huggingface_hub import snapshot_download

        patterns = _HUB_PATTERNS + (_HUB_TEXT_PATTERNS if need_text_encoder else [])
        folder = Path(snapshot_download(name, allow_patterns=patterns))
    if need_transformer and not (folder / "transformer").is_dir():
        raise TheWorldUserError(
            f"cosmos_model_name {name}: no transformer/ folder, so there is no world model (DiT) to roll out; "
            f"{REPO_LAYOUT}"
        )
    if not (folder / "scheduler").is_dir():
        raise TheWorldUserError(f"cosmos_model_name {name}: no scheduler/ folder; {REPO_LAYOUT}")
    return folder


def file_fingerprint(folder: Path) -> str:
    """sha256 of every file in a folder (names and bytes, streamed): the DiT's identity for cache keys."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def encoder_identity(fingerprint: Any) -> str:
    """A world encoder's identity in rollout cache keys: its `EncoderFingerprint`'s config and weights hashes."""
    return f"{fingerprint.config_sha256}:{fingerprint.weights_sha256}"


def rollout_identity_dict(
    dit: str, scheduler_config: dict[str, Any], text: WorldTextCondition, settings: RolloutSettings, encoder: str
) -> dict[str, Any]:
    """`WorldModel.identity()`'s dict, from its parts (`identity_from_files` builds it without a DiT)."""
    return {
        "dit": dit,
        "scheduler": json.dumps(scheduler_config, sort_keys=True, default=str),
        "text": describe(text),
        "settings": settings.to_dict(),
        "encoder": encoder,
    }


def identity_from_files(
    name_or_path: str | os.PathLike, settings: RolloutSettings, text: WorldTextCondition, encoder: str
) -> dict[str, Any]:
    """The `identity()` the world model set up from `name_or_path` with `settings`, `text` and an
    encoder of identity `encoder` would have, read from its files (no DiT, T5 or guardrail loaded):
    training opens its rollout cache with it."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    folder = resolve_world_model_folder(name_or_path, need_text_encoder=False)
    scheduler_config = dict(FlowMatchEulerDiscreteScheduler.load_config(folder / "scheduler"))
    return rollout_identity_dict(file_fingerprint(folder / "transformer"), scheduler_config, text, settings, encoder)


class WorldModel(nn.Module):
    """A Cosmos DiT with its VAE encoder and fixed text condition; `imagine` rolls clips out."""

    def __init__(
        self,
        transformer: nn.Module,
        encoder: CosmosWorldEncoder,
        scheduler_config: dict[str, Any],
        text: WorldTextCondition,
        settings: RolloutSettings,
        guardrail: str,
        fingerprint: str = "",
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.encoder = encoder
        self.scheduler_config = dict(scheduler_config)
        self.text = text
        self.settings = settings
        self.guardrail = guardrail
        """The checker that passed the prompt at set-up (module.Class)."""
        self.dit_fingerprint = fingerprint
        self._encoder_identity: str | None = None

    @property
    def max_rollout_frames(self) -> int:
        """Latent frames the DiT can take in all (observed + imagined)."""
        return self.transformer.config.max_size[0] // self.transformer.config.patch_size[0]

    def imagine(self, pixel_values: torch.Tensor, settings: RolloutSettings | None = None) -> torch.Tensor:
        """Clips (N, 3, T, H, W) in [-1, 1] -> imagined latents (N, 16, K, H/8, W/8), encoder-normalised.

        `settings` may change frames, steps, guidance or seed; its text condition must be the one
        this world model was set up with.
        """
        settings = settings or self.settings
        return sample_rollouts(
            self.transformer, self.encoder.vae, self.scheduler_config, self.text, settings, pixel_values
        )

    def identity(self) -> dict[str, Any]:
        """What decides a rollout besides the clip: DiT, scheduler, text condition, settings, and the
        VAE encoder the observed frames are encoded with (for cache keys)."""
        if self._encoder_identity is None:
            from theworld.training.latent_cache import fingerprint_encoder

            self._encoder_identity = encoder_identity(fingerprint_encoder(self.encoder))  # frozen: hashed once
        return rollout_identity_dict(
            self.dit_fingerprint, self.scheduler_config, self.text, self.settings, self._encoder_identity
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        settings: RolloutSettings | None = None,
        *,
        safety_checker: Any = None,
        text_condition: WorldTextCondition | None = None,
        encoder: CosmosWorldEncoder | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> WorldModel:
        """Set up a world model from a Cosmos repo (folder or hub id) for one text condition.

        `safety_checker`: None loads cosmos_guardrail's `CosmosSafetyChecker`, as the pipeline
        does; tests pass `TinyTestSafetyChecker` with tiny world models. `text_condition`: stored
        embeddings (then T5 is not loaded at all). `encoder`: a world encoder already loaded for the
        same VAE (it is shared, not copied).
        """
        from diffusers import CosmosTransformer3DModel, FlowMatchEulerDiscreteScheduler

        settings = settings or RolloutSettings()
        negative = settings.resolved_negative_prompt
        folder = resolve_world_model_folder(name_or_path, need_text_encoder=text_condition is None)
        transformer = CosmosTransformer3DModel.from_pretrained(folder / "transformer", torch_dtype=dtype)
        transformer.requires_grad_(False).eval()
        checker = safety_checker if safety_checker is not None else load_cosmos_safety_checker()
        guardrail = check_world_model_prompt(checker, settings.prompt, transformer)

        if text_condition is None:
            text_condition = encode_text_condition(
                folder, settings.prompt, negative, settings.max_sequence_length, dtype=dtype
            )
        else:
            if not text_condition.describes(settings.prompt, negative, settings.max_sequence_length):
                raise TheWorldUserError(
                    f"the stored world text condition was made for prompt {text_condition.prompt!r} "
                    f"(max_sequence_length {text_condition.max_sequence_length}), not for these rollout settings"
                )
            if (folder / "text_encoder").is_dir() and text_condition.text_encoder != text_encoder_id(folder):
                raise TheWorldUserError(
                    f"the stored world text condition came from another T5 ({text_condition.text_encoder}) than "
                    f"{name_or_path}'s ({text_encoder_id(folder)})"
                )
        del checker  # the prompt is fixed and checked; with latent outputs nothing else is checked
        text_dim = transformer.config.text_embed_dim
        if text_condition.prompt_embeds.shape[-1] != text_dim:
            raise TheWorldUserError(
                f"text embeddings of dim {text_condition.prompt_embeds.shape[-1]} do not fit the DiT "
                f"(text_embed_dim={text_dim})"
            )

        scheduler_config = dict(FlowMatchEulerDiscreteScheduler.load_config(folder / "scheduler"))
        if encoder is None:
            encoder = CosmosWorldEncoder.from_pretrained(name_or_path, dtype=dtype)
        model = cls(
            transformer, encoder, scheduler_config, text_condition, settings, guardrail,
            fingerprint=file_fingerprint(folder / "transformer"),
        )  # fmt: skip
        if device is not None:
            model.to(device)  # the text embeddings follow the DiT's device at each rollout
        logger.info(
            "world model set up from %s: DiT %s params, K=%d, %d steps, guidance %.2g",
            name_or_path, f"{sum(p.numel() for p in transformer.parameters()):,}", settings.frames,
            settings.steps, settings.guidance,
        )  # fmt: skip
        return model
