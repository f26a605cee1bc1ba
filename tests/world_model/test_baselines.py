"""Baselines for a rollout's latent prediction error, and the paired comparison against them."""

from __future__ import annotations

import torch

from theworld.world_model.baselines import MeanFuture, Ridge, compare, copy_last, per_clip_mse


def _linear_world(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    observed = torch.randn(n, 2, 2, 2, 2, generator=g)
    future = 0.5 * observed[:, :, 1:] - 0.25 * observed[:, :, :1] + 0.01 * torch.randn(n, 2, 1, 2, 2, generator=g)
    return observed, future


def test_copy_last_and_mean_future():
    observed, future = _linear_world(8, 0)
    assert torch.equal(copy_last(observed, 3), observed[:, :, -1:].repeat(1, 1, 3, 1, 1))
    mean = MeanFuture.fit(future)
    assert torch.allclose(mean(observed[:2])[0], future.mean(0))


def test_ridge_recovers_a_linear_future_and_picks_its_penalty_on_training_clips_only():
    observed, future = _linear_world(200, 0)
    ridge = Ridge.fit_validated(observed, future)
    test_obs, test_future = _linear_world(50, 1)
    assert per_clip_mse(ridge(test_obs), test_future).mean() < 1e-3
    assert ridge.penalty <= 1.0  # little noise: a small penalty wins on the validation part
    wide = Ridge.fit(observed[:5], future[:5], penalty=1.0)  # fewer clips than features: the dual form
    assert wide(test_obs).shape == test_future.shape


def test_compare_reports_a_paired_interval_and_who_is_better():
    target = torch.zeros(100, 1, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    good = 0.1 * torch.randn(100, 1, 1, 1, 1, generator=g)
    bad = good + 1.0
    result = compare(target, {"world_model": good, "baseline": bad}, "world_model", n_boot=500)
    vs = result["vs"]["baseline"]
    assert result["n"] == 100 and vs["better"] and vs["ci95"][1] < 0 < result["mse"]["baseline"]["mean"]
    assert not compare(target, {"world_model": bad, "baseline": good}, "world_model", n_boot=500)["vs"]["baseline"]["better"]
