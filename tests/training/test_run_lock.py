"""One writer per output_dir: a second training is refused while the first runs (two real processes),
and the lock of a killed run (SIGKILL) is recognised as stale and taken over."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from theworld.training.config import build_config
from theworld.training.run import train
from theworld.training.run_lock import LOCK_NAME, LockHolder, RunLock, RunLockedError, this_host


def _wait_for(path: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"the first training exited ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("the first training never took its lock")
        time.sleep(0.05)


def test_second_training_is_refused_then_a_killed_runs_lock_is_taken_over(train_config_values, write_config, caplog):
    out = train_config_values["output_dir"]
    lock = os.path.join(out, LOCK_NAME)
    # the first training: a real `theworld train` process with more steps than it will get to run
    first_config = write_config(dict(train_config_values, max_steps=100000, save_steps=100000), "first.yaml")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "theworld", "train", "--config", first_config],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        _wait_for(lock, first)
        holder = json.loads(open(lock).read())
        assert holder["pid"] == first.pid and holder["host"] == this_host()
        with pytest.raises(RunLockedError, match=rf"is in use: pid {first.pid} on host {this_host()} .*two writers"):
            train(build_config(train_config_values))
        assert first.poll() is None  # the first run was left alone
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert os.path.exists(lock)  # a killed run cannot clean up
    with caplog.at_level(logging.WARNING, logger="theworld.training.run_lock"):
        result = train(build_config(train_config_values))
    assert result.global_step == train_config_values["max_steps"]
    assert f"taking over the lock of pid {first.pid} on host {this_host()}" in caplog.text
    assert "no longer runs" in caplog.text
    assert not os.path.exists(lock)  # released when the run ends


def _write_lock(folder, **changes) -> None:
    holder = LockHolder.current()
    record = {**holder.__dict__, **changes}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOCK_NAME), "w") as handle:
        json.dump(record, handle)


def test_live_pid_reused_by_a_later_process_is_stale(tmp_path):
    _write_lock(tmp_path, process_start="1")  # our pid, but "started" at another time: a reused pid
    with RunLock(tmp_path) as lock:
        assert lock.holder.pid == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_live_holder_and_other_host_are_refused(tmp_path):
    _write_lock(tmp_path)  # this very process
    with pytest.raises(RunLockedError, match=rf"is in use: pid {os.getpid()} on host {this_host()}"):
        RunLock(tmp_path).acquire()
    _write_lock(tmp_path, host="elsewhere-node-7", pid=12345)
    with pytest.raises(RunLockedError, match=r"locked by pid 12345 on host elsewhere-node-7 .*cannot be checked.*delete"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK_NAME).write_text("{garbage")
    with pytest.raises(RunLockedError, match="is unreadable"):
        RunLock(tmp_path).acquire()


def test_release_never_removes_another_holders_lock(tmp_path):
    lock = RunLock(tmp_path).acquire()
    _write_lock(tmp_path, token="someone-else")
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()
