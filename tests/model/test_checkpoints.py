"""Saved TheWorld folders find their base checkpoint after a move; missing paths are named; loads report the truth."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from theworld import TheWorld
from theworld.errors import TheWorldUserError
from theworld.model.checkpoints import check_model_path, load_pretrained, looks_local, portable_base_reference, resolve
from theworld.testing.inputs import clip_chat


@pytest.fixture
def project(tmp_path, tiny_gemma_dir, tiny_vae_dir, world_settings):
    """tmp/project/{gemma, runs/align}: an adapter folder saved next to a local copy of its base."""
    root = tmp_path / "project"
    shutil.copytree(tiny_gemma_dir, root / "gemma")
    model = TheWorld.from_pretrained(root / "gemma", cosmos_model_name=tiny_vae_dir, **world_settings).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        model.world_projector.temporal_embedding.normal_(0, 0.1)  # trained-looking: not the fresh init
    model.save_world_adapter(root / "runs" / "align")
    return root, model


def world_logits(model, processor):
    inputs = processor.apply_chat_template(clip_chat(5, frames=5), tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**inputs).logits


def test_adapter_records_its_base_relative_to_itself(project):
    root, model = project
    recorded = json.loads((root / "runs" / "align" / "config.json").read_text())["base_model_name_or_path"]
    assert recorded == "../../gemma"
    assert model.config.base_model_name_or_path == str(root / "gemma")  # in memory: unchanged
    assert portable_base_reference("google/gemma-3-4b-it", root) == "google/gemma-3-4b-it"  # a Hub id as is


def test_run_moved_with_its_base_loads(project, tmp_path, processor):
    root, model = project
    moved = shutil.move(str(root), str(tmp_path / "elsewhere"))
    loaded = TheWorld.from_pretrained(f"{moved}/runs/align")
    assert loaded.config.base_model_name_or_path == f"{moved}/gemma"
    assert torch.equal(world_logits(loaded, processor), world_logits(model, processor))
    auto = AutoModelForCausalLM.from_pretrained(f"{moved}/runs/align")  # the Auto class reads the config first
    assert type(auto) is TheWorld and torch.equal(world_logits(auto, processor), world_logits(model, processor))


def test_moved_base_is_named_and_can_be_given(project, tmp_path, processor):
    root, model = project
    new_base = shutil.move(str(root / "gemma"), str(tmp_path / "models-gemma"))
    with pytest.raises(TheWorldUserError, match=f"base checkpoint {root}/gemma not found") as err:
        TheWorld.from_pretrained(root / "runs" / "align")
    assert "base_model_name_or_path=" in str(err.value)
    loaded = TheWorld.from_pretrained(root / "runs" / "align", base_model_name_or_path=new_base)
    assert torch.equal(world_logits(loaded, processor), world_logits(model, processor))
    with pytest.raises(TheWorldUserError, match="folder ./nowhere does not exist"):
        TheWorld.from_pretrained(root / "runs" / "align", base_model_name_or_path="./nowhere")


def test_mistyped_local_path_is_a_missing_folder_not_a_hub_lookup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert looks_local("runs/gemmma") and looks_local("gemmma") and looks_local("./x") and looks_local("/x/y/z")
    assert not looks_local("google/gemma-3-4b-it")
    for name in ("runs/gemmma", "gemmma", "runs/a/b"):
        with pytest.raises(TheWorldUserError, match=f"model folder {name} does not exist"):
            TheWorld.from_pretrained(name)
    assert check_model_path("google/gemma-3-4b-it") == "google/gemma-3-4b-it"


def test_loading_a_trained_adapter_reports_what_was_restored(project, capfd, caplog):
    """No "world_projector.* MISSING / newly initialised" for weights the adapter restores, and no
    warning about the world encoder: one line saying which world weights came from where."""
    root, _ = project
    config_file = root / "runs" / "align" / "config.json"
    config = json.loads(config_file.read_text())
    config["cosmos_model_name"] = None  # e.g. trained from a latent cache
    config_file.write_text(json.dumps(config))
    capfd.readouterr()
    with caplog.at_level("INFO", logger="theworld"):
        TheWorld.from_pretrained(root / "runs" / "align")
    printed = capfd.readouterr()
    transformers_report = printed.out + printed.err
    assert "world_projector" not in transformers_report and "MISSING" not in transformers_report
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    messages = [r.getMessage() for r in caplog.records]
    adapter_file = root / "runs" / "align" / "world_adapter.safetensors"
    assert any(f"6 tensors restored from {adapter_file} (world_projector.*: 6)" in m for m in messages), messages
    assert any("world encoder: none loaded" in m for m in messages)
    assert not any("world projector:" in m for m in messages)  # the base holds no world weights: not "restored" there


def test_loading_from_gemma_reports_fresh_world_weights(tiny_gemma_dir, world_settings, caplog):
    with caplog.at_level("INFO", logger="theworld"):
        _, info = TheWorld.from_pretrained(tiny_gemma_dir, output_loading_info=True, **world_settings)
    assert all(k.startswith("world_projector.") for k in info["missing_keys"]) and info["missing_keys"]
    assert any("world projector: newly initialised" in r.getMessage() for r in caplog.records)


def test_resolve_says_what_each_kind_of_folder_holds_from_configs_alone(project, tiny_vae_dir, world_settings, tmp_path):
    """One answer to "what is at this path": a Gemma 3 checkpoint, a saved TheWorld, an adapter folder."""
    root, model = project
    gemma = resolve(root / "gemma", cosmos_model_name=tiny_vae_dir, **world_settings)
    assert gemma.from_gemma and gemma.weights == str(root / "gemma") and gemma.adapter is None
    assert gemma.base == str(root / "gemma") and gemma.processor_source == str(root / "gemma")
    assert gemma.encoder_source == tiny_vae_dir and gemma.config.world_token_id == model.config.world_token_id
    assert gemma.config.world_geometry == model.config.world_geometry

    adapter = resolve(root / "runs" / "align")
    assert not adapter.from_gemma and adapter.adapter == str(root / "runs" / "align")
    assert adapter.weights == adapter.base == str(root / "gemma")  # the base's weights, then the adapter's
    assert adapter.processor_source == str(root / "gemma")  # the adapter folder holds no tokenizer
    assert resolve(root / "runs" / "align", enable_world=False).encoder_source is None

    model.save_pretrained(tmp_path / "full")
    full = resolve(tmp_path / "full", cosmos_model_name="elsewhere/vae")
    assert full.weights == str(tmp_path / "full") and full.adapter is None
    assert full.encoder_source == str(tmp_path / "full" / "world_encoder")  # the save's own VAE comes first
    assert full.config.base_model_name_or_path == str(root / "gemma")  # recorded relative, resolved absolute
    assert full.processor_source == str(root / "gemma")

    given = model.config
    before = given.to_dict()
    resolve(None, config=given, enable_world=False)
    assert given.to_dict() == before  # the caller's config is never changed


def test_world_off_of_an_adapter_is_the_base_plus_its_gemma_tensors(project, tiny_gemma_dir):
    """`enable_world=False` on an adapter folder: the base Gemma with the adapter's non-world tensors
    (what a finetune stage trained), its world tensors left out. It used to refuse the world keys."""
    from transformers import Gemma3ForConditionalGeneration

    root, model = project
    weight = "model.language_model.layers.0.mlp.up_proj.weight"
    with torch.no_grad():
        model.get_parameter(weight).add_(0.5)
    keys = [k for k in model.state_dict() if k.startswith("world_projector.")] + [weight]
    model.save_world_adapter(root / "runs" / "finetune", keys=keys)
    off = TheWorld.from_pretrained(root / "runs" / "finetune", enable_world=False)
    gemma = Gemma3ForConditionalGeneration.from_pretrained(tiny_gemma_dir)
    assert off.world_projector is None
    assert torch.equal(off.get_parameter(weight), model.get_parameter(weight))
    assert not torch.equal(off.get_parameter(weight), gemma.get_parameter(weight))
    other = "model.language_model.layers.1.mlp.up_proj.weight"
    assert torch.equal(off.get_parameter(other), gemma.get_parameter(other))


def test_load_pretrained_gives_a_frozen_eval_model_and_its_matching_processor(project, tiny_vae_dir):
    root, model = project
    loaded, processor = load_pretrained(root / "runs" / "align", cosmos_model_name=tiny_vae_dir)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert processor.enable_world and processor.world_geometry == loaded.config.world_geometry
    assert torch.equal(world_logits(loaded, processor), world_logits(model, processor))
    off, off_processor = load_pretrained(root / "runs" / "align", enable_world=False)
    assert off.world_projector is None and off_processor.enable_world is False
