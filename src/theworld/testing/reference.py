"""Reference implementations that tests and benchmarks compare the fast paths against.

`full_forward_scores` is how choice scoring worked before prompts were prefilled once
(`theworld.evaluation.scoring`): every (prompt, choice) row is one full forward of prompt +
choice, with the row's own copy of the image pixels and world inputs (SigLIP and the world
projector run once per choice). It is slow by construction and kept only as the yardstick: the
fast path must give the same scores (to 1e-4 in float32), and `benchmarks/choice_scoring.py`
reports the speed of both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from theworld.evaluation.scoring import EncodedPrompt, collate


def full_forward_scores(
    model: torch.nn.Module,
    prompts: Sequence[EncodedPrompt],
    rows: Sequence[tuple[int, Sequence[int]]],
    batch_size: int = 8,
    padding_side: str = "left",
    pad_token_id: int = 0,
) -> list[float]:
    """Summed log-probability of each row's continuation, one full forward per row (batched by `batch_size`)."""
    scores: list[float] = []
    for begin in range(0, len(rows), batch_size):
        batch = rows[begin : begin + batch_size]
        inputs, offsets = collate(model, prompts, batch, padding_side, pad_token_id)
        width = inputs["input_ids"].shape[1]
        # Position t's logits predict token t + 1: only the positions from the earliest row's last
        # prompt token on are projected to the vocabulary (`logits_to_keep`), as the old path did.
        keep = width - min(start + len(prompts[p]) - 1 for start, (p, _) in zip(offsets, batch))
        with torch.no_grad():
            logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits  # (B, keep, V)
        for r, (start, (p, cont)) in enumerate(zip(offsets, batch)):
            first = start + len(prompts[p]) - 1 - (width - keep)
            targets = torch.as_tensor(list(cont), dtype=torch.long, device=logits.device)
            row = logits[r, first : first + len(cont)].float().log_softmax(-1)
            scores.append(float(row.gather(-1, targets[:, None]).double().sum()))
    return scores
