"""The demo's forecast task at toy size: three systems trained and evaluated end to end."""

from __future__ import annotations

import json

import pytest

from theworld.demo.forecast import FORECAST_SYSTEMS, ForecastDemoConfig, run_forecast_demo
from theworld.errors import TheWorldUserError


@pytest.mark.slow
def test_forecast_demo_runs_three_systems_end_to_end(tmp_path):
    config = ForecastDemoConfig(output_dir=str(tmp_path / "demo"), n_unlabelled=12, n_train=6, n_heldout=6, dit_steps=2,
                                rollout_steps=2, total_steps=2, batch_size=2, n_boot=20,
                                picture_decoder_steps=2, vae_steps=2)  # fmt: skip
    results = run_forecast_demo(config)
    # no labelled train clip is a held-out clip (the seed streams differ)
    frames = {split: {p.read_bytes() for p in (tmp_path / "demo" / "data" / split / "frames").glob("*_0.png")}
              for split in ("train", "heldout")}  # fmt: skip
    assert len(frames["train"]) == len(frames["heldout"]) == 6 and not frames["train"] & frames["heldout"]
    assert set(results["systems"]) == set(FORECAST_SYSTEMS)
    assert results["world_model"]["vae_loss_first10"] > 0  # vae_steps=2: the VAE trained before encoding
    assert all(m["n"] == 6 and 0 <= m["accuracy"] <= 1 for m in results["systems"].values())
    assert set(results["paired"]) == {"theworld_rollout_vs_theworld", "theworld_oracle_future_vs_theworld",
                                      "theworld_oracle_future_vs_theworld_rollout"}  # fmt: skip
    tokens = {}
    for system in FORECAST_SYSTEMS:
        rows = [json.loads(line) for line in (tmp_path / "demo" / "eval" / system / "predictions.jsonl").read_text().splitlines()]
        tokens[system] = {r["world_tokens"] for r in rows}
    # 9 observed frames = 3 latent frames; K = 2 imagined (or true future) frames; 16 tokens each
    assert tokens == {"theworld": {3 * 16}, "theworld_rollout": {5 * 16}, "theworld_oracle_future": {5 * 16}}
    assert "| theworld_rollout |" in (tmp_path / "demo" / "report.md").read_text()
    # the oracle holds the true futures, differs from the DiT's imagination, and was what it read
    oracle = results["oracle"]
    assert oracle["max_abs_oracle_minus_truth"] == 0 and oracle["mse_truth_vs_imagined"] > 1e-4
    assert oracle["items_looked_up"] == 6
    # the picture: decoded by the demo's VAE, one block of rows per kind of clip found in the held-out split
    assert (tmp_path / "demo" / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["picture"]["decoder_steps"] == 2 and results["picture"]["future_mae_imagined_decoded"] > 0


def test_bad_sizes_are_refused():
    with pytest.raises(TheWorldUserError, match="multiple of 6"):
        ForecastDemoConfig(n_train=7)


def test_validation_split_and_system_subset(tmp_path):
    with pytest.raises(TheWorldUserError, match="vae_steps must be >= 0, got -1"):
        ForecastDemoConfig(vae_steps=-1)
    with pytest.raises(TheWorldUserError, match="eval_split"):
        ForecastDemoConfig(eval_split="test")
    with pytest.raises(TheWorldUserError, match="systems"):
        ForecastDemoConfig(systems=("theworld", "gemma_control"))
