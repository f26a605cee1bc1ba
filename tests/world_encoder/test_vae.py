"""The world encoder is the VAE's own encode, encoder half only, normalised like Cosmos."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan

from theworld.world_encoder.vae import CosmosWorldEncoder


def test_encoder_only_matches_full_vae_encode(tiny_vae_dir, tmp_path):
    encoder = CosmosWorldEncoder.from_pretrained(tiny_vae_dir)
    full = AutoencoderKLWan.from_pretrained(tiny_vae_dir, subfolder="vae").eval()
    assert encoder.vae.decoder is None and encoder.vae.post_quant_conv is None
    assert not any(k.startswith(("decoder.", "post_quant_conv.")) for k in encoder.state_dict())
    encoder_params = sum(p.numel() for p in encoder.parameters())
    assert encoder_params < 0.6 * sum(p.numel() for p in full.parameters())

    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 9, 64, 64) * 2 - 1
    with torch.no_grad():
        latents = encoder(pixels)
        reference = full.encode(pixels).latent_dist.mode()
    mean = torch.tensor(full.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(full.config.latents_std).view(1, -1, 1, 1, 1)
    assert latents.shape == (2, 16, 3, 8, 8)  # 9 frames -> 1 + 8 // 4 latent frames, 64 px -> 8
    torch.testing.assert_close(latents, (reference - mean) / std, rtol=1e-5, atol=1e-5)

    encoder.save_pretrained(tmp_path / "enc")
    again = CosmosWorldEncoder.from_pretrained(tmp_path / "enc")
    with torch.no_grad():
        assert torch.equal(again(pixels), latents)


def test_latents_are_deterministic(tiny_vae_dir):
    encoder = CosmosWorldEncoder.from_pretrained(tiny_vae_dir)
    pixels = torch.zeros(1, 3, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(encoder(pixels), encoder(pixels))


def test_bf16_load(tiny_vae_dir):
    encoder = CosmosWorldEncoder.from_pretrained(tiny_vae_dir, dtype=torch.bfloat16)
    assert next(encoder.vae.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        latents = encoder(torch.zeros(1, 3, 1, 64, 64))
    assert latents.dtype == torch.float32 and torch.isfinite(latents).all()
