"""Training the tiny VAE on a world's frames: the loss falls, the posterior stays narrow, stats are recorded."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from theworld.data.forecast import ForecastConfig, generate_forecast
from theworld.world_model.forecast_study import clips_uint8
from theworld.world_model.vae_training import VAETrainSettings, foreground_weights, record_latent_statistics, to_pixels, train_vae


def test_foreground_pixels_weigh_more():
    frame = torch.full((1, 4, 4, 3), 32, dtype=torch.uint8)
    frame[0, 1, 1] = 250
    weights = foreground_weights(to_pixels(frame[None]), 10.0)
    assert weights[0, 0, 0, 1, 1] == 11.0 and weights.sum() == 16 + 10


def test_training_lowers_the_loss_and_keeps_samples_near_the_mean():
    config = ForecastConfig(image_size=32, observed_frames=5, future_frames=4, radius_range=(3.0, 4.0), wall=2)
    clips = clips_uint8(generate_forecast(12, seed=0, config=config))  # (12, 9, 32, 32, 3)
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1)
    history = train_vae(vae, clips, VAETrainSettings(steps=12, batch_size=4, learning_rate=2e-3, warmup_steps=2), progress=False)
    assert np.mean(history[-3:]) < np.mean(history[:3])
    record_latent_statistics(vae, clips)
    with torch.no_grad():
        posterior = vae.encode(to_pixels(clips[:4, :5])).latent_dist
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    assert (posterior.std / std).mean() < 0.05  # normalised posterior noise: small next to the signal
    assert len(vae.config.latents_mean) == 16
