"""Causal-LM loss with logits only at supervised positions (`logits_to_keep` as a mask): Gemma 3 would project
every position to its 262k vocabulary in fp32 (about 10 GB at 5,000 positions x batch 2)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def supervised_lm_loss(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    labels: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy at supervised positions / `num_items_in_batch` (the optimizer step's supervised
    tokens; default: this batch's). Returns (loss, supervised tokens in this batch)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)  # (B, L): positions whose *next* token is supervised
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    targets = labels[:, 1:][keep[:, :-1]]  # (K,) in the same row-major order as the kept positions
    outputs = model(**inputs, logits_to_keep=keep)
    logits = outputs.logits  # (K, vocab): only supervised positions were projected
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    n_tokens = targets.new_tensor(targets.numel())
    denominator = num_items_in_batch if num_items_in_batch is not None else n_tokens.clamp(min=1)
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(loss_sum.device)
    return loss_sum / denominator, n_tokens
