"""`theworld demo` end to end at a tiny budget: every output is written and well formed."""

from __future__ import annotations

import json

import pytest

from theworld.cli.main import main
from theworld.demo.pipeline import DemoConfig
from theworld.errors import TheWorldUserError


TINY_MOTION = ["--n-train", "16", "--n-heldout", "8", "--total-steps", "4", "--batch-size", "4"]
TINY_FORECAST = dict(n_unlabelled=12, n_train=6, n_heldout=6, dit_steps=2, rollout_steps=2, total_steps=2, batch_size=2,
                     n_boot=20, picture_decoder_steps=2)  # fmt: skip


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    code = main(["demo", "--output-dir", str(out), *TINY_MOTION, "--skip-forecast"])
    assert code == 0
    return out


def test_results_json_has_every_system_with_interval(demo_dir):
    results = json.loads((demo_dir / "results.json").read_text())
    assert set(results["systems"]) == {"gemma_control", "theworld", "theworld_zero_world"}
    for system in results["systems"].values():
        lo, hi = system["ci95"]
        assert 0.0 <= lo <= system["accuracy"] <= hi <= 1.0 and system["n"] == 8
    assert set(results["paired"]) == {"theworld_vs_gemma_control", "theworld_vs_theworld_zero_world"}
    assert [s["stage"] for s in results["training"]["theworld"]] == ["align", "finetune"]
    assert results["training"]["theworld"][1]["steps"][-1] == 4  # align 1 + finetune 3 = the control's 4 steps
    assert results["training"]["gemma_control"][0]["steps"][-1] == 4


def test_report_and_plot_written(demo_dir):
    report = (demo_dir / "report.md").read_text()
    assert "theworld_zero_world" in report and "demo.png" in report
    assert (demo_dir / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_world_runs_really_saw_world_tokens(demo_dir):
    for system, expected in (("theworld", True), ("theworld_zero_world", True), ("gemma_control", False)):
        metrics = json.loads((demo_dir / "eval" / system / "metrics.json").read_text())
        assert (metrics["world_tokens_seen"] > 0) is expected, system


def test_demo_refuses_a_non_empty_folder(demo_dir):
    assert main(["demo", "--output-dir", str(demo_dir)]) == 2


def test_demo_config_validation():
    with pytest.raises(TheWorldUserError, match="align_fraction"):
        DemoConfig(align_fraction=1.5)
    with pytest.raises(TheWorldUserError, match="--cosmos-model-name"):
        DemoConfig(model_name_or_path="google/gemma-3-4b-it")


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--n-train", "0"], "--n-train"),
        (["--n-train", "6"], "--n-train"),
        (["--n-heldout", "0"], "--n-heldout"),
        (["--total-steps", "1"], "--total-steps"),
        (["--align-fraction", "1.0"], "--align-fraction"),
        (["--total-steps", "2", "--align-fraction", "0.9"], "--align-fraction"),
        (["--batch-size", "0"], "--batch-size"),
        (["--learning-rate", "-1"], "--learning-rate"),
        (["--tasks", "direction,sideways"], "--tasks"),
        (["--world-image-size", "60"], "--world-image-size"),
        (["--world-tokens-per-frame", "15"], "--world-tokens-per-frame"),
        (["--threads", "0"], "--threads"),
        (["--seed", "-1"], "--seed"),
        (["--model", "google/gemma-3-4b-it"], "--cosmos-model-name"),
    ],
)
def test_demo_checks_every_flag_before_writing_anything(tmp_path, capsys, flags, named):
    out = tmp_path / "run"
    assert main(["demo", "--output-dir", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert f"theworld demo: error: {named}" in err, err
    assert not out.exists()


def test_demo_names_the_output_dir_flag(tmp_path, capsys):
    (tmp_path / "kept.txt").write_text("x")
    assert main(["demo", "--output-dir", str(tmp_path)]) == 2
    assert "theworld demo: error: --output-dir" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


@pytest.mark.slow
def test_default_demo_runs_both_tasks_side_by_side_with_the_numbers_of_one_alone(demo_dir, tmp_path):
    config = tmp_path / "forecast.json"
    config.write_text(json.dumps(TINY_FORECAST))
    out = tmp_path / "both"
    assert main(["demo", "--output-dir", str(out), *TINY_MOTION, "--forecast-config", str(config)]) == 0
    both, alone = (json.loads((d / "results.json").read_text()) for d in (out, demo_dir))
    # the direction/approach task ran in a worker process: the same numbers as run alone in this one
    assert both["systems"] == alone["systems"] and both["paired"] == alone["paired"]
    assert [h["loss"] for h in both["training"]["theworld"]] == [h["loss"] for h in alone["training"]["theworld"]]
    forecast = json.loads((out / "forecast" / "results.json").read_text())
    assert set(forecast["systems"]) == {"theworld", "theworld_rollout", "theworld_oracle_future"}
    assert forecast["config"]["n_train"] == 6 and forecast["config"]["eval_split"] == "heldout"
    timings = json.loads((out / "demo_timings.json").read_text())
    assert timings["workers"] == 2 and set(timings["tasks"]) == {"direction/approach task", "forecast task"}
    assert "forecast/report.md" in (out / "report.md").read_text()


def test_forecast_config_file_unknown_field_is_named(tmp_path, capsys):
    config = tmp_path / "forecast.json"
    config.write_text(json.dumps({"n_train": 6, "dit_stepz": 2}))
    assert main(["demo", "--output-dir", str(tmp_path / "run"), "--forecast-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "--forecast-config" in err and "dit_stepz" in err and not (tmp_path / "run").exists()
