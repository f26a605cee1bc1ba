"""Training a TheWorld with world rollouts (K > 0): `theworld cache-latents` rolls every visual out
once, `theworld train` reads the imagined latents from that cache (no DiT, no T5 in the steps)."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from theworld.cli.main import main
from theworld.errors import TheWorldUserError
from theworld.model.modeling import WORLD_ADAPTER_NAME
from theworld.training.config import build_config
from theworld.training.latent_cache import open_for_training
from theworld.training.run import build_trainer, open_rollout_cache, train
from theworld.world_model.rollout_cache import rollout_identity
from theworld.world_model.text import TEXT_CONDITION_NAME

from .test_train_resume import KillAfterSave

K = 2
ROLLOUT = dict(world_rollout_frames=K, world_rollout_steps=2, world_rollout_guidance=1.0, world_rollout_max_sequence_length=16)
CHECKER = ["--world-safety-checker", "tiny-test-double"]


@pytest.fixture
def rollout_values(train_config_values, tiny_world_dir, write_config, tmp_path):
    """An align config for a K = 2 model whose latents and rollouts `theworld cache-latents` built."""
    values = dict(
        train_config_values, cosmos_model_name=tiny_world_dir, **ROLLOUT, latent_cache_dir=str(tmp_path / "latents"),
        max_steps=6, save_steps=3, save_total_limit=None, per_device_train_batch_size=1, gradient_accumulation_steps=2,
        lr_scheduler_type="cosine", warmup_steps=1,
    )  # fmt: skip
    assert main(["cache-latents", "--config", write_config(values), "--no-progress", *CHECKER]) == 0
    return values


def _adapter(directory: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(directory, WORLD_ADAPTER_NAME))


def test_cache_latents_rolls_out_once_and_training_reads_the_rollouts(rollout_values, write_config, capsys, monkeypatch):
    rollouts = os.path.join(rollout_values["latent_cache_dir"], "rollouts")
    assert any(name.startswith("imagined-") for name in os.listdir(rollouts))
    capsys.readouterr()
    # a second build rolls nothing out, and embeds no prompt (the stored text condition is reused)
    import theworld.world_model.model as world_model_module

    monkeypatch.setattr(world_model_module, "encode_text_condition", lambda *a, **k: pytest.fail("T5 was loaded again"))
    assert main(["cache-latents", "--config", write_config(rollout_values), "--no-progress", *CHECKER]) == 0
    assert "0 visuals rolled out" in capsys.readouterr().out

    trainer = build_trainer(build_config(rollout_values))
    model = trainer.model
    assert model.world_model is None and model.world_encoder is None  # neither the DiT nor the VAE is loaded
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert batch["world_imagined_latents"].shape == (1, 16, K, 8, 8)
    # the imagined latents are the world model's own rollout of that image
    cache = open_rollout_cache(trainer.args, model.config, open_for_training(trainer.args))
    visual = trainer.train_dataset[0].visuals()[0]
    assert torch.equal(batch["world_imagined_latents"][0], cache.imagined_for(visual))

    result = train(build_config(dict(rollout_values, output_dir=rollout_values["output_dir"] + "_run")))
    losses = [e["loss"] for e in result.trainer.state.log_history if "loss" in e]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    adapter = _adapter(result.output_dir)
    assert adapter["world_projector.imagined_embedding"].abs().max() > 0  # the marker trained (it starts at zero)
    assert os.path.isfile(os.path.join(result.output_dir, TEXT_CONDITION_NAME))
    # the trained model loads with its world model for rollouts; T5 is not loaded (encode_text_condition
    # still fails, patched above): the text condition came with the model
    from theworld import TheWorld
    from theworld.testing.tiny_world_model import TinyTestSafetyChecker

    trained = TheWorld.from_pretrained(result.output_dir, world_safety_checker=TinyTestSafetyChecker())
    assert trained.world_model is not None and trained.config.cosmos_model_name == rollout_values["cosmos_model_name"]
    assert torch.equal(trained.world_projector.imagined_embedding, adapter["world_projector.imagined_embedding"])


def test_resume_equals_a_straight_run(rollout_values, tmp_path):
    straight = train(build_config(dict(rollout_values, output_dir=str(tmp_path / "straight"))))
    interrupted = dict(rollout_values, output_dir=str(tmp_path / "interrupted"))
    trainer = build_trainer(build_config(interrupted))
    trainer.add_callback(KillAfterSave(step=3))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    resumed = train(build_config(dict(interrupted, resume_from_checkpoint="latest")))
    assert resumed.global_step == straight.global_step == 6
    a, b = _adapter(straight.output_dir), _adapter(resumed.output_dir)
    assert a.keys() == b.keys() and "world_projector.imagined_embedding" in a
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"rollout resume: max |straight - resumed| over the adapter = {worst:.3g}")
    assert worst <= 1e-6


def test_missing_rollouts_name_the_samples(rollout_values):
    rollouts = os.path.join(rollout_values["latent_cache_dir"], "rollouts")
    for name in os.listdir(rollouts):
        if name.startswith("imagined-"):
            os.remove(os.path.join(rollouts, name))
    with pytest.raises(TheWorldUserError, match=r"no imagined latents for .* samples r0, r1, r2, r4, r5 \.\.\..*cache-latents"):
        build_trainer(build_config(rollout_values))


@pytest.mark.parametrize(
    "change", [dict(world_rollout_seed=1), dict(world_rollout_steps=3), dict(world_rollout_frames=1), dict(world_rollout_guidance=2.0)]
)
def test_another_rollout_setting_misses_the_cache(rollout_values, change):
    """Each rollout setting is part of the key: a changed one finds no rollouts (never stale ones)."""
    with pytest.raises(TheWorldUserError, match="no imagined latents .* samples r0"):
        build_trainer(build_config(dict(rollout_values, **change)))


def test_another_prompt_or_dit_misses_the_cache(rollout_values, tiny_world_dir, tmp_path):
    with pytest.raises(TheWorldUserError, match="holds no rollouts for world_rollout_prompt='a ball'"):
        build_trainer(build_config(dict(rollout_values, world_rollout_prompt="a ball")))
    changed = tmp_path / "changed_dit"
    shutil.copytree(tiny_world_dir, changed)
    config_file = changed / "transformer" / "config.json"
    config_file.write_text(config_file.read_text().replace("{", '{"_note": "retrained",', 1))
    with pytest.raises(TheWorldUserError, match="no imagined latents .* samples r0"):
        build_trainer(build_config(dict(rollout_values, cosmos_model_name=str(changed))))


def test_training_identity_equals_the_world_models(rollout_values, tiny_world_dir):
    """Training keys rollouts from files (no DiT, no T5) exactly as cache-latents keyed them with the world model."""
    from theworld.training.sources import resolve_model
    from theworld.world_encoder.vae import CosmosWorldEncoder
    from theworld.world_model import WorldModel
    from theworld.world_model.model import encoder_identity, identity_from_files
    from theworld.training.latent_cache import fingerprint_encoder
    from theworld.testing.tiny_world_model import TinyTestSafetyChecker

    config = build_config(rollout_values)
    settings = resolve_model(config).config.world_rollout_settings()
    encoder = CosmosWorldEncoder.from_pretrained(tiny_world_dir)
    world = WorldModel.from_pretrained(tiny_world_dir, settings, safety_checker=TinyTestSafetyChecker(), encoder=encoder)
    from_files = identity_from_files(tiny_world_dir, settings, world.text, encoder_identity(fingerprint_encoder(encoder)))
    assert from_files == world.identity()
    cache = open_rollout_cache(config, resolve_model(config).config, open_for_training(config))
    assert cache.identity == rollout_identity(world)


def test_rollouts_are_trained_from_a_cache_only(rollout_values):
    values = {k: v for k, v in rollout_values.items() if k != "latent_cache_dir"}
    with pytest.raises(TheWorldUserError, match="world_rollout_frames=2: training reads imagined latents from a cache"):
        build_trainer(build_config(values))
    with pytest.raises(TheWorldUserError, match="rollout_cache_dir needs latent_cache_dir"):
        build_config(dict(values, rollout_cache_dir="somewhere"))
