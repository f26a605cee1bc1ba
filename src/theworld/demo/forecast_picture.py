"""The forecast task's picture: observed frames, then the future as the DiT imagined it and as it was.

TheWorld never decodes latents (its world tokens come from them directly); this picture is the
demo's own look at what the world model imagined. The demo's VAE is kept untrained by default
(its encoder's latents served the world model better, docs/rollout.md), so its decoder cannot
draw anything yet: here the decoder alone is trained to reconstruct the world's frames, the
encoder frozen, so the latents (and every number of the demo) stay exactly what they were. Each
latent sequence (observed + K future latent frames) is decoded whole, as the Cosmos pipeline
decodes a video, and the future frames are cut from it.

Rows per clip: true frames (pixels); the true latents decoded (what this VAE can show at best);
the observed latents followed by the DiT's imagined ones, decoded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

ROWS = ("true frames", "true latents, decoded", "imagined, decoded")


def train_decoder(vae_dir: Path, clips_uint8: torch.Tensor, steps: int, seed: int) -> tuple[Any, list[float]]:
    """The VAE of vae_dir with its decoder (and post-quant conv) trained on clip windows; the encoder frozen."""
    from diffusers import AutoencoderKLWan

    from theworld.world_model.vae_training import VAETrainSettings, train_vae

    vae = AutoencoderKLWan.from_pretrained(vae_dir)
    logvar_bias = vae.quant_conv.bias[vae.config.z_dim :].detach().clone()
    for module in (vae.encoder, vae.quant_conv):
        module.requires_grad_(False)
    settings = VAETrainSettings(steps=steps, batch_size=8, learning_rate=2e-3, crop=32, seed=seed)
    settings.initial_logvar = float(logvar_bias.mean())  # train_vae starts the bias there (the repo's own value)
    history = train_vae(vae, clips_uint8, settings, progress=False)
    with torch.no_grad():
        vae.quant_conv.bias[vae.config.z_dim :] = logvar_bias  # the encoder side exactly as the demo used it
    return vae, history


@torch.no_grad()
def decode(vae: Any, normalised: torch.Tensor) -> np.ndarray:
    """(N, 16, T, h, w) latents normalised like the world encoder's -> (N, 1 + 4 (T - 1), H, W, 3) uint8."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    pixels = vae.decode(normalised * std + mean).sample.clamp(-1, 1)  # (N, 3, frames, H, W)
    return ((pixels.permute(0, 2, 3, 4, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def compose(clips: list[Any], decoded_true: np.ndarray, decoded_imagined: np.ndarray, observed_frames: int,
            scale: int = 2) -> Image.Image:  # fmt: skip
    """A grid: per clip, the three ROWS; columns: the last observed frame, then every future frame."""
    size = clips[0].frames[0].size[0] * scale
    future = len(clips[0].future)
    label_width, gap, header = 150, 6, 18
    width = label_width + (1 + future) * (size + 2)
    height = header + len(clips) * (len(ROWS) * (size + 2) + 18 + gap)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((label_width, 3), "last seen", fill=(0, 0, 0))
    draw.text((label_width + size + 2, 3), f"future frames 1-{future} (after the clip)", fill=(0, 0, 0))
    y = header
    for n, clip in enumerate(clips):
        draw.text((4, y + 2), f"{clip.id}: {clip.question} -> {clip.answer}", fill=(0, 0, 120))
        y += 18
        rows = (
            [np.asarray(clip.frames[-1])] + [np.asarray(f) for f in clip.future],
            list(decoded_true[n, observed_frames - 1 : observed_frames + future]),
            list(decoded_imagined[n, observed_frames - 1 : observed_frames + future]),
        )
        for label, frames in zip(ROWS, rows):
            draw.text((4, y + size // 2 - 6), label, fill=(0, 0, 0))
            for column, frame in enumerate(frames):
                tile = Image.fromarray(frame).resize((size, size), Image.NEAREST)
                canvas.paste(tile, (label_width + column * (size + 2), y))
            y += size + 2
        y += gap
    return canvas


def write_picture(vae_dir: Path, train_clips: torch.Tensor, clips: list[Any], observed: torch.Tensor,
                  true_future: torch.Tensor, imagined: torch.Tensor, path: Path, decoder_steps: int,
                  seed: int) -> dict[str, Any]:  # fmt: skip
    """Train the decoder, decode observed + true and observed + imagined latents, write the PNG.

    observed (N, 16, T_obs, h, w), true_future and imagined (N, 16, K, h, w), all normalised."""
    vae, history = train_decoder(vae_dir, train_clips, decoder_steps, seed)
    decoded_true = decode(vae, torch.cat([observed, true_future], dim=2))
    decoded_imagined = decode(vae, torch.cat([observed, imagined], dim=2))
    observed_frames = len(clips[0].frames)
    compose(clips, decoded_true, decoded_imagined, observed_frames).save(path)
    truth = np.stack([np.stack([np.asarray(f) for f in c.future]) for c in clips]).astype(np.float32)
    future = slice(observed_frames, observed_frames + truth.shape[1])

    def error(decoded: np.ndarray) -> float:  # mean absolute pixel error of the future frames, 0-255
        return float(np.abs(decoded[:, future].astype(np.float32) - truth).mean())

    logger.info("wrote %s", path)
    return {"path": str(path), "decoder_steps": decoder_steps, "decoder_loss_first10": float(np.mean(history[:10])),
            "decoder_loss_last10": float(np.mean(history[-10:])), "future_mae_true_decoded": error(decoded_true),
            "future_mae_imagined_decoded": error(decoded_imagined)}  # fmt: skip
