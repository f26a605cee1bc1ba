"""Causal-LM loss computed only where there is something to learn.

Gemma 3 projects every position to the 262k vocabulary and upcasts all of it to fp32 before
masking (about 10 GB at 5,000 positions x batch 2). Here the hidden states of supervised positions
are selected first (`logits_to_keep` as a boolean mask, handled by transformers' own
`slice_logits_to_keep`), so logits exist only for those positions, and only they go to fp32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def supervised_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: positions whose *next* token is supervised (the last position never is)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def supervised_lm_loss(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    labels: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy at supervised positions, divided by `num_items_in_batch` (the
    supervised tokens of the whole optimizer step, so every token weighs the same however the batch
    was split; default: this batch's). Returns (loss, supervised tokens in this batch)."""
    keep = supervised_mask(labels)  # (B, L)
    targets = labels[:, 1:][keep[:, :-1]]  # (K,) in the same row-major order as the kept positions
    outputs = model(**inputs, logits_to_keep=keep)
    logits = outputs.logits  # (K, vocab): only supervised positions were projected
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    n_tokens = targets.new_tensor(targets.numel())
    denominator = num_items_in_batch if num_items_in_batch is not None else n_tokens.clamp(min=1)
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(loss_sum.device)
    return loss_sum / denominator, n_tokens
