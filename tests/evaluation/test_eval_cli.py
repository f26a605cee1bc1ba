"""`theworld eval` end to end on the tiny model: output files and keys, resuming, user errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from theworld.cli.main import main
from theworld.testing.inputs import random_image

PREDICTION_KEYS = {"id", "kind", "category", "prediction", "target", "correct", "scores", "world_tokens"}
METRIC_KEYS = {"accuracy", "n", "ci95", "per_category", "unjudged", "model", "control", "benchmark", "data",
               "settings", "wall_time_s", "world_tokens_seen", "world"}  # fmt: skip


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    random_image(seed, size=32).save(buf, format="PNG")
    return buf.getvalue()


def write_qa(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(3):
        (folder / f"q{i}.png").write_bytes(_png(300 + i))
        rows.append({"id": f"q{i}", "question": "Is the ball left of the square?", "choices": ["yes", "no"],
                     "answer": ["yes", "no"][i % 2], "image": f"q{i}.png", "category": "left"})  # fmt: skip
    path = folder / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_blink(path: Path, answers: list[str]) -> Path:
    """BLINK's published parquet layout: idx, question, sub_task, image_1..4 ({bytes, path} or null),
    choices, answer "(A)", prompt."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [("idx", pa.string()), ("question", pa.string()), ("sub_task", pa.string())]
        + [(f"image_{k}", image) for k in range(1, 5)]
        + [("choices", pa.list_(pa.string())), ("answer", pa.string()), ("prompt", pa.string())]
    )
    rows = [
        {"idx": f"val_Relative_Depth_{i + 1}", "question": "Which point is closer to the camera?",
         "sub_task": "Relative_Depth", "image_1": {"bytes": _png(400 + i), "path": f"d{i}.png"},
         "image_2": None, "image_3": None, "image_4": None, "choices": ["A", "B"], "answer": answer,
         "prompt": "Which point is closer to the camera?\nSelect from the following choices.\n(A) A\n(B) B"}
        for i, answer in enumerate(answers)
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def eval_args(model: str, benchmark: str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--model", model, "--benchmark", benchmark, "--data", str(data), "--output-dir", str(out), *extra]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_cli_writes_predictions_and_metrics_and_resumes(world_dir, tmp_path, capsys):
    data = write_qa(tmp_path / "data")
    out = tmp_path / "run"
    assert main(eval_args(world_dir, "jsonl", data, out, "--limit", "2", "--batch-size", "4")) == 0
    assert "jsonl [none]: accuracy" in capsys.readouterr().out
    assert main(eval_args(world_dir, "jsonl", data, out, "--batch-size", "4")) == 0  # resumes: one more item
    predictions = lines(out / "predictions.jsonl")
    assert [p["id"] for p in predictions] == ["q0", "q1", "q2"]
    for record in predictions:
        assert PREDICTION_KEYS <= set(record)
        assert set(record["scores"]) == {"yes", "no"} and record["world_tokens"] == 16
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert METRIC_KEYS <= set(metrics)
    assert metrics["n"] == 3 and metrics["items_run"] == 1 and metrics["items_resumed"] == 2
    assert metrics["model"] == world_dir and metrics["control"] == "none" and metrics["benchmark"] == "jsonl"
    assert metrics["accuracy"] == pytest.approx(sum(p["correct"] for p in predictions) / 3)
    assert metrics["per_category"]["left"]["n"] == 3


def test_cli_blink_format_under_world_off(world_dir, tmp_path):
    data = write_blink(tmp_path / "blink" / "val-00000-of-00001.parquet", ["(A)", "(B)", "(B)"])
    out = tmp_path / "blink-off"
    assert main(eval_args(world_dir, "blink-relative-depth", data, out, "--control", "world-off")) == 0
    predictions = lines(out / "predictions.jsonl")
    assert [p["target"] for p in predictions] == ["A", "B", "B"]
    assert all(p["world_tokens"] == 0 and p["category"] == "Relative_Depth" for p in predictions)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["control"] == "world-off" and metrics["world_tokens_seen"] == 0 and metrics["n"] == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--benchmark": "blink-depth"}, "unknown benchmark 'blink-depth'"),
        ({"--data": "{tmp}/missing.jsonl"}, "missing.jsonl: no such file or folder"),
        ({"--model": "{tmp}/no-model"}, "model not found: {tmp}/no-model"),
        ({"--control": "no-world"}, "unknown control 'no-world'"),
        ({"--judge-url": "http://127.0.0.1:9/v1"}, "--judge-url and --judge-model go together"),
    ],
)
def test_cli_user_errors_exit_2_naming_the_problem(world_dir, tmp_path, capsys, change, message):
    data = write_qa(tmp_path / "data")
    args = {"--model": world_dir, "--benchmark": "jsonl", "--data": str(data), "--output-dir": str(tmp_path / "o")}
    args.update({k: v.format(tmp=tmp_path) for k, v in change.items()})
    argv = ["eval"] + [part for pair in args.items() for part in pair]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and err.startswith("theworld eval: error:")
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_cli_unreadable_image_is_an_error_naming_the_item(world_dir, tmp_path, capsys):
    data = write_qa(tmp_path / "data")
    (tmp_path / "data" / "q1.png").write_bytes(b"not a png")
    assert main(eval_args(world_dir, "jsonl", data, tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "q1" in err and "Traceback" not in err


def test_cli_mistyped_relative_model_folder_is_named_not_looked_up_on_the_hub(world_dir, tmp_path, capsys, monkeypatch):
    """'data/no-model' next to an existing ./data is a missing folder, not the Hub repo 'data/no-model'."""
    data = write_qa(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert main(eval_args("data/no-model", "jsonl", data, tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "model not found: data/no-model (no such folder" in err and "connect" not in err
