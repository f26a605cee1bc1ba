"""Compare the logits of two models on the same inputs.

This is the first question `theworld parity` asks: do two models that should be the same (a
subclass and its parent, one checkpoint loaded two ways, one model under two library versions)
produce the same next-token scores? Everything here is model-agnostic: any module whose forward
returns a tensor, a tuple whose first element is the logits, or an object with a `logits` field
(a transformers `ModelOutput`) can be compared.

The tensor helpers at the bottom (`max_abs_diff`, `run_eval`) are shared with `divergence.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["LogitReport", "compare_logits", "extract_logits", "max_abs_diff"]


@dataclass
class LogitReport:
    """How far apart two models' logits are.

    `max_abs_diff` / `mean_abs_diff` are computed in fp32 over the compared positions (all of them,
    or only those with `attention_mask == 1` when the inputs carry a mask of shape
    (batch, seq)); they are `inf` when the shapes differ or when exactly one side is non-finite at
    some position. `greedy_agreement` is the fraction of compared positions whose arg-max token is
    the same in both models; it is also computed when only the vocabulary sizes differ (a resized
    embedding), and is None when even the leading dimensions differ.
    """

    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    dtype_a: str
    dtype_b: str
    max_abs_diff: float
    mean_abs_diff: float
    greedy_agreement: float | None
    n_positions: int
    atol: float
    passed: bool
    worst_position: tuple[int, ...] | None = None
    first_greedy_mismatch: tuple[int, ...] | None = None
    message: str = ""

    @property
    def shape_match(self) -> bool:
        return self.shape_a == self.shape_b


def compare_logits(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: Mapping[str, Any],
    atol: float = 0.0,
) -> LogitReport:
    """Run both models on `inputs` (eval mode, no grad) and compare their logits in fp32.

    `inputs` are passed as keyword arguments to each model, moved to the device of that model's
    first parameter. The models' train/eval flags are restored afterwards. The comparison passes
    when the shapes match, every value is finite in the same places, and `max_abs_diff <= atol`.
    A shape mismatch is reported as a failed comparison, never raised.
    """
    with run_eval(model_a):
        out_a = model_a(**move_inputs(inputs, model_a))
    logits_a = extract_logits(out_a)
    del out_a
    with run_eval(model_b):
        out_b = model_b(**move_inputs(inputs, model_b))
    logits_b = extract_logits(out_b)
    del out_b

    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    return _compare(logits_a, logits_b, mask, atol)


def extract_logits(output: Any) -> torch.Tensor:
    """The logits tensor of a model output: `.logits`, `["logits"]`, a bare tensor, or `output[0]`."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"cannot find logits in a model output of type {type(output).__name__}: expected a tensor, "
            "a tuple starting with the logits, or an object with a 'logits' field"
        )
    return logits


