"""Parameter counts per component: one count behind parameter_breakdown, get_trainable_parameters,
the stage log and `theworld params`."""

from __future__ import annotations

import json
import logging

import pytest

from theworld import TheWorld
from theworld.cli.main import main
from theworld.training.stages import apply_stage


def unique_parameters(model):
    return {id(p): p for p in model.parameters()}.values()


def test_breakdown_names_every_component_and_counts_each_parameter_once(world_model):
    breakdown = world_model.parameter_breakdown()
    names = [c.name for c in breakdown.components]
    assert names == [
        "SigLIP vision tower", "image projector", "embeddings / LM head (tied)", "language model",
        "VAE encoder", "temporal embeddings", "world projector",
    ]  # fmt: skip
    assert breakdown.total == sum(p.numel() for p in unique_parameters(world_model))
    assert breakdown["embeddings / LM head (tied)"].total == world_model.lm_head.weight.numel()  # tied: once
    assert breakdown["VAE encoder"].total == sum(p.numel() for p in world_model.world_encoder.parameters())
    assert breakdown["temporal embeddings"].total == world_model.world_projector.temporal_embedding.numel()
    # loaded with the default freeze flags: only the world projector trains
    assert [c.name for c in breakdown.components if c.trainable] == ["temporal embeddings", "world projector"]
    assert breakdown["language model"].status == "frozen" and breakdown["world projector"].status == "trainable"
    assert world_model.get_trainable_parameters() == (breakdown.trainable, breakdown.total, breakdown.trainable_percent)
    table = breakdown.table()
    assert "SigLIP vision tower" in table and f"{breakdown.total:,}" in table and "100.00%" in table


def test_stage_log_reports_the_breakdown_totals(tiny_gemma_dir, world_settings, caplog):
    model = TheWorld.from_pretrained(tiny_gemma_dir, **world_settings)
    with caplog.at_level(logging.INFO, logger="theworld.training.stages"):
        apply_stage(model, "finetune")
    breakdown = model.parameter_breakdown()
    assert breakdown["language model"].status == "trainable" and breakdown["SigLIP vision tower"].status == "frozen"
    message = caplog.records[-1].getMessage()
    assert f"{breakdown.trainable:,} of {breakdown.total:,} parameters" in message
    assert "embeddings / LM head (tied), language model, temporal embeddings, world projector" in message


def test_params_command_counts_without_loading_weights(tiny_gemma_dir, tiny_vae_dir, world_settings, world_model, capsys):
    flags = ["--world-image-size", "64", "--world-tokens-per-frame", "16", "--world-num-frames", "9"]
    assert main(["params", tiny_gemma_dir, "--cosmos-model-name", tiny_vae_dir, *flags, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = world_model.parameter_breakdown().to_dict()  # the same model, loaded with its weights
    assert printed["components"] == expected["components"] and printed["total"] == expected["total"]
    assert main(["params", tiny_gemma_dir, "--cosmos-model-name", tiny_vae_dir, *flags, "--stage", "full"]) == 0
    table = capsys.readouterr().out
    assert "stage full" in table and "SigLIP vision tower" in table
    assert "frozen" in next(line for line in table.splitlines() if line.startswith("VAE encoder"))
    assert "trainable" in next(line for line in table.splitlines() if line.startswith("SigLIP vision tower"))


@pytest.mark.parametrize("argv, message", [(["params", "runs/nope"], "model folder runs/nope does not exist")])
def test_params_command_names_a_missing_model(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_set_trainable_is_the_one_writer_of_requires_grad_and_the_freeze_flags(world_model):
    """Loading flags and stages go through one function: exactly the named parts train, and the config
    records which flagged parts did (what a saved config then says)."""
    import copy

    from theworld.model.parameters import set_trainable, trainable_parts

    model = copy.deepcopy(world_model)
    names = set_trainable(model, {"world_projector", "gemma_vision"})
    assert names == [n for n, p in model.named_parameters() if p.requires_grad]
    assert {n.split(".")[0] if n.startswith("world") else ".".join(n.split(".")[:2]) for n in names} == {
        "world_projector", "model.vision_tower", "model.multi_modal_projector",
    }  # fmt: skip
    config = model.config
    assert (config.freeze_gemma_vision, config.freeze_gemma_language, config.freeze_cosmos_vae) == (False, True, True)
    assert trainable_parts(config) == {"world_projector", "gemma_vision"}  # what from_pretrained would restore
    set_trainable(model, ())
    assert not any(p.requires_grad for p in model.parameters()) and config.freeze_gemma_vision
    with pytest.raises(ValueError, match="unknown trainable parts"):
        set_trainable(model, {"decoder"})
