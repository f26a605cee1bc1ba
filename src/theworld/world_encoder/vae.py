"""The Cosmos-Predict2 VAE (diffusers' `AutoencoderKLWan`), encoder half only, as TheWorld's world encoder: the
decoder (about 60% of the weights) is never built, and encoding is the VAE's own `encode`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan
from safetensors import safe_open
from torch import nn

from theworld.errors import TheWorldUserError
from theworld.model.checkpoints import looks_local

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
ENCODER_PREFIXES = ("encoder.", "quant_conv.")


class CosmosWorldEncoder(nn.Module):
    """Pixels in [-1, 1] (B, 3, T, H, W) -> posterior-mode latents (B, 16, 1 + (T-1)//4, H/8, W/8), normalised
    per channel as the Cosmos pipeline does."""

    def __init__(self, vae: AutoencoderKLWan) -> None:
        super().__init__()
        self.vae = vae
        mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        # Non-persistent: recomputed from the VAE config on every load, never read from a checkpoint.
        self.register_buffer("latents_mean", mean, persistent=False)
        self.register_buffer("latents_inv_std", 1.0 / std, persistent=False)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.z_dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 5 or pixel_values.shape[1] != 3:
            raise ValueError(f"world pixels must be (batch, 3, frames, height, width), got {tuple(pixel_values.shape)}")
        frames = pixel_values.shape[2]
        if (frames - 1) % 4:
            raise ValueError(f"a world clip has {frames} frames; the VAE needs 4k+1 frames (1, 5, 9, ...)")
        param = next(self.vae.parameters())
        pixel_values = pixel_values.to(device=param.device, dtype=param.dtype)
        latents = self.vae.encode(pixel_values).latent_dist.mode()  # (B, 16, Tl, H/8, W/8)
        latents = (latents.float() - self.latents_mean) * self.latents_inv_std
        return latents

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> CosmosWorldEncoder:
        """Load the encoder half from a Cosmos repo (its `vae/`), a VAE directory or a save's `world_encoder/`."""
        vae_dir, config_file, weights = _vae_files(str(name_or_path))
        vae = _encoder_half(config_file)
        state = _read_encoder_state(weights)
        if dtype is not None:
            state = {k: v.to(dtype) for k, v in state.items()}
        missing = sorted(set(vae.state_dict()) - set(state))
        if missing:
            raise TheWorldUserError(f"VAE weights in {vae_dir} lack encoder tensors: {missing[:5]} ...")
        vae.load_state_dict(state, strict=True, assign=True)
        vae.requires_grad_(False).eval()
        encoder = cls(vae)
        if device is not None:
            encoder.to(device=device)
        logger.info("Loaded world encoder (VAE encoder only) from %s", vae_dir)
        return encoder

    @classmethod
    def skeleton(cls, name_or_path: str | os.PathLike) -> CosmosWorldEncoder:
        """The encoder's modules on the meta device, from the config alone: enough to count parameters."""
        return cls(_encoder_half(_vae_files(str(name_or_path), with_weights=False)[1]).requires_grad_(False))

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the encoder half in diffusers' layout (config + safetensors), loadable by `from_pretrained`."""
        from safetensors.torch import save_file

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dict(self.vae.config), indent=2, sort_keys=True), encoding="utf-8")
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.vae.state_dict().items()}
        save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt"})


def vae_files(name: str) -> dict[str, str]:
    """{"config": config.json, "weights": weights file or index} of the VAE `name` loads from."""
    _, config, weights = _vae_files(name)
    return {"config": config, "weights": weights}


def _vae_files(name: str, with_weights: bool = True) -> tuple[str, str, str | None]:
    """(where, config.json, weights file or index) of a VAE: a directory or Hub id, its `vae/` or itself."""
    if os.path.isdir(name):
        folder = next((c for c in (os.path.join(name, "vae"), name) if os.path.isfile(os.path.join(c, "config.json"))), None)
        if folder is None:
            raise TheWorldUserError(f"no VAE found in {name}: expected {name}/vae/config.json or {name}/config.json")
        weights = None
        if with_weights:
            weights = next((os.path.join(folder, f) for f in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME) if os.path.isfile(os.path.join(folder, f))), None)
            if weights is None:
                raise TheWorldUserError(f"no VAE weights in {folder}: expected {WEIGHTS_NAME}")
        return folder, os.path.join(folder, "config.json"), weights
    if looks_local(name):
        raise TheWorldUserError(f"world model {name!r} is neither a directory nor a hub id (owner/name)")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        config, subfolder = hf_hub_download(name, "config.json", subfolder="vae"), "vae"
    except EntryNotFoundError:
        config, subfolder = hf_hub_download(name, "config.json"), None
    weights = None
    if with_weights:
        try:
            weights = hf_hub_download(name, WEIGHTS_NAME, subfolder=subfolder)
        except EntryNotFoundError:
            weights = hf_hub_download(name, WEIGHTS_INDEX_NAME, subfolder=subfolder)
            with open(weights, encoding="utf-8") as handle:
                for shard in sorted(set(json.load(handle)["weight_map"].values())):
                    hf_hub_download(name, shard, subfolder=subfolder)
    return f"{name}/{subfolder or ''}", config, weights


def _encoder_half(config_file: str) -> AutoencoderKLWan:
    """The VAE on the meta device without its decoder side, which is never used (no memory for it)."""
    with open(config_file, encoding="utf-8") as handle:
        config = json.load(handle)
    with init_empty_weights():
        vae = AutoencoderKLWan.from_config(config)
    vae.decoder = None
    vae.post_quant_conv = None
    return vae


def _read_encoder_state(weights: str) -> dict[str, torch.Tensor]:
    """Read only the encoder-side tensors, from one safetensors file or a sharded index."""
    if weights.endswith(".index.json"):
        with open(weights, encoding="utf-8") as handle:
            weight_map: dict[str, str] = json.load(handle)["weight_map"]
        shards = sorted({f for k, f in weight_map.items() if k.startswith(ENCODER_PREFIXES)})
        paths = [os.path.join(os.path.dirname(weights), shard) for shard in shards]
    else:
        paths = [weights]
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        with safe_open(path, framework="pt") as handle:
            for key in handle.keys():
                if key.startswith(ENCODER_PREFIXES):
                    state[key] = handle.get_tensor(key)
    return state
