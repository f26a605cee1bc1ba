"""Train a (tiny) `AutoencoderKLWan` to reconstruct a world's frames, so its latents carry the scene.

A world model can only learn dynamics its latents carry. Cosmos's VAE was trained on real video;
a tiny random one is not, and two things keep a DiT trained on its latents from seeing the
objects: random encoder features are weak and undifferentiated, and its posterior standard
deviation is about 1, so the *sample* that the pipeline conditions on is mostly noise. This trains
the VAE the usual way (encode, sample, decode, reconstruct) on clip windows of 1 + 4 frames (the
first frame and one causal temporal chunk, so both encoder paths train), with:

- the posterior's log-variance started low (`initial_logvar`) and no KL term by default, so the
  reconstruction itself keeps the sample close to the mean;
- a foreground weight: pixels that differ from the frame's median colour (the objects, a few
  percent of a frame) weigh more, so the objects are not lost to the background.

Clips are uint8 tensors (N, T, H, W, 3), converted per batch; afterwards the VAE's
`latents_mean`/`latents_std` are measured on the clips (as Cosmos's config records its own).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


@dataclass
class VAETrainSettings:
    steps: int = 150
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 10
    window: int = 5
    """Frames per training window: 1 + 4 (the first frame and one temporal chunk)."""
    crop: int | None = None
    """Train on random square crops of this size (a multiple of 16; cheaper), or whole frames."""
    foreground_weight: float = 10.0
    kl_weight: float = 0.0
    initial_logvar: float = -10.0
    max_grad_norm: float | None = None
    seed: int = 0


def to_pixels(clips_uint8: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float in [-1, 1], as world pixels are."""
    return clips_uint8.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def foreground_weights(pixels: torch.Tensor, weight: float) -> torch.Tensor:
    """1 on the background (each frame's median colour), 1 + weight where a pixel differs from it."""
    median = pixels.flatten(3).median(dim=3).values[..., None, None]  # (B, 3, T, 1, 1)
    differs = ((pixels - median).abs().sum(1, keepdim=True) > 0.05).float()
    return 1.0 + weight * differs


def train_vae(vae, clips_uint8: torch.Tensor, settings: VAETrainSettings | None = None, progress: bool = True) -> list[float]:
    """Train `vae` in place on windows of `clips_uint8`; returns the loss per step."""
    settings = settings or VAETrainSettings()
    generator = torch.Generator().manual_seed(settings.seed)
    with torch.no_grad():  # start the log-variance low: samples stay near the mean from step 1
        vae.quant_conv.bias[vae.config.z_dim :] = settings.initial_logvar
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / max(settings.warmup_steps, 1))
        * 0.5 * (1 + math.cos(math.pi * min(step / settings.steps, 1.0))),
    )  # fmt: skip
    n, frames, height, width, _ = clips_uint8.shape
    history: list[float] = []
    for _ in tqdm(range(settings.steps), desc="train VAE", unit="step", disable=not progress):
        index = torch.randint(0, n, (settings.batch_size,), generator=generator)
        start = int(torch.randint(0, frames - settings.window + 1, (1,), generator=generator))
        batch = clips_uint8[index, start : start + settings.window]
        if settings.crop is not None:
            top = int(torch.randint(0, height - settings.crop + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - settings.crop + 1, (1,), generator=generator))
            batch = batch[:, :, top : top + settings.crop, left : left + settings.crop]
        pixels = to_pixels(batch)
        posterior = vae.encode(pixels).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        loss = ((reconstruction - pixels).pow(2) * foreground_weights(pixels, settings.foreground_weight)).mean()
        if settings.kl_weight:
            loss = loss + settings.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(vae.parameters(), settings.max_grad_norm)
        optimizer.step()
        schedule.step()
        history.append(float(loss.detach()))
    vae.eval()
    return history


@torch.no_grad()
def record_latent_statistics(vae, clips_uint8: torch.Tensor, batch_size: int = 16) -> None:
    """Per-channel mean and std of the posterior mean over the clips, written to the VAE's config."""
    means = [vae.encode(to_pixels(chunk)).latent_dist.mean for chunk in clips_uint8.split(batch_size)]
    latents = torch.cat(means)
    vae.register_to_config(
        latents_mean=latents.mean((0, 2, 3, 4)).tolist(), latents_std=latents.std((0, 2, 3, 4)).clamp_min(1e-6).tolist()
    )
