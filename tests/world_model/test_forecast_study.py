"""The demo's world-model study runs end to end at a toy budget and reports errors and timings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from theworld.errors import TheWorldUserError
from theworld.world_model.forecast_study import ForecastStudyConfig, run_forecast_study

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def test_study_reports_errors_against_the_three_baselines_and_timings(tmp_path):
    config = ForecastStudyConfig(
        output_dir=str(tmp_path / "study"), eval_split="validation", n_unlabelled=12, n_eval=6, observed_frames=5,
        future_frames=4, vae_steps=1, vae_batch_size=2, vae_clips=6, dit_steps=2, dit_batch_size=4, rollout_steps=2,
        threads=None,
    )  # fmt: skip
    results = run_forecast_study(config)
    errors = results["errors"]["all"]
    assert errors["n"] == 6 and set(errors["mse"]) == {"world_model", "copy_last", "mean_future", "ridge"}
    assert set(errors["vs"]) == {"copy_last", "mean_future", "ridge"}
    assert isinstance(results["errors"]["beats_all_baselines"], bool)
    assert set(results["timings"]) == {"data", "vae_training", "encode_clips", "dit_training", "rollouts",
                                       "baselines_and_errors"}  # fmt: skip
    assert all(t["wall_s"] >= 0 and t["cpu_s"] >= 0 for t in results["timings"].values())
    saved = json.loads((tmp_path / "study" / "results.json").read_text())
    assert saved["config"]["n_unlabelled"] == 12
    assert (tmp_path / "study" / "models" / "world_model" / "transformer").is_dir()

    sys.path.insert(0, str(BENCH_DIR))
    import world_model_forecast

    table = world_model_forecast.error_table(results["errors"])
    assert table.count("\n") >= 2 and "copy-last" in table
    with pytest.raises(TheWorldUserError, match="output_dir: .* is not an empty folder"):
        run_forecast_study(config)
