"""Controls for world rollouts: zero-rollout (imagined tokens zeroed) and no-rollout (K = 0, same checkpoint)."""

from __future__ import annotations

import pytest
import torch

from theworld import TheWorld, TheWorldProcessor
from theworld.errors import TheWorldUserError
from theworld.evaluation.controls import zero_rollout
from theworld.evaluation.harness import EvalSettings, evaluate
from theworld.evaluation.loading import load_model
from theworld.testing.tiny_world_model import TinyTestSafetyChecker

from .test_eval_controls import items, read_scores  # noqa: F401  (the shared item fixture)

K = 2
ROLLOUT = dict(world_rollout_frames=K, world_rollout_steps=2, world_rollout_guidance=1.0, world_rollout_max_sequence_length=16)


@pytest.fixture(scope="module")
def rollout(tiny_gemma_dir, tiny_world_dir, world_settings, tmp_path_factory):
    """A rollout model (K = 2) with trained-looking rollout parameters, saved with its processor."""
    model = TheWorld.from_pretrained(
        tiny_gemma_dir, cosmos_model_name=tiny_world_dir, world_safety_checker=TinyTestSafetyChecker(),
        **world_settings, **ROLLOUT,
    ).eval()  # fmt: skip
    torch.manual_seed(2)
    with torch.no_grad():
        for name in ("temporal_embedding", "rollout_temporal_embedding", "imagined_embedding"):
            getattr(model.world_projector, name).normal_(0, 0.1)
    processor = TheWorldProcessor.from_model_config(tiny_gemma_dir, model.config)
    out = tmp_path_factory.mktemp("rollout_model")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return model, processor, str(out)


def test_zero_rollout_zeroes_only_imagined_tokens(rollout):
    model, _, _ = rollout
    pixels = torch.rand(2, 3, 5, 64, 64) * 2 - 1
    with torch.no_grad():
        normal = model.get_world_features(pixels)  # (2, (2 + K) * 16, hidden)
        with zero_rollout(model):
            zeroed = model.get_world_features(pixels)
    observed = 2 * 16
    assert torch.equal(zeroed[:, :observed], normal[:, :observed])
    assert zeroed[:, observed:].abs().max() == 0 and normal[:, observed:].abs().max() > 0
    assert not model.world_projector._forward_hooks


def test_zero_rollout_run_differs_and_needs_rollouts(rollout, items, tmp_path, world_dir):  # noqa: F811
    model, processor, _ = rollout
    normal = evaluate(items[:2], model, processor, tmp_path / "none", EvalSettings())
    zeroed = evaluate(items[:2], model, processor, tmp_path / "zero", EvalSettings(control="zero-rollout"))
    assert zeroed["world"]["tokens_seen"] == normal["world"]["tokens_seen"] == 2 * (1 + K) * 16  # items x world tokens: each prompt is prefilled once
    a, b = read_scores(tmp_path / "none"), read_scores(tmp_path / "zero")
    assert max(abs(a[i]["scores"][c] - b[i]["scores"][c]) for i in a for c in a[i]["scores"]) > 1e-5
    plain, plain_processor = load_model(world_dir, "none")
    with pytest.raises(TheWorldUserError, match="world_rollout_frames > 0"):
        evaluate(items[:2], plain, plain_processor, tmp_path / "bad", EvalSettings(control="zero-rollout"))


def test_no_rollout_loads_the_same_projector_without_imagination(rollout, world_dir):
    model, _, saved = rollout
    without, processor = load_model(saved, "no-rollout")
    assert without.config.world_rollout_frames == 0 and without.world_model is None
    assert processor.world_geometry.tokens_for_frames(1) == 16
    assert without.world_projector.imagined_embedding is None
    pixels = torch.rand(1, 3, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(without.get_world_features(pixels), model.get_world_features(pixels)[:, :16])
    with pytest.raises(TheWorldUserError, match="no-rollout"):
        load_model(world_dir, "no-rollout")


def test_theworld_eval_runs_a_tiny_rollout_checkpoint_end_to_end(rollout, tmp_path, capsys):
    """`theworld eval` on a tiny K > 0 checkpoint: the test double stands in for the guardrail; the
    rollout model imagines, zero-rollout and no-rollout run beside it; the default (cosmos_guardrail)
    is required otherwise."""
    import json

    from theworld.cli.main import main

    from .test_eval_cli import eval_args, lines, write_qa

    _, _, saved = rollout
    data = write_qa(tmp_path / "data")
    double = ("--world-safety-checker", "tiny-test-double", "--batch-size", "4")
    scores = {}
    for control, tokens in (("none", (1 + K) * 16), ("zero-rollout", (1 + K) * 16), ("no-rollout", 16)):
        out = tmp_path / control
        assert main(eval_args(saved, "jsonl", data, out, "--control", control, *double)) == 0
        predictions = lines(out / "predictions.jsonl")
        assert [p["id"] for p in predictions] == ["q0", "q1", "q2"] and all(p["world_tokens"] == tokens for p in predictions)
        assert json.loads((out / "metrics.json").read_text())["n"] == 3
        scores[control] = [p["scores"]["yes"] for p in predictions]
    assert scores["none"] != scores["zero-rollout"] and scores["none"] != scores["no-rollout"]
    capsys.readouterr()
    # without the flag the real guardrail is required (not installed here: a clear error, no run)
    code = main(eval_args(saved, "jsonl", data, tmp_path / "default"))
    err = capsys.readouterr().err
    try:
        import cosmos_guardrail  # noqa: F401
    except ImportError:
        assert code == 2 and "pip install cosmos_guardrail" in err and "Traceback" not in err


def test_load_model_takes_only_the_test_double(rollout):
    _, _, saved = rollout

    class Permissive:
        def check_text_safety(self, prompt):
            return True

    with pytest.raises(TheWorldUserError, match="TinyTestSafetyChecker"):
        load_model(saved, "none", safety_checker=Permissive())
    model, _ = load_model(saved, "none", safety_checker=TinyTestSafetyChecker())
    assert model.world_model is not None
