"""World projector: normalised VAE latents -> world tokens in Gemma's text embedding space."""

from __future__ import annotations

import torch
from torch import nn

from theworld.model.configuration import TheWorldConfig


def space_to_depth(latents: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, T, (H/p)*(W/p), C*p*p): each p x p latent patch becomes one token, in raster order."""
    b, c, t, h, w = latents.shape
    x = latents.reshape(b, c, t, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 3, 5, 1, 4, 6)  # (B, T, H/p, W/p, C, p, p)
    return x.reshape(b, t, (h // patch) * (w // patch), c * patch * patch)


class WorldProjector(nn.Module):
    """Space-to-depth, a small MLP, a learned embedding per latent frame; RMS-normalised to `output_scale` (that
    of Gemma's text embeddings), so world tokens neither swamp the prompt nor are ignored by the frozen LM."""

    def __init__(self, config: TheWorldConfig) -> None:
        super().__init__()
        self.patch = config.world_patch_size
        self.tokens_per_frame = config.world_tokens_per_frame
        in_dim = config.world_latent_channels * self.patch * self.patch
        hidden = config.text_config.hidden_size
        if config.world_projector_type == "mlp":
            self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, hidden))
        else:
            self.proj = nn.Sequential(nn.Linear(in_dim, hidden))
        self.temporal_embedding = nn.Parameter(torch.zeros(config.world_max_latent_frames, hidden))
        self.output_scale = nn.Parameter(torch.ones(()))
        # World rollouts (K > 0 only, so a K = 0 model has exactly today's parameters): positions past
        # the longest clip's, and a marker added to every imagined token.
        rollout = config.world_rollout_frames
        self.rollout_temporal_embedding = nn.Parameter(torch.zeros(rollout, hidden)) if rollout else None
        self.imagined_embedding = nn.Parameter(torch.zeros(hidden)) if rollout else None
        self.eps = 1e-8  # the MLP output starts small (~1e-2 RMS): a larger eps would bias the scale

    def forward(self, latents: torch.Tensor, imagined: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T, H, W) latents [+ (B, C, K, H, W) imagined, at positions T..T+K-1] -> (B, (T + K) * tokens, hidden)."""
        b, c, t, h, w = latents.shape
        if t > self.temporal_embedding.shape[0]:
            raise ValueError(
                f"world input has {t} latent frames, more than world_num_frames allows "
                f"({self.temporal_embedding.shape[0]} latent frames)"
            )
        x = self.tokens(latents) + self.temporal_embedding[:t, None, :]  # (B, T, N, hidden)
        if imagined is not None:
            if self.imagined_embedding is None:
                raise ValueError("imagined latents were given but this model has world_rollout_frames=0")
            k = imagined.shape[2]
            if imagined.shape[:2] != latents.shape[:2] or imagined.shape[3:] != latents.shape[3:] or k != self.rollout_frames:
                raise ValueError(
                    f"imagined latents {tuple(imagined.shape)} do not fit observed latents {tuple(latents.shape)} "
                    f"with world_rollout_frames={self.rollout_frames}"
                )
            positions = torch.cat([self.temporal_embedding, self.rollout_temporal_embedding])[t : t + k]
            y = self.tokens(imagined) + positions[:, None, :] + self.imagined_embedding  # (B, K, N, hidden)
            x = torch.cat([x, y], dim=1)
        return x.reshape(b, -1, x.shape[-1])

    @property
    def rollout_frames(self) -> int:
        return 0 if self.rollout_temporal_embedding is None else self.rollout_temporal_embedding.shape[0]

    def tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, T, N, hidden): space-to-depth, MLP, RMS-normalised to `output_scale`."""
        b, c, t, h, w = latents.shape
        if h % self.patch or w % self.patch or (h // self.patch) * (w // self.patch) != self.tokens_per_frame:
            raise ValueError(
                f"world latents of {h}x{w} do not give world_tokens_per_frame={self.tokens_per_frame} "
                f"tokens with {self.patch}x{self.patch} space-to-depth (check world_image_size)"
            )
        weight = self.proj[0].weight
        tokens = space_to_depth(latents.to(weight.dtype), self.patch)  # (B, T, N, C*p*p)
        x = self.proj(tokens)  # (B, T, N, hidden)
        x = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps).to(x.dtype)
        return x * self.output_scale
