"""Clips encoded once for world-model training: the VAE posterior's mean and std, normalised.

The DiT is trained on latents, never on pixels, so each training clip (observed frames followed
by the frames that come next) goes through the frozen VAE encoder once. Both moments of the
posterior are kept because the sampler conditions on a *sample* of it (the pipeline's
`retrieve_latents`): training draws conditioning frames the same way, mean + std * noise, while
the frames to predict are the mean (what `CosmosWorldEncoder` returns). All values are normalised
like the world encoder's latents: (z - latents_mean) / latents_std.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from theworld.errors import TheWorldUserError
from theworld.world_encoder.vae import CosmosWorldEncoder

logger = logging.getLogger(__name__)


@dataclass
class WorldLatents:
    """mean, std: (N, 16, T, h, w) normalised posterior moments of N clips; ids name the clips."""

    mean: torch.Tensor
    std: torch.Tensor
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    @property
    def latent_frames(self) -> int:
        return int(self.mean.shape[2])

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"mean": self.mean.float().contiguous(), "std": self.std.float().contiguous()}
        save_file(tensors, str(path), metadata={"ids": "\n".join(self.ids), "format": "theworld-world-latents"})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> WorldLatents:
        path = Path(path)
        if not path.is_file():
            raise TheWorldUserError(f"world latents file {path} does not exist")
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != "theworld-world-latents":
                raise TheWorldUserError(f"{path} is not a world latents file (written by WorldLatents.save)")
            mean, std = handle.get_tensor("mean"), handle.get_tensor("std")
        ids = meta.get("ids", "").split("\n") if meta.get("ids") else []
        return cls(mean=mean, std=std, ids=ids)


@torch.no_grad()
def posterior_moments(encoder: CosmosWorldEncoder, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips (B, 3, T, H, W) in [-1, 1] -> normalised posterior (mean, std), each (B, 16, Tl, H/8, W/8)."""
    param = next(encoder.vae.parameters())
    posterior = encoder.vae.encode(pixels.to(device=param.device, dtype=param.dtype)).latent_dist
    mean = (posterior.mean.float() - encoder.latents_mean) * encoder.latents_inv_std
    std = posterior.std.float() * encoder.latents_inv_std
    return mean, std


def encode_clips(
    encoder: CosmosWorldEncoder,
    clips: Iterable[tuple[str, torch.Tensor]],
    batch_size: int = 16,
    total: int | None = None,
    progress: bool = True,
) -> WorldLatents:
    """(id, pixels (3, T, H, W)) pairs -> their `WorldLatents`, encoded in batches."""
    means: list[torch.Tensor] = []
    stds: list[torch.Tensor] = []
    ids: list[str] = []
    batch: list[torch.Tensor] = []
    first_shape: tuple[int, ...] | None = None

    def flush() -> None:
        if batch:
            mean, std = posterior_moments(encoder, torch.stack(batch))
            means.append(mean.cpu())
            stds.append(std.cpu())
            batch.clear()

    for clip_id, pixels in tqdm(clips, total=total, desc="encode clips", unit="clip", disable=not progress):
        first_shape = first_shape or tuple(pixels.shape)
        if tuple(pixels.shape) != first_shape:
            raise TheWorldUserError(
                f"clip {clip_id} has shape {tuple(pixels.shape)}, the clips before it {first_shape}: "
                "world-model training clips must share frame count and size"
            )
        ids.append(clip_id)
        batch.append(pixels)
        if len(batch) == batch_size:
            flush()
    flush()
    if not ids:
        raise TheWorldUserError("no clips to encode")
    return WorldLatents(mean=torch.cat(means), std=torch.cat(stds), ids=ids)
