"""`theworld make-tiny`: the tests' tiny checkpoints, under the Hub ids the README names."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from theworld.cli.main import main
from theworld.cli.make_tiny import COSMOS_ID, GEMMA_ID


def _same_tensors(a: Path, b: Path) -> bool:
    left, right = load_file(str(a)), load_file(str(b))
    return left.keys() == right.keys() and all(left[k].equal(right[k]) for k in left)


def test_make_tiny_writes_the_test_checkpoints_under_hub_ids(tmp_path, tiny_gemma_dir, tiny_vae_dir, capsys):
    assert main(["make-tiny", "--output-dir", str(tmp_path)]) == 0
    gemma, cosmos = tmp_path / GEMMA_ID, tmp_path / COSMOS_ID
    assert _same_tensors(gemma / "model.safetensors", Path(tiny_gemma_dir) / "model.safetensors")
    vae = "vae/diffusion_pytorch_model.safetensors"
    assert _same_tensors(cosmos / vae, Path(tiny_vae_dir) / vae)
    for name in ("tokenizer.json", "processor_config.json", "chat_template.jinja"):
        assert (gemma / name).is_file()
    assert "--world_image_size 64" in capsys.readouterr().out

    # A second run does not replace them silently, and names the flag to do so.
    assert main(["make-tiny", "--output-dir", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../outside", "/abs/path", ""])
def test_make_tiny_refuses_names_outside_the_output_dir(tmp_path, name, capsys):
    assert main(["make-tiny", "--output-dir", str(tmp_path), "--gemma-name", name]) == 2
    assert "--gemma-name" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
