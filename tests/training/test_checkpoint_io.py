"""Checkpoint files are verified against the checksums written with them; every fault names the file
and the last intact checkpoint; files reach the disk before the rename that publishes them."""

from __future__ import annotations

import json
import os

import pytest

from theworld.training import checkpoint_io
from theworld.training.checkpoint_io import (
    CHECKSUMS_NAME,
    CheckpointError,
    clear_run,
    last_intact_checkpoint,
    list_checkpoints,
    publish_directory,
    verify_checkpoint,
    write_checksums,
)


def _checkpoint(run, step: int) -> str:
    folder = run / f"checkpoint-{step}"
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter.safetensors").write_bytes(bytes(range(256)) * 8)
    (folder / "optimizer.pt").write_bytes(b"optimizer-state" * 100)
    (folder / "sub" / "rng_state.pth").write_bytes(b"rng")
    write_checksums(folder)
    return str(folder)


def test_checksums_cover_every_file_and_verify(tmp_path):
    folder = _checkpoint(tmp_path, 5)
    manifest = json.loads(open(os.path.join(folder, CHECKSUMS_NAME)).read())
    assert sorted(manifest["files"]) == ["adapter.safetensors", "optimizer.pt", "sub/rng_state.pth"]
    assert manifest["files"]["optimizer.pt"]["size"] == 1500
    verify_checkpoint(folder, required=["adapter.safetensors", "optimizer.pt"])  # no error


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: os.remove(os.path.join(f, "optimizer.pt")), "optimizer.pt is missing"),
        (lambda f: open(os.path.join(f, "adapter.safetensors"), "r+b").truncate(100), "adapter.safetensors is 100 bytes, 2048 were written"),
        (lambda f: _flip(os.path.join(f, "adapter.safetensors"), 1000), "adapter.safetensors does not match its recorded sha256"),
        (lambda f: os.remove(os.path.join(f, "sub", "rng_state.pth")), "rng_state.pth is missing"),
        (lambda f: os.remove(os.path.join(f, CHECKSUMS_NAME)), "checksums.json is missing"),
        (lambda f: open(os.path.join(f, CHECKSUMS_NAME), "w").write("{not json"), "checksums.json is unreadable"),
    ],
)
def test_each_fault_names_the_file_and_the_last_intact_checkpoint(tmp_path, damage, message):
    intact = _checkpoint(tmp_path, 5)
    damaged = _checkpoint(tmp_path, 10)
    damage(damaged)
    with pytest.raises(CheckpointError, match="cannot be resumed") as caught:
        verify_checkpoint(damaged, required=["adapter.safetensors"])
    text = str(caught.value)
    assert message in text
    assert f"the last intact checkpoint is {intact}" in text
    assert caught.value.intact == intact


def test_required_file_must_be_recorded_and_no_intact_checkpoint_is_said(tmp_path):
    folder = _checkpoint(tmp_path, 3)
    with pytest.raises(CheckpointError, match=r"scheduler.pt is not recorded in checksums.json.*no intact checkpoint is left"):
        verify_checkpoint(folder, required=["scheduler.pt"])


def test_weights_only_checks_just_the_weights_and_is_offered_when_they_are_intact(tmp_path):
    folder = _checkpoint(tmp_path, 3)
    os.remove(os.path.join(folder, "optimizer.pt"))
    with pytest.raises(CheckpointError, match="resume_weights_only=true"):
        verify_checkpoint(folder, required=["adapter.safetensors", "optimizer.pt"], weights=["adapter.safetensors"])
    verify_checkpoint(folder, required=["adapter.safetensors"], only_required=True)  # no error
    _flip(os.path.join(folder, "adapter.safetensors"), 3)
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(folder, required=["adapter.safetensors", "optimizer.pt"], weights=["adapter.safetensors"])
    assert "resume_weights_only" not in str(caught.value)  # its weights are damaged too: not offered


def test_last_intact_is_the_newest_that_verifies(tmp_path):
    a, b, c = (_checkpoint(tmp_path, s) for s in (2, 4, 10))
    _flip(os.path.join(c, "optimizer.pt"), 7)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4", "checkpoint-10"]
    assert str(last_intact_checkpoint(tmp_path)) == b
    os.remove(os.path.join(b, "optimizer.pt"))
    assert str(last_intact_checkpoint(tmp_path)) == a


def test_every_file_is_fsynced_before_the_rename_that_publishes_it(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(src, dst):
        events.append(("rename", str(src)))
        return real_rename(src, dst)

    staged = tmp_path / ".staging" / "checkpoint-3"
    (staged / "sub").mkdir(parents=True)
    for name in ("a.bin", "sub/b.bin"):
        (staged / name).write_bytes(b"x" * 10)
    monkeypatch.setattr(checkpoint_io.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint_io.os, "rename", rename)
    write_checksums(staged)
    publish_directory(staged, tmp_path / "checkpoint-3")
    renamed = events.index(("rename", str(staged)))
    synced = {path for kind, path in events[:renamed] if kind == "fsync"}
    for name in ("a.bin", "sub/b.bin", CHECKSUMS_NAME, "sub", ""):
        assert os.path.normpath(str(staged / name)) in synced, name
    # and the parent folder's entry (the rename itself) after it
    assert ("fsync", str(tmp_path)) in events[renamed:]
    verify_checkpoint(tmp_path / "checkpoint-3")


def test_clear_run_removes_only_the_runs_files(tmp_path):
    _checkpoint(tmp_path, 5)
    (tmp_path / "adapter.safetensors").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "checkpoint-final-notes").mkdir()
    removed = clear_run(tmp_path, ["adapter.safetensors", "absent.json"])
    assert removed == ["checkpoint-5", "adapter.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-final-notes", "notes.txt"]


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))
