"""Checkpoints written by one transformers version load under the other with identical logits.

Each direction: one side writes tiny checkpoints (Gemma 3 with non-default rope, a TheWorld
directory with world weights and processor, the Gemma weights in transformers 5's scratch key
layout) plus fixed inputs; both sides load every checkpoint and run it on those inputs (fp32,
eager, the same torch thread count); the logits must be equal bit for bit, and each side's
processors, loaded from the written directories, must build the same inputs.

With THEWORLD_COMPAT_OTHER_PYTHON unset (the main suite) both sides are this process: a
same-version save/load round trip. `make test-compat` sets it, so the two sides are 4.57 and 5.x.
"""

from __future__ import annotations

import torch


def _differences(written: dict, read: dict) -> list[str]:
    problems = []
    for key, expected in written["logits"].items():
        actual = read["logits"].get(key)
        if actual is None:
            problems.append(f"{key}: missing")
        elif actual.shape != expected.shape:
            problems.append(f"{key}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}")
        elif not torch.equal(actual, expected):
            problems.append(f"{key}: max |diff| {(actual - expected).abs().max().item():.6g}")
    for kind, batch in written["inputs"].items():
        for name, expected in batch.items():
            actual = read["inputs"].get(kind, {}).get(name)
            if actual is None or actual.shape != expected.shape or not torch.equal(actual, expected):
                problems.append(f"processor input {kind}.{name} differs")
    return problems


def _check_direction(writer, reader, root, tmp_path):
    writer.write(root)
    written = writer.logits(root, tmp_path / "writer.pt")
    read = reader.logits(root, tmp_path / "reader.pt")
    # A bit-for-bit comparison holds for one thread count (docs/parity.md, "Machines and exactness").
    assert written["versions"]["threads"] == read["versions"]["threads"], (written["versions"], read["versions"])
    assert set(written["logits"]) == set(read["logits"])
    problems = _differences(written, read)
    assert not problems, (
        f"written by {written['versions']}, read by {read['versions']}:\n" + "\n".join(problems)
    )


def test_other_side_writes_this_side_reads(this_side, other_side, tmp_path):
    _check_direction(other_side, this_side, tmp_path / "ckpt", tmp_path)


def test_this_side_writes_other_side_reads(this_side, other_side, tmp_path):
    _check_direction(this_side, other_side, tmp_path / "ckpt", tmp_path)
