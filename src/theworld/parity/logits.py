"""Compare the logits of two models that should agree (a subclass and its parent, one checkpoint
loaded two ways or under two library versions); the helpers at the bottom serve `divergence.py` too."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["LogitReport", "compare_logits", "extract_logits", "max_abs_diff"]


@dataclass
class LogitReport:
    """How far apart two models' logits are, in fp32 over the compared positions (those with
    `attention_mask == 1` when the inputs carry one); `inf` when the shapes differ or one side alone
    is non-finite. `greedy_agreement` is None when even the leading dimensions differ."""

    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    dtype_a: str
    dtype_b: str
    atol: float
    max_abs_diff: float = math.inf
    mean_abs_diff: float = math.inf
    greedy_agreement: float | None = None
    n_positions: int = 0
    passed: bool = False
    worst_position: tuple[int, ...] | None = None
    first_greedy_mismatch: tuple[int, ...] | None = None
    message: str = ""

    @property
    def shape_match(self) -> bool:
        return self.shape_a == self.shape_b


def compare_logits(model_a: nn.Module, model_b: nn.Module, inputs: Mapping[str, Any], atol: float = 0.0) -> LogitReport:
    """Run both models on `inputs` (eval mode, no grad, flags restored) and compare in fp32; passes
    when shapes match, non-finite values sit in the same places and `max_abs_diff <= atol`. A shape
    mismatch is a failed comparison, never an exception."""
    raw = [extract_logits(run_forward(model, inputs)) for model in (model_a, model_b)]
    a, b = (x.detach().to(device="cpu", dtype=torch.float32) for x in raw)
    if a.dim() == 0 or b.dim() == 0:
        raise ValueError("logits must have at least one (vocabulary) dimension")
    if a.dim() == 1 and b.dim() == 1:  # a single position: give it a position axis
        a, b = a[None], b[None]
    shapes = (tuple(a.shape), tuple(b.shape))
    report = LogitReport(*shapes, *map(dtype_name, raw), atol=float(atol), message=f"shape mismatch: {shapes[0]} vs {shapes[1]}")
    lead = a.shape[:-1]  # positions: every index but the last (vocabulary) one
    if lead != b.shape[:-1]:
        return report
    mask = inputs.get("attention_mask")
    masked = isinstance(mask, torch.Tensor) and tuple(mask.shape) == tuple(lead)
    keep = mask.detach().cpu() != 0 if masked else torch.ones(lead, dtype=torch.bool)
    report.n_positions = int(keep.sum())
    agree = a.argmax(-1) == b.argmax(-1)
    report.greedy_agreement = int((agree & keep).sum()) / report.n_positions if report.n_positions else None
    mismatches = (~agree & keep).nonzero()
    report.first_greedy_mismatch = tuple(int(i) for i in mismatches[0]) if len(mismatches) else None
    if a.shape != b.shape:
        return report
    diff = _elementwise_abs_diff(a, b)[keep]  # (n_positions, vocab)
    report.max_abs_diff = float(diff.max()) if diff.numel() else 0.0
    report.mean_abs_diff = float(diff.mean()) if diff.numel() else 0.0
    if diff.numel():
        report.worst_position = tuple(int(i) for i in keep.nonzero()[int(diff.amax(-1).argmax())])
    report.passed = report.max_abs_diff <= atol
    if report.passed:
        report.message = f"logits agree (max |diff| {report.max_abs_diff:.3g} <= atol {atol:g})"
    elif math.isinf(report.max_abs_diff):
        report.message = "logits differ: non-finite values in one model where the other is finite"
    else:
        report.message = f"logits differ: max |diff| {report.max_abs_diff:.6g} > atol {atol:g}"
    return report


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


def _elementwise_abs_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| in fp32: equal values (equal infinities too) and both-NaN 0, a NaN or infinity on one side `inf`."""
    a, b = a.to(torch.float32), b.to(torch.float32)
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    return torch.nan_to_num(torch.where(same, torch.zeros_like(a), (a - b).abs()), nan=math.inf)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| in fp32 (see `_elementwise_abs_diff`); `inf` when the shapes differ."""
    if tuple(a.shape) != tuple(b.shape):
        return math.inf
    return float(_elementwise_abs_diff(a.detach(), b.detach().to(a.device)).max()) if a.numel() else 0.0


def dtype_name(value: torch.Tensor | torch.dtype | None) -> str | None:
    """`float32` for a tensor or dtype of torch.float32; None for None."""
    dtype = value.dtype if isinstance(value, torch.Tensor) else value
    return None if dtype is None else str(dtype).removeprefix("torch.")


def run_forward(model: nn.Module, inputs: Mapping[str, Any]) -> Any:
    """The model's output on `inputs`, tensors moved to its first parameter's device (dtypes kept: the
    model casts pixel values), in eval mode without grad; every submodule's training flag is restored."""
    flags = [(m, m.training) for m in model.modules()]
    device = next((p.device for p in model.parameters() if p.device.type != "meta"), None)
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) and device is not None else v for k, v in inputs.items()}
    model.eval()
    try:
        with torch.no_grad():
            return model(**moved)
    finally:
        for module, flag in flags:
            module.training = flag
