"""What the demo's runs share: a fresh output folder, and independent jobs run side by side.

Every demo run is single-threaded (one torch thread) so that its numbers repeat run after run on
one machine. The machines have two cores, so independent jobs (the two tasks of `theworld demo`)
run in separate processes at the same time, each on one thread: the same code path and the same
numbers as one after the other, in about half the wall time.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """A job failed on something other than bad input; the message names the job, the cause keeps
    the worker's traceback."""


def _named(name: str, err: BaseException) -> Exception:
    """The job's error, its message prefixed with the job's name; a user error stays a user error."""
    message = f"{name} failed: {type(err).__name__}: {err}"
    return TheWorldUserError(message) if isinstance(err, TheWorldUserError) else WorkerError(message)


def fresh_output_dir(path: str | Path, flag: str, threads: int | None) -> Path:
    """Set the torch thread count, refuse a folder that holds anything, create it.

    `flag` is how the caller's user names the folder (`--output-dir`, `output_dir`): a run starts
    from scratch, so old files can never be mistaken for its results."""
    if threads is not None:
        torch.set_num_threads(threads)
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TheWorldUserError(f"{flag}: {out} is not an empty folder: the run starts from scratch (remove it or pick another)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def timed(function: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """`function(*args)` with the wall and CPU seconds of the process it ran in."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return {"result": result, "wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1)}


def run_jobs(jobs: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]], workers: int) -> dict[str, dict[str, Any]]:
    """Run each named job `function(*args)`; job name -> `timed`'s dict.

    workers > 1: a pool of spawned processes (functions and arguments must pickle; each function
    sets its own thread count). workers == 1: one after the other in this process. A failure is
    raised naming the job (a `TheWorldUserError` stays one, anything else is a `WorkerError`), after
    the jobs already running finish and the others are cancelled."""
    if workers < 1:
        raise TheWorldUserError(f"workers must be positive, got {workers}")
    if workers == 1:
        results = {}
        for name, (function, args) in jobs.items():
            try:
                results[name] = timed(function, *args)
            except Exception as err:
                raise _named(name, err) from err
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = {name: pool.submit(timed, function, *args) for name, (function, args) in jobs.items()}
        wait(futures.values(), return_when=FIRST_EXCEPTION)
        failed = [name for name, future in futures.items() if future.done() and future.exception() is not None]
        if failed:  # the pool waits for jobs already running, then the first failure is raised
            pool.shutdown(wait=True, cancel_futures=True)
            err = futures[failed[0]].exception()
            raise _named(failed[0], err) from err
        results = {name: future.result() for name, future in futures.items()}
    for name, timing in results.items():
        logger.info("%s: done in %.1f s wall, %.1f s CPU", name, timing["wall_s"], timing["cpu_s"])
    return results
