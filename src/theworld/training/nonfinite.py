"""Stop training at the first non-finite loss or gradient, naming the step and the samples.

Without this, one NaN in the inputs (a damaged latent, an overflowing image) trains on: the
Trainer's `logging_nan_inf_filter` hides the NaN loss from the log, gradient clipping spreads a NaN
gradient to every weight, and the run exits 0 with an all-NaN model. Here:

* `check_loss(loss, step, sample_ids)` runs on every training micro-batch (before backward);
* `NonFiniteGradientGuard`, a `TrainerCallback`, looks at the accumulated gradients at
  `on_pre_optimizer_step`, before the optimizer can write a NaN into the weights.

Both raise `NonFiniteError` naming the optimizer step, the samples of the batch (on this process)
and, for gradients, the first parameters affected; the last checkpoint stays as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import TrainerCallback

from theworld.errors import TheWorldUserError


class NonFiniteError(TheWorldUserError):
    """The loss or a gradient became NaN or infinite; training stopped before updating the weights."""


def _samples(sample_ids: Sequence[str] | None) -> str:
    if sample_ids is None:
        return "samples unknown"
    ids = list(dict.fromkeys(sample_ids))
    shown = ", ".join(repr(i) for i in ids[:16]) + (f", ... ({len(ids)} in all)" if len(ids) > 16 else "")
    return f"samples [{shown}]"


_ADVICE = (
    "check these samples' images and, with a latent cache, rebuild it (`theworld cache-latents --rebuild`); "
    "a too high learning_rate or bf16 overflow gives the same"
)


def check_loss(loss: torch.Tensor, step: int, sample_ids: Sequence[str] | None) -> None:
    """Raise `NonFiniteError` if `loss` is NaN or infinite. `step` is the optimizer step being computed."""
    if bool(torch.isfinite(loss.detach()).all()):
        return
    raise NonFiniteError(
        f"non-finite training loss ({loss.detach().float().flatten()[0].item()}) at step {step}, in the batch of "
        f"{_samples(sample_ids)}: training stopped before this step changed any weight; {_ADVICE}"
    )


def non_finite_gradients(model: torch.nn.Module, limit: int = 3) -> list[str]:
    """Names of (up to `limit`) trainable parameters whose gradient holds a NaN or infinity."""
    named = [(n, p.grad) for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
    if not named:
        return []
    # one reduction for the common, all-finite case; the per-tensor pass only when something is off
    flags = torch.stack([torch.isfinite(g).all() for _, g in named])
    if bool(flags.all()):
        return []
    return [n for (n, _), ok in zip(named, flags.tolist()) if not ok][:limit]


class NonFiniteGradientGuard(TrainerCallback):
    """Raises `NonFiniteError` at `on_pre_optimizer_step` when a trainable parameter's gradient is not finite.

    `step_samples` is a list the trainer fills with the sample ids of the current optimizer step's
    micro-batches (and empties after each step).
    """

    def __init__(self, step_samples: list[str] | None = None) -> None:
        self.step_samples = step_samples

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        bad = non_finite_gradients(model)
        if bad:
            raise NonFiniteError(
                f"non-finite gradient at step {state.global_step + 1} (e.g. {', '.join(bad)}), from the batch of "
                f"{_samples(self.step_samples)}: training stopped before the optimizer step; {_ADVICE}"
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.step_samples is not None:
            self.step_samples.clear()
