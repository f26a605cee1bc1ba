"""`theworld parity` end to end on tiny checkpoints: exit codes, what the report names, inputs.

What the CLI can see: it loads checkpoints, so it sees everything a checkpoint carries (weights,
config) and everything loading computes. A non-persistent buffer such as rotary `inv_freq` is
not in any checkpoint: damaged in memory, it is gone after save + load (tested below), so damage
to it is shown through the library API (`run_parity` on models patched in-process).
"""

from __future__ import annotations

import json

import pytest
import torch

from theworld import TheWorld
from theworld.cli.main import main
from theworld.parity.cli_support import ModelSpec, build_inputs, load_model, run_parity
from theworld.testing.inputs import random_image

PERTURBED = "model.language_model.layers.1.mlp.down_proj"


@pytest.fixture(scope="module")
def world_dir(tiny_gemma_dir, tiny_vae_dir, world_settings, tmp_path_factory):
    """A saved TheWorld (world on, encoder saved with it), without processor files: inputs then
    come from the processor of its base checkpoint."""
    model = TheWorld.from_pretrained(tiny_gemma_dir, cosmos_model_name=tiny_vae_dir, **world_settings)
    torch.manual_seed(3)
    with torch.no_grad():
        model.world_projector.temporal_embedding.normal_(0, 0.1)
    out = tmp_path_factory.mktemp("parity_world")
    model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def world_off_dir(tiny_gemma_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("parity_world_off")
    TheWorld.from_pretrained(tiny_gemma_dir, enable_world=False).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def perturbed_dir(world_dir, tmp_path_factory):
    """The world checkpoint with one weight of one layer moved by 0.01."""
    model = TheWorld.from_pretrained(world_dir)
    with torch.no_grad():
        model.get_submodule(PERTURBED).weight[0, 0] += 0.01
    out = tmp_path_factory.mktemp("parity_perturbed")
    model.save_pretrained(out)
    return str(out)


def parity(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["--log-level", "WARNING", "parity", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------------------------
# passing comparisons


@pytest.mark.parametrize("inputs", ["text", "image", "world"])
def test_identical_checkpoints_pass(capsys, world_dir, inputs):
    code, out, _ = parity(capsys, "--model", world_dir, "--reference", world_dir, "--inputs", inputs)
    assert code == 0, out
    assert "## Logits: PASS" in out and "**PASS**" in out
    assert "greedy agreement | 100.00%" in out


def test_world_off_matches_gemma_reference_exactly(capsys, world_off_dir, tiny_gemma_dir):
    code, out, _ = parity(capsys, "--model", world_off_dir, "--reference", "gemma", "--inputs", "image")
    assert code == 0, out
    assert f"{tiny_gemma_dir} (Gemma3ForConditionalGeneration)" in out  # the base checkpoint, resolved
    assert "max abs diff | 0 |" in out


@pytest.mark.parametrize(("dtype", "attn"), [("float32", "sdpa"), ("bfloat16", "eager")])
def test_gemma_dir_as_theworld_matches_plain_gemma(capsys, tiny_gemma_dir, dtype, attn):
    """A Gemma checkpoint loaded as TheWorld (world on, no world block) vs itself as plain Gemma."""
    code, out, _ = parity(
        capsys, "--model", tiny_gemma_dir, "--reference", "gemma", "--inputs", "image",
        "--dtype", dtype, "--attn-implementation", attn,
    )  # fmt: skip
    assert code == 0, out
    assert f"dtype | {dtype} vs {dtype}" in out


def test_gemma_prefix_loads_plain_gemma_for_either_side(capsys, tiny_gemma_dir, world_off_dir):
    code, out, _ = parity(capsys, "--model", f"gemma:{tiny_gemma_dir}", "--reference", world_off_dir)
    assert code == 0, out
    assert "model A: " + f"{tiny_gemma_dir} (Gemma3ForConditionalGeneration)" in out


def test_chat_file_inputs(capsys, world_dir, tmp_path):
    random_image(5).save(tmp_path / "scene.png")
    messages = [{"role": "user", "content": [{"type": "image", "path": "scene.png"}, {"type": "text", "text": "Where is it?"}]}]
    (tmp_path / "chat.json").write_text(json.dumps(messages))
    code, out, _ = parity(capsys, "--model", world_dir, "--reference", world_dir, "--inputs", str(tmp_path / "chat.json"))
    assert code == 0, out
    assert "1 chat message(s) with world blocks" in out


def test_chat_file_against_gemma_uses_gemma_format(capsys, world_dir, tmp_path):
    """The world checkpoint, given a chat file, against its base Gemma: Gemma's prompt, exact."""
    random_image(6).save(tmp_path / "a.png")
    messages = [{"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "Describe."}]}]
    (tmp_path / "chat.json").write_text(json.dumps(messages))
    code, out, _ = parity(capsys, "--model", world_dir, "--reference", "gemma", "--inputs", str(tmp_path / "chat.json"))
    assert code == 0, out
    assert "(Gemma's prompt format)" in out


# --------------------------------------------------------------------------------------------
# failing comparisons


def test_perturbed_layer_fails_and_is_named(capsys, world_dir, perturbed_dir, tmp_path):
    report = tmp_path / "report.md"
    code, out, _ = parity(
        capsys, "--model", world_dir, "--reference", perturbed_dir, "--inputs", "world", "--output", str(report)
    )
    assert code == 1
    assert "## Logits: FAIL" in out
    assert f"First divergent module: **`{PERTURBED}`**" in out
    assert "| `weight` | parameter | 0.01 |" in out
    assert "the inputs agree, so this module itself computes differently" in out
    assert report.read_text() == out


def test_perturbed_theworld_against_gemma_reference(capsys, perturbed_dir):
    """TheWorld vs plain Gemma: module names match through the name map; the world modules, which
    only TheWorld has, are left out of the search and said to be."""
    code, out, _ = parity(capsys, "--model", perturbed_dir, "--reference", "gemma", "--inputs", "image")
    assert code == 1
    assert f"First divergent module: **`{PERTURBED}`**" in out
    assert "world module(s) exist in only one model" in out
    assert "Modules only in model A" not in out


def test_atol_lets_a_small_difference_pass_and_no_divergence_skips_the_search(capsys, world_dir, perturbed_dir):
    code, out, _ = parity(capsys, "--model", world_dir, "--reference", perturbed_dir, "--atol", "10", "--no-divergence")
    assert code == 0, out
    code, out, _ = parity(capsys, "--model", world_dir, "--reference", perturbed_dir, "--no-divergence")
    assert code == 1
    assert "First divergence" not in out


# --------------------------------------------------------------------------------------------
# buffers


def test_audit_buffers_of_healthy_checkpoints(capsys, world_dir, tiny_gemma_dir):
    code, out, _ = parity(capsys, "--model", world_dir, "--reference", "gemma", "--audit-buffers")
    assert code == 0, out
    assert "## Buffers of model A: PASS" in out and "## Buffers of model B: PASS" in out


def _inv_freq_name(model) -> str:
    return next(n for n, _ in model.named_buffers() if n.endswith("full_attention_inv_freq"))


def test_zeroed_inv_freq_is_found_through_the_library_api(world_off_dir, tiny_gemma_dir):
    """A zeroed rotary `inv_freq` in memory: the logits fail, the rotary embedding is the first
    divergent module with that buffer listed, and the audit flags it."""
    spec_a = ModelSpec(world_off_dir, "theworld", world_off_dir)
    good = load_model(spec_a)
    bad = load_model(ModelSpec(f"gemma:{tiny_gemma_dir}", "gemma", tiny_gemma_dir))
    name = _inv_freq_name(bad)
    bad.get_buffer(name).zero_()
    inputs, _ = build_inputs("text", spec_a, good, bad)
    result = run_parity(good, bad, inputs, audit=True, labels=("good", "bad"))
    assert not result.logits.passed and not result.passed
    module, _, buffer = name.rpartition(".")
    assert result.divergence.module == module
    assert buffer in {t.name for t in result.divergence.differing_tensors}
    assert any(i.name == name and i.severity == "error" for i in result.buffer_issues["bad"])
    assert not [i for i in result.buffer_issues["good"] if i.severity == "error"]
    report = result.render(labels=("good", "bad"))
    assert f"`{module}`" in report and f"`{name}`" in report


def test_zeroed_inv_freq_does_not_survive_a_save(capsys, world_off_dir, tmp_path):
    """inv_freq is non-persistent: the saved checkpoint does not hold it, loading recomputes it,
    so the CLI (which compares checkpoints) finds nothing. Honest limit of a checkpoint tool."""
    model = TheWorld.from_pretrained(world_off_dir)
    model.get_buffer(_inv_freq_name(model)).zero_()
    model.save_pretrained(tmp_path)
    code, out, _ = parity(capsys, "--model", world_off_dir, "--reference", str(tmp_path), "--audit-buffers")
    assert code == 0, out


# --------------------------------------------------------------------------------------------
# usage errors: exit 2 with a message, no traceback


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/nonexistent/ckpt", "--reference", "gemma"], "no checkpoint directory at /nonexistent/ckpt"),
        (["--model", "MODEL", "--reference", "./missing"], "no checkpoint directory at ./missing"),
        (["--model", "gemma:", "--reference", "MODEL"], "give a checkpoint after 'gemma:'"),
        (["--model", "EMPTY", "--reference", "MODEL"], "directory without config.json"),
        (["--model", "MODEL", "--reference", "MODEL", "--inputs", "nope.json"], "cannot read inputs file nope.json"),
        (["--model", "MODEL", "--reference", "MODEL", "--inputs", "video"], "expected one of text, image, world"),
        (["--model", "OFF", "--reference", "OFF", "--inputs", "world"], "needs model A to be a world-enabled TheWorld"),
        (["--model", "MODEL", "--reference", "gemma", "--inputs", "world"], "reference to be a world-enabled TheWorld"),
        (["--model", "gemma:MODEL", "--reference", "MODEL"], "not Gemma 3"),
        (["--model", "MODEL", "--reference", "MODEL", "--atol", "-1"], "--atol must be a non-negative number"),
    ],
)
def test_usage_errors_exit_2(capsys, world_dir, world_off_dir, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    substitute = {"MODEL": world_dir, "OFF": world_off_dir, "EMPTY": str(tmp_path / "empty")}
    args = [
        "gemma:" + substitute[a[6:]] if a.startswith("gemma:") and a[6:] in substitute else substitute.get(a, a)
        for a in args
    ]
    code, out, err = parity(capsys, *args)
    assert code == 2, out + err
    assert message in err
    assert "Traceback" not in err


def test_gemma_weights_without_tokenizer_cannot_load_as_theworld(capsys, tiny_gemma_dir, tmp_path):
    from transformers import Gemma3ForConditionalGeneration

    Gemma3ForConditionalGeneration.from_pretrained(tiny_gemma_dir).save_pretrained(tmp_path)  # weights only
    code, out, err = parity(capsys, "--model", str(tmp_path), "--reference", f"gemma:{tiny_gemma_dir}")
    assert code == 2, out + err
    assert "has no tokenizer files" in err
    # As plain Gemma it loads, and matches the original (the inputs come from model A's processor).
    code, out, err = parity(capsys, "--model", f"gemma:{tiny_gemma_dir}", "--reference", f"gemma:{tmp_path}")
    assert code == 0, out + err


def test_rope_config_change_is_seen_through_its_recomputed_inv_freq(capsys, world_off_dir, tmp_path):
    """What a checkpoint can carry to a buffer: the config it is recomputed from."""
    import shutil

    shutil.copytree(world_off_dir, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    text = config["text_config"]
    text["rope_theta"] = 12_345.0
    text["rope_parameters"]["full_attention"]["rope_theta"] = 12_345.0
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, out, _ = parity(capsys, "--model", world_off_dir, "--reference", str(tmp_path))
    assert code == 1
    assert "First divergent module: **`model.language_model.rotary_emb`**" in out
    assert "| `full_attention_inv_freq` | buffer |" in out
