"""`theworld parity` under the running transformers version (4.57 in `make test-compat`)."""

from __future__ import annotations

import pytest
import torch

from theworld import TheWorld
from theworld.cli.main import main

PERTURBED = "model.language_model.layers.0.self_attn.o_proj"


def parity(capsys, *args: str) -> tuple[int, str]:
    code = main(["--log-level", "WARNING", "parity", *args])
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def perturbed_dir(rope_gemma_dir, tmp_path_factory):
    model = TheWorld.from_pretrained(rope_gemma_dir, enable_world=False)
    with torch.no_grad():
        model.get_submodule(PERTURBED).weight[1, 2] -= 0.05
    out = tmp_path_factory.mktemp("compat_perturbed")
    model.save_pretrained(out)
    return str(out)


def test_theworld_against_its_gemma_passes(capsys, rope_gemma_dir):
    code, out = parity(capsys, "--model", rope_gemma_dir, "--reference", "gemma", "--inputs", "image", "--audit-buffers")
    assert code == 0, out
    assert "max abs diff | 0 |" in out and "## Buffers of model B: PASS" in out


def test_perturbed_checkpoint_fails_and_names_the_module(capsys, rope_gemma_dir, perturbed_dir):
    code, out = parity(capsys, "--model", f"gemma:{rope_gemma_dir}", "--reference", perturbed_dir, "--inputs", "image")
    assert code == 1
    assert f"First divergent module: **`{PERTURBED}`**" in out
    assert "| `weight` | parameter |" in out


def test_bad_path_exits_2(capsys):
    assert main(["parity", "--model", "/nonexistent/x", "--reference", "gemma"]) == 2
    assert "no checkpoint directory at /nonexistent/x" in capsys.readouterr().err
