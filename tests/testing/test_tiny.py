"""The tiny checkpoints behave like the real ones where TheWorld depends on it."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer

from theworld.testing.tiny import calibration_images
from theworld.world_encoder.vae import CosmosWorldEncoder


def test_tiny_vae_records_its_own_latent_statistics(tiny_vae_dir):
    """Normalised with its config's statistics, the tiny VAE's latents are standardised per channel."""
    encoder = CosmosWorldEncoder.from_pretrained(tiny_vae_dir)
    with torch.no_grad():
        latents = encoder(calibration_images(32, 64, seed=0))
    assert latents.mean((0, 2, 3, 4)).abs().max() < 1e-3
    assert (latents.std((0, 2, 3, 4)) - 1).abs().max() < 1e-2
    # on other scenes of the same kind they stay well scaled (not the 3%-signal latents of Cosmos's numbers)
    with torch.no_grad():
        other = encoder(calibration_images(32, 64, seed=1))
    assert 0.5 < other.std().item() < 2.0


def test_tiny_tokenizer_has_gemma_special_tokens(tiny_gemma_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma_dir)
    vocab = tokenizer.get_vocab()
    for token in ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                  "<end_of_image>", "<image_soft_token>", "<unused0>", "<unused1>", "<unused2>"):
        assert token in vocab, token
    assert tokenizer.tokenize("<start_of_turn>user") [0] == "<start_of_turn>"
    ids = tokenizer("Which way is the ball moving?").input_ids
    assert ids[0] == tokenizer.bos_token_id and tokenizer.decode(ids[1:]) == "Which way is the ball moving?"
