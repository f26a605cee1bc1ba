"""How good is a world model's rollout? Its latent prediction error against three baselines.

A rollout is only worth its cost if it predicts the future better than cheap guesses made from the
same observed latents:

- copy-last: the last observed latent frame, repeated (weak on its own: any fixed frame-to-frame
  offset, e.g. of the VAE's causal first frame, dominates it);
- mean-future: the training clips' mean future latents (what a DiT that learned nothing of the
  motion converges to);
- ridge: a linear map from the flattened observed latents to the future ones, fitted on the
  training clips; its penalty is picked on a validation part of the *training* clips, never on
  the held-out ones.

Errors are mean squared errors per clip over the normalised future latents; `compare` gives each
predictor's mean with a bootstrap 95% interval and paired bootstrap intervals of the world
model's error minus each baseline's (negative = the world model is better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from theworld.evaluation.stats import bootstrap_ci, paired_bootstrap

RIDGE_PENALTIES = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def copy_last(observed: torch.Tensor, frames: int) -> torch.Tensor:
    """(N, C, To, h, w) -> (N, C, K, h, w): the last observed frame K times."""
    return observed[:, :, -1:].expand(-1, -1, frames, -1, -1)


@dataclass
class MeanFuture:
    mean: torch.Tensor  # (1, C, K, h, w)

    @classmethod
    def fit(cls, future: torch.Tensor) -> MeanFuture:
        return cls(future.mean(0, keepdim=True))

    def __call__(self, observed: torch.Tensor) -> torch.Tensor:
        return self.mean.expand(observed.shape[0], -1, -1, -1, -1)


@dataclass
class Ridge:
    """future = observed @ W + b on flattened latents, W by ridge regression (solved in the
    smaller of the primal and dual forms)."""

    weight: torch.Tensor  # (D_in, D_out)
    bias: torch.Tensor  # (D_out,)
    x_mean: torch.Tensor  # (D_in,)
    future_shape: tuple[int, ...]
    penalty: float

    @classmethod
    def fit(cls, observed: torch.Tensor, future: torch.Tensor, penalty: float) -> Ridge:
        x = observed.flatten(1).double()
        y = future.flatten(1).double()
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc, yc = x - x_mean, y - y_mean
        n, d = xc.shape
        if d <= n:
            weight = torch.linalg.solve(xc.T @ xc + penalty * torch.eye(d, dtype=x.dtype), xc.T @ yc)
        else:
            weight = xc.T @ torch.linalg.solve(xc @ xc.T + penalty * torch.eye(n, dtype=x.dtype), yc)
        return cls(weight.float(), y_mean.float(), x_mean.float(), tuple(future.shape[1:]), penalty)

    @classmethod
    def fit_validated(
        cls, observed: torch.Tensor, future: torch.Tensor, penalties=RIDGE_PENALTIES, validation_fraction: float = 0.2,
        seed: int = 0,
    ) -> Ridge:  # fmt: skip
        """Pick the penalty on a held-back part of the training clips, then refit on all of them."""
        n = observed.shape[0]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        cut = max(1, int(round(n * validation_fraction)))
        val, fit = order[:cut], order[cut:]
        errors = {}
        for penalty in penalties:
            model = cls.fit(observed[fit], future[fit], penalty)
            errors[penalty] = float((model(observed[val]) - future[val]).pow(2).mean())
        best = min(errors, key=errors.get)
        return cls.fit(observed, future, best)

    def __call__(self, observed: torch.Tensor) -> torch.Tensor:
        x = observed.flatten(1).float() - self.x_mean
        return (x @ self.weight + self.bias).view(observed.shape[0], *self.future_shape)


def per_clip_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(1)


def compare(
    target: torch.Tensor, predictions: dict[str, torch.Tensor], reference: str, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Per-predictor MSE (mean, 95% CI) and `reference` minus each other predictor (paired 95% CI)."""
    errors = {name: per_clip_mse(p, target).numpy() for name, p in predictions.items()}
    out: dict[str, Any] = {"n": int(target.shape[0]), "mse": {}, "vs": {}}
    for name, values in errors.items():
        lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
        out["mse"][name] = {"mean": float(values.mean()), "ci95": [lo, hi]}
    for name, values in errors.items():
        if name != reference:
            diff = paired_bootstrap(errors[reference], values, n_boot=n_boot, seed=seed)
            out["vs"][name] = {"diff": diff.diff, "ci95": [diff.lo, diff.hi], "better": diff.hi < 0}
    return out
