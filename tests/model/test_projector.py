"""Space-to-depth token layout and the projector's temporal embedding."""

from __future__ import annotations

import torch

from theworld import TheWorldConfig
from theworld.model.projector import WorldProjector, space_to_depth


def test_space_to_depth_layout():
    latents = torch.arange(1 * 2 * 1 * 4 * 4, dtype=torch.float32).reshape(1, 2, 1, 4, 4)
    tokens = space_to_depth(latents, 2)
    assert tokens.shape == (1, 1, 4, 8)  # 2x2 patches of 2 channels x 2 x 2
    # token 1 is the top-right 2x2 patch: channel 0 values 2,3,6,7 then channel 1 the same +16
    assert tokens[0, 0, 1].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]


def test_temporal_embedding_tells_frames_apart():
    config = TheWorldConfig(
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 64},
        world_image_size=64, world_tokens_per_frame=16, world_num_frames=9,
    )
    projector = WorldProjector(config)
    torch.manual_seed(0)
    with torch.no_grad():
        projector.temporal_embedding.normal_()
    same = torch.randn(1, 16, 1, 8, 8).repeat(1, 1, 3, 1, 1)  # three identical latent frames
    tokens = projector(same)  # (1, 48, 32)
    frames = tokens.reshape(3, 16, 32)
    assert not torch.allclose(frames[0], frames[1]) and not torch.allclose(frames[1], frames[2])
