"""Several evaluation processes (`accelerate launch`, DDP over gloo on the CPU) share one run.

The merged predictions.jsonl, unscored.jsonl and metrics.json equal a one-process run of the same
items (same records, same scores: with --batch-size 1 every item is computed alone either way, so
the scores agree exactly), whichever process ran each item. A run killed by SIGKILL half-way
through writing a record restarts and finishes with every item exactly once. The shard merge
itself is tested on files written by hand: duplicates, half-written lines, another process count.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from theworld.evaluation.benchmarks import load_jsonl
from theworld.evaluation.harness import METRICS, PREDICTIONS, UNSCORED, EvalSettings, evaluate
from theworld.evaluation.loading import load_model
from theworld.evaluation.outputs import SHARDS, merge_shards, read_records, shard_path
from theworld.testing.inputs import random_image

HERE = Path(__file__).resolve().parent
RUN_DEPENDENT = ("wall_time_s", "processes", "items_run", "items_resumed")  # how the run went, not what it found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    # Every process computes at this test process's thread count: scores are compared exactly, and
    # on some CPUs (MKL on a Xeon) the thread count changes a float sum's order (docs/parity.md).
    threads = str(torch.get_num_threads())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads, **extra}  # fmt: skip
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """11 items: choice items of 2 and 3 choices, one without an answer, numeric and clock questions."""
    folder = tmp_path_factory.mktemp("process_items")
    rows = []
    for i in range(8):
        choices = [["left", "right side"], ["yes", "no", "not sure at all"]][i % 2]
        rows.append({"id": f"c{i}", "question": "Which way does the ball move?", "choices": choices,
                     "answer": None if i == 5 else choices[i % 2], "category": f"cat{i % 3}"})  # fmt: skip
    rows.append({"id": "n0", "question": "How far apart are the ball and the wall?", "answer": "2 meters", "kind": "numeric"})
    rows.append({"id": "n1", "question": "How tall is the table?", "answer": "1.5 meters", "kind": "numeric"})
    rows.append({"id": "k0", "question": "Where is the ball, as a clock direction?", "answer": "3 o'clock", "kind": "clock"})
    for i, row in enumerate(rows):
        random_image(900 + i, size=40).save(folder / f"img{i}.png")
        row["image"] = f"img{i}.png"
    path = folder / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def eval_args(world_dir: str, data: Path, out: Path) -> list[str]:
    return ["eval", "--model", world_dir, "--benchmark", "jsonl", "--data", str(data), "--batch-size", "1",
            "--max-new-tokens", "4", "--output-dir", str(out)]  # fmt: skip


def launch(args: list[str], script: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """Two processes through `accelerate launch`, as a user starts them (CPU: DDP over gloo)."""
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               *(["-m", "theworld"] if script is None else [str(script)]), *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=_env(**env), timeout=300)


@pytest.fixture(scope="module")
def one_process(world_dir, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one_process") / "run"
    result = subprocess.run([sys.executable, "-m", "theworld", *eval_args(world_dir, data, out)], capture_output=True,
                            text=True, env=_env(), timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def assert_same_run(expected: Path, got: Path, resumed: bool = False) -> None:
    for name in (PREDICTIONS, UNSCORED):
        want = {r["id"]: r for r in read_records(expected / name)}
        lines = read_records(got / name)
        assert len(lines) == len({r["id"] for r in lines}), f"{name}: an item written twice"
        assert {r["id"]: r for r in lines} == want, name
    metrics = [json.loads((folder / METRICS).read_text()) for folder in (expected, got)]
    for m in metrics:
        for key in RUN_DEPENDENT + (("world", "world_tokens_seen") if resumed else ()):  # a resume counts its own part
            m.pop(key)
    assert metrics[0] == metrics[1]
    assert not (got / SHARDS).exists()


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(world_dir, data, one_process, tmp_path):
    out = tmp_path / "two"
    result = launch(eval_args(world_dir, data, out))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "accuracy" in result.stdout and "2 processes" in result.stdout
    assert_same_run(one_process, out)
    metrics = json.loads((out / METRICS).read_text())
    assert metrics["processes"] == 2 and metrics["items_run"] == 11
    assert metrics["world"]["forwards_with_world"] == 11  # one prefill per item, over both processes


@pytest.mark.slow
def test_a_run_killed_mid_write_restarts_without_losing_or_duplicating_an_item(world_dir, data, one_process, tmp_path):
    out = tmp_path / "killed"
    killed = launch(eval_args(world_dir, data, out), script=HERE / "killed_eval_worker.py",
                    THEWORLD_TEST_KILL_RANK="1", THEWORLD_TEST_KILL_AFTER="2")  # fmt: skip
    assert killed.returncode != 0
    cut = [p for p in (out / SHARDS).iterdir() if p.read_text().endswith('"predic')]
    assert len(cut) == 1 and ".rank1." in cut[0].name  # process 1 died inside a record
    assert not (out / METRICS).exists()

    resumed = launch(eval_args(world_dir, data, out))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    metrics = json.loads((out / METRICS).read_text())
    assert metrics["items_resumed"] >= 2 and metrics["items_run"] + metrics["items_resumed"] == 11
    assert_same_run(one_process, out, resumed=True)


# ------------------------------------------------------------------------------------------------
# the merge, on files written by hand


def test_merge_keeps_each_item_once_drops_half_lines_and_takes_any_process_count(tmp_path):
    def line(item_id: str, **fields) -> str:
        return json.dumps({"id": item_id, **fields}) + "\n"

    (tmp_path / PREDICTIONS).write_text(line("a", correct=True) + line("b", correct=False))
    (tmp_path / SHARDS).mkdir()
    shard_path(tmp_path, PREDICTIONS, 0).write_text(line("b", correct=False) + line("d", correct=True))  # b: merged before
    shard_path(tmp_path, PREDICTIONS, 2).write_text(line("c", correct=True) + '{"id": "e", "corr')  # a third process, cut
    shard_path(tmp_path, UNSCORED, 1).write_text(line("f", correct=None))
    order = {k: i for i, k in enumerate("abcdef")}
    assert merge_shards(tmp_path, order) == 3
    assert [r["id"] for r in read_records(tmp_path / PREDICTIONS)] == ["a", "b", "c", "d"]  # new ones in item order
    assert [r["id"] for r in read_records(tmp_path / UNSCORED)] == ["f"]
    assert not (tmp_path / SHARDS).exists()
    assert merge_shards(tmp_path, order) == 0  # nothing left to merge


def test_a_one_process_run_resumes_from_another_runs_shards(world_dir, data, one_process, tmp_path):
    """Shards of an interrupted 3-process run (some items done, one cut mid-line) resume in one process."""
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copy(one_process / "run.json", out / "run.json")
    done = read_records(one_process / PREDICTIONS)[:5]
    (out / SHARDS).mkdir()
    for rank in range(3):
        text = "".join(json.dumps(r) + "\n" for r in done[rank::3])
        shard_path(out, PREDICTIONS, rank).write_text(text + ('{"id": "c7", "pred' if rank == 2 else ""))
    model, processor = load_model(world_dir, "none")
    info = json.loads((out / "run.json").read_text())
    metrics = evaluate(load_jsonl(str(data)), model, processor, out, EvalSettings(batch_size=1, max_new_tokens=4),
                       info={k: v for k, v in info.items() if k not in ("control", "max_new_tokens")})  # fmt: skip
    assert metrics["items_resumed"] == 5 and metrics["items_run"] == 6
    assert_same_run(one_process, out, resumed=True)
