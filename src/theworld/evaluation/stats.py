"""Uncertainty on small benchmarks (~130 items: +-8 points at 95%) and paired tests (bootstrap, exact McNemar)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# Bootstrap replicates are drawn in blocks so memory stays bounded (block * n indices).
_MAX_BLOCK_ELEMENTS = 4_000_000


class PairedDiff(NamedTuple):
    """Mean of a minus mean of b, with the bootstrap interval of that difference."""

    diff: float
    lo: float
    hi: float


def _as_array(values: Sequence[bool | float], name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {x.shape}")
    return x


def _paired(a: Sequence[bool | float], b: Sequence[bool | float]) -> tuple[np.ndarray, np.ndarray]:
    xa, xb = _as_array(a, "a"), _as_array(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"paired samples need equal lengths, got {xa.size} and {xb.size}")
    return xa, xb


def _bootstrap_means(columns: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of `columns` (k, n) over `n_boot` resamples of the items, the same for every column (paired)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n = columns.shape[1]
    rng = np.random.default_rng(seed)
    block = max(1, _MAX_BLOCK_ELEMENTS // n)
    out = np.empty((n_boot, columns.shape[0]), dtype=np.float64)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = columns[:, idx].mean(axis=2).T
    return out


def _interval(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    lo, hi = np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def bootstrap_ci(
    correct: Sequence[bool | float], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval (1 - alpha) of the mean of per-item scores."""
    x = _as_array(correct, "correct")
    means = _bootstrap_means(x[None, :], n_boot, seed)[:, 0]
    return _interval(means, alpha)


def paired_bootstrap(
    a: Sequence[bool | float], b: Sequence[bool | float], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> PairedDiff:
    """Difference of means a - b on the same items, with a paired bootstrap interval."""
    xa, xb = _paired(a, b)
    means = _bootstrap_means(np.stack([xa, xb]), n_boot, seed)
    lo, hi = _interval(means[:, 0] - means[:, 1], alpha)
    return PairedDiff(float(xa.mean() - xb.mean()), lo, hi)


def mcnemar(a: Sequence[bool | float], b: Sequence[bool | float]) -> float:
    """Two-sided exact McNemar p-value: p = min(1, 2 P[X <= min(n01, n10)]), X ~ Bin(n01 + n10, 1/2)."""
    xa, xb = _paired(a, b)
    for name, x in (("a", xa), ("b", xb)):
        if not np.all((x == 0.0) | (x == 1.0)):
            raise ValueError(f"{name}: McNemar's test needs right/wrong (0/1) outcomes")
    xa, xb = xa.astype(bool), xb.astype(bool)
    only_a = int(np.sum(xa & ~xb))
    only_b = int(np.sum(~xa & xb))
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)