def _compare(
    logits_a: torch.Tensor, logits_b: torch.Tensor, mask: Any, atol: float
) -> LogitReport:
    a = logits_a.detach().to(device="cpu", dtype=torch.float32)
    b = logits_b.detach().to(device="cpu", dtype=torch.float32)
    common = dict(
        shape_a=tuple(a.shape),
        shape_b=tuple(b.shape),
        dtype_a=str(logits_a.dtype).replace("torch.", ""),
        dtype_b=str(logits_b.dtype).replace("torch.", ""),
        atol=float(atol),
    )
    if a.dim() == 0 or b.dim() == 0:
        raise ValueError("logits must have at least one (vocabulary) dimension")
    if a.dim() == 1 and b.dim() == 1:  # a single position: give it a position axis
        a, b = a.unsqueeze(0), b.unsqueeze(0)

    # Positions are every index but the last (vocabulary) one.
    same_lead = a.shape[:-1] == b.shape[:-1]
    keep = _position_mask(mask, a.shape[:-1]) if same_lead else None
    n_positions = int(keep.sum()) if keep is not None else (int(math.prod(a.shape[:-1])) if same_lead else 0)

    greedy, first_mismatch = None, None
    if same_lead:
        greedy, first_mismatch = _greedy(a, b, keep)

    if a.shape != b.shape:
        return LogitReport(
            **common,
            max_abs_diff=math.inf,
            mean_abs_diff=math.inf,
            greedy_agreement=greedy,
            n_positions=n_positions,
            passed=False,
            first_greedy_mismatch=first_mismatch,
            message=f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}",
        )

    diff = _elementwise_abs_diff(a, b)
    if keep is not None:
        diff = diff[keep]  # (n_positions, vocab)
    if diff.numel() == 0:
        max_d, mean_d, worst = 0.0, 0.0, None
    else:
        max_d = float(diff.max())
        mean_d = float(diff.mean())
        worst = _worst_position(diff, keep, a.shape[:-1])
    passed = max_d <= atol
    if passed:
        message = f"logits agree (max |diff| {max_d:.3g} <= atol {atol:g})"
    elif math.isinf(max_d):
        message = "logits differ: non-finite values in one model where the other is finite"
    else:
        message = f"logits differ: max |diff| {max_d:.6g} > atol {atol:g}"
    return LogitReport(
        **common,
        max_abs_diff=max_d,
        mean_abs_diff=mean_d,
        greedy_agreement=greedy,
        n_positions=n_positions,
        passed=passed,
        worst_position=worst,
        first_greedy_mismatch=first_mismatch,
        message=message,
    )


def _position_mask(mask: Any, lead_shape: torch.Size) -> torch.Tensor | None:
    """A boolean (batch, seq) mask of positions to compare, or None to compare all of them."""
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(lead_shape):
        return None
    return mask.detach().to("cpu") != 0


def _greedy(
    a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None
) -> tuple[float | None, tuple[int, ...] | None]:
    agree = a.argmax(dim=-1) == b.argmax(dim=-1)
    if keep is not None:
        agree = agree | ~keep  # unmasked positions do not count as mismatches
        total = int(keep.sum())
        hits = int((agree & keep).sum())
    else:
        total = agree.numel()
        hits = int(agree.sum())
    mismatches = (~agree).nonzero()
    first = tuple(int(i) for i in mismatches[0]) if len(mismatches) else None
    return (hits / total if total else None), first


def _worst_position(diff: torch.Tensor, keep: torch.Tensor | None, lead_shape: torch.Size) -> tuple[int, ...]:
    per_position = diff.reshape(-1, diff.shape[-1]).amax(dim=-1)
    flat = int(per_position.argmax())
    if keep is not None:
        flat = int(keep.reshape(-1).nonzero()[flat])
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), tuple(lead_shape)))


def _elementwise_abs_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| in fp32, with equal values (including equal infinities) 0, both-NaN 0, and a NaN or
    infinity on one side only `inf`. Shapes must match."""
    a = a.to(torch.float32)
    b = b.to(torch.float32)
    diff = (a - b).abs()
    both_nan = torch.isnan(a) & torch.isnan(b)
    diff = torch.where((a == b) | both_nan, torch.zeros_like(diff), diff)
    return torch.nan_to_num(diff, nan=math.inf)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| in fp32 on CPU (see `_elementwise_abs_diff`); `inf` when the shapes differ."""
    if tuple(a.shape) != tuple(b.shape):
        return math.inf
    if a.numel() == 0:
        return 0.0
    a = a.detach()
    b = b.detach().to(a.device)
    return float(_elementwise_abs_diff(a, b).max())


def move_inputs(inputs: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """Copy of `inputs` with every tensor moved to the device of the model's first parameter
    (floating tensors keep their dtype: the model decides how to cast pixel values)."""
    device = next((p.device for p in model.parameters() if p.device.type != "meta"), None)
    if device is None:
        return dict(inputs)
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}


@contextmanager
def run_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad for the duration, restoring every submodule's training flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, flag in flags:
            module.training = flag
