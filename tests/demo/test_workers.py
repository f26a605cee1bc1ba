"""`theworld.demo.workers`: the shared output-folder preamble and jobs run side by side."""

from __future__ import annotations

import operator

import pytest
import torch

from theworld.demo.workers import WorkerError, fresh_output_dir, run_jobs
from theworld.errors import TheWorldUserError


def test_fresh_output_dir_creates_an_empty_folder_and_sets_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        out = fresh_output_dir(tmp_path / "a" / "b", "--output-dir", 1)
        assert out.is_dir() and not any(out.iterdir()) and torch.get_num_threads() == 1
        assert fresh_output_dir(out, "--output-dir", None) == out  # empty: accepted again
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("make", ["folder", "file"])
def test_fresh_output_dir_refuses_what_holds_anything_naming_the_flag(tmp_path, make):
    path = tmp_path / "run"
    if make == "folder":
        path.mkdir()
        (path / "old.json").write_text("{}")
    else:
        path.write_text("x")
    with pytest.raises(TheWorldUserError, match=r"^output_dir: .*run is not an empty folder"):
        fresh_output_dir(path, "output_dir", None)


@pytest.mark.parametrize("workers", [1, 2])
def test_run_jobs_returns_each_result_with_its_times(workers):
    results = run_jobs({"a": (operator.add, (1, 2)), "b": (operator.mul, (3, 4))}, workers)
    assert {name: r["result"] for name, r in results.items()} == {"a": 3, "b": 12}
    assert all(r["wall_s"] >= 0 and r["cpu_s"] >= 0 for r in results.values())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_is_named(workers):
    jobs = {"theworld": (operator.add, (1, 2)), "theworld_rollout": (operator.truediv, (1, 0))}
    with pytest.raises(WorkerError, match="^theworld_rollout failed: ZeroDivisionError") as info:
        run_jobs(jobs, workers)
    assert isinstance(info.value.__cause__, ZeroDivisionError)  # the worker's own error (and traceback) kept


def test_a_user_error_in_a_worker_stays_a_user_error(tmp_path):
    (tmp_path / "kept.txt").write_text("x")
    jobs = {"forecast task": (fresh_output_dir, (str(tmp_path), "--output-dir", None)), "other": (operator.neg, (1,))}
    with pytest.raises(TheWorldUserError, match="^forecast task failed: TheWorldUserError: --output-dir: "):
        run_jobs(jobs, 2)


def test_workers_must_be_positive():
    with pytest.raises(TheWorldUserError, match="workers"):
        run_jobs({"a": (operator.neg, (1,))}, 0)
