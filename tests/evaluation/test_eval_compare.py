"""`theworld compare`: tables, paired statistics on common items, plot, and stale-run errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from theworld.cli.main import main
from theworld.errors import TheWorldUserError
from theworld.evaluation.compare import compare_pair, load_run


def _write_run(folder: Path, correct: dict[str, bool], model: str, control: str = "none", **metrics: object) -> Path:
    folder.mkdir(parents=True)
    lines = [
        json.dumps({"id": i, "prediction": "p", "target": "t", "correct": c, "scores": {"x": 1}})
        for i, c in correct.items()
    ]
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    acc = sum(correct.values()) / len(correct)
    record = {"accuracy": acc, "n": len(correct), "ci95": [acc - 0.1, acc + 0.1], "control": control, "model": model}
    record.update(metrics)
    (folder / "metrics.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def _pairs_table(tmp_path: Path) -> tuple[Path, Path]:
    ids = [f"q{i}" for i in range(16)]
    # on the 16 common items: 1 right only in A, 7 right only in B, 5 both, 3 neither
    a = dict(zip(ids, [True] + [False] * 7 + [True] * 5 + [False] * 3, strict=True))
    b = dict(zip(ids, [False] + [True] * 7 + [True] * 5 + [False] * 3, strict=True))
    a["only-in-a"] = True
    return _write_run(tmp_path / "gemma", a, "gemma-3-4b-it"), _write_run(tmp_path / "world", b, "theworld", "shuffled")


def test_compare_cli_writes_tables_and_plot(tmp_path: Path) -> None:
    run_a, run_b = _pairs_table(tmp_path)
    report = tmp_path / "report" / "compare.md"
    assert main(["compare", str(run_a), str(run_b), "--output", str(report), "--n-boot", "500"]) == 0
    text = report.read_text(encoding="utf-8")
    assert "| gemma | gemma-3-4b-it | none | 41.2 | [31.2, 51.2] | 17 |" in text
    assert "| world | theworld | shuffled | 75.0 | [65.0, 85.0] | 16 |" in text
    # paired row: 16 common items, A 37.5%, B 75.0%, diff -37.5 pts, McNemar p = 0.0703
    row = next(line for line in text.splitlines() if line.startswith("| gemma | world |"))
    assert "| 16 | 37.5 | 75.0 | -37.5 |" in row and row.endswith("| 0.0703 |")
    png = report.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![accuracy with 95% CI](compare.png)" in text


def test_compare_pair_matches_stats(tmp_path: Path) -> None:
    run_a, run_b = _pairs_table(tmp_path)
    pair = compare_pair(load_run(run_a), load_run(run_b), n_boot=500)
    assert pair is not None and pair.n == 16
    assert pair.diff == pytest.approx(-0.375) and pair.lo < -0.375 < pair.hi < 0
    assert pair.p_mcnemar == pytest.approx(0.0703125)


def test_stale_metrics_and_missing_files_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    stale = _write_run(tmp_path / "stale", {"a": True, "b": False}, "m", accuracy=0.9)
    with pytest.raises(TheWorldUserError, match="stale or truncated"):
        load_run(stale)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(empty), "--output", str(tmp_path / "r.md")]) == 2
    assert "predictions.jsonl: missing" in capsys.readouterr().err


def test_missing_ci_is_bootstrapped_and_bad_correct_rejected(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "r", {f"q{i}": i % 2 == 0 for i in range(40)}, "m", ci95=None)
    lo, hi = load_run(run).ci95
    assert lo < 0.5 < hi
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "predictions.jsonl").write_text('{"id": "a", "correct": "yes"}\n', encoding="utf-8")
    (bad / "metrics.json").write_text('{"accuracy": 1.0, "n": 1}', encoding="utf-8")
    with pytest.raises(TheWorldUserError, match=r"predictions\.jsonl:1: 'correct'"):
        load_run(bad)
