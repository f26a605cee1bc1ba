"""`train-world-model`: the loss falls, resume equals a straight run, the output is a Cosmos repo."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from diffusers import Cosmos2VideoToWorldPipeline
from safetensors.torch import load_file
from transformers import TrainerCallback

from theworld.cli.main import main
from theworld.errors import TheWorldUserError
from theworld.testing.tiny_world_model import TinyDiTSpec, TinyTestSafetyChecker
from theworld.world_model import RolloutSettings, WorldModel
from theworld.world_model.latents import WorldLatents
from theworld.world_model.training import read_arguments, train_world_model

from .conftest import SEQ, pixels_of, random_clip


def structured_latents(n: int, seed: int = 0) -> WorldLatents:
    """Clips whose next latent frame is a fixed function of the last observed one (learnable)."""
    g = torch.Generator().manual_seed(seed)
    observed = torch.randn(n, 16, 2, 4, 4, generator=g)
    future = 0.8 * observed[:, :, -1:] + 0.3
    return WorldLatents(mean=torch.cat([observed, future], 2), std=torch.full((n, 16, 3, 4, 4), 0.05),
                        ids=[f"clip-{i}" for i in range(n)])  # fmt: skip


@pytest.fixture(scope="module")
def dit_config(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("dit") / "dit.json"
    spec = TinyDiTSpec(num_attention_heads=4, attention_head_dim=32, extra_pos_embed_type="learnable")  # 128 wide
    path.write_text(json.dumps(spec.transformer_config(text_embed_dim=32)))
    return str(path)


@pytest.fixture(scope="module")
def latents_file(tmp_path_factory) -> str:
    return str(structured_latents(32).save(tmp_path_factory.mktemp("latents") / "train.safetensors"))


def arguments(tiny_world_dir, dit_config, train_data, output_dir, **values):
    base = dict(
        cosmos_model_name=tiny_world_dir, transformer_config=dit_config, train_data=train_data,
        output_dir=str(output_dir), observed_frames=5, rollout_frames=1, max_sequence_length=SEQ,
        per_device_train_batch_size=8, learning_rate=3e-3, max_steps=6, save_steps=3, logging_steps=1,
        lr_scheduler_type="cosine", warmup_steps=1, seed=0, report_to="none", save_total_limit=None,
        disable_tqdm=True,
    )  # fmt: skip
    base.update(values)
    cli = [item for key, value in base.items() if value is not None for item in (f"--{key}", str(value))]
    return read_arguments(None, cli)


def losses(result) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in result.trainer.state.log_history if "loss" in e}


def test_loss_falls(tiny_world_dir, dit_config, latents_file, tmp_path):
    result = train_world_model(arguments(tiny_world_dir, dit_config, latents_file, tmp_path / "run", max_steps=60,
                                         save_steps=1000, lr_scheduler_type="constant", sigma_log_mean=1.0,
                                         sigma_log_std=1.0))  # fmt: skip
    curve = [losses(result)[s] for s in sorted(losses(result))]
    first, last = np.mean(curve[:10]), np.mean(curve[-10:])
    print(f"world-model loss: first 10 steps {first:.3f}, last 10 steps {last:.3f}")
    assert last < 0.8 * first


class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt("killed after checkpoint-3")


def test_resume_equals_straight_run(tiny_world_dir, dit_config, latents_file, tmp_path):
    """Weights, weight average, optimizer, schedule, data order and noise all continue exactly."""
    common = dict(gradient_accumulation_steps=2, per_device_train_batch_size=4, ema_decay=0.9)
    straight = train_world_model(arguments(tiny_world_dir, dit_config, latents_file, tmp_path / "straight", **common))
    interrupted = arguments(tiny_world_dir, dit_config, latents_file, tmp_path / "interrupted", **common)
    from theworld.world_model.training import build_trainer

    trainer, _, _ = build_trainer(interrupted)
    trainer.add_callback(KillAfterSave())
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert sorted(os.listdir(interrupted.output_dir)) == ["checkpoint-3"]
    resumed = train_world_model(arguments(tiny_world_dir, dit_config, latents_file, tmp_path / "interrupted",
                                          resume_from_checkpoint="latest", **common))  # fmt: skip
    assert resumed.global_step == straight.global_step == 6
    weights = lambda r: load_file(os.path.join(r.output_dir, "transformer", "diffusion_pytorch_model.safetensors"))  # noqa: E731
    a, b = weights(straight), weights(resumed)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, worst
    assert all(abs(losses(straight)[s] - losses(resumed)[s]) < 1e-6 for s in (4, 5, 6))
    checkpoint = os.path.join(straight.output_dir, "checkpoint-3")
    initial = load_file(os.path.join(checkpoint, "transformer", "diffusion_pytorch_model.safetensors"))
    assert max(float((initial[k] - a[k]).abs().max()) for k in a) > 1e-4  # steps 4..6 did train
    raw = straight.trainer.model.transformer.state_dict()  # the output holds the average, not the last step
    assert os.path.isfile(os.path.join(checkpoint, "ema.safetensors"))
    assert max(float((raw[k] - a[k]).abs().max()) for k in a) > 1e-5


def test_checkpoints_are_checksummed_and_a_damaged_one_is_refused(tiny_world_dir, dit_config, latents_file, tmp_path):
    """World-model checkpoints go through the same AtomicCheckpoints/checkpoint_io as `theworld train`."""
    from theworld.training.checkpoint_io import CheckpointError

    run = tmp_path / "run"
    train_world_model(arguments(tiny_world_dir, dit_config, latents_file, run))
    checkpoint = run / "checkpoint-3"
    assert (checkpoint / "checksums.json").is_file() and not (run / ".checkpoint-staging").exists()
    weights = checkpoint / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])  # truncated
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors"):
        train_world_model(arguments(tiny_world_dir, dit_config, latents_file, run, resume_from_checkpoint=str(checkpoint)))


def test_output_is_a_cosmos_repo_from_clips(tiny_world_dir, dit_config, tmp_path):
    """Clips from a data file are encoded once; the output loads in the pipeline and as a world model."""
    data = tmp_path / "clips"
    data.mkdir()
    with open(data / "clips.jsonl", "w") as handle:
        for i in range(4):
            paths = []
            for t, frame in enumerate(random_clip(i, 9)):
                frame.save(data / f"{i}_{t}.png")
                paths.append(f"{i}_{t}.png")
            handle.write(json.dumps({"id": f"c{i}", "question": "what next?", "answer": "x", "video": paths}) + "\n")
    out = tmp_path / "trained"
    result = train_world_model(arguments(tiny_world_dir, dit_config, str(data / "clips.jsonl"), out,
                                         world_image_size=32, max_steps=2, per_device_train_batch_size=2))  # fmt: skip
    for part in ("transformer", "vae", "scheduler", "text_encoder", "tokenizer", "model_index.json",
                 "world_latents.safetensors", "world_text_condition.safetensors"):  # fmt: skip
        assert (out / part).exists(), part
    assert WorldLatents.load(out / "world_latents.safetensors").ids == ["c0", "c1", "c2", "c3"]
    pipe = Cosmos2VideoToWorldPipeline.from_pretrained(result.output_dir, safety_checker=TinyTestSafetyChecker())
    assert pipe.transformer.config.extra_pos_embed_type == "learnable"
    world = WorldModel.from_pretrained(result.output_dir, RolloutSettings(frames=1, steps=3, guidance=1.0,
                                       max_sequence_length=SEQ), safety_checker=TinyTestSafetyChecker())  # fmt: skip
    assert world.imagine(pixels_of([random_clip(0, 5)])).shape == (1, 16, 1, 4, 4)


def test_cli_trains_and_reports_bad_keys(tiny_world_dir, dit_config, latents_file, tmp_path, capsys):
    config = tmp_path / "wm.yaml"
    config.write_text(
        f"cosmos_model_name: {tiny_world_dir}\ntransformer_config: {dit_config}\ntrain_data: {latents_file}\n"
        f"output_dir: {tmp_path / 'cli'}\nobserved_frames: 5\nmax_sequence_length: {SEQ}\nmax_steps: 2\n"
        "per_device_train_batch_size: 4\nlearning_rate: 1e-3\nreport_to: none\n"
    )
    assert main(["train-world-model", "--config", str(config), "--disable_tqdm", "true"]) == 0
    assert (tmp_path / "cli" / "transformer").is_dir()
    config.write_text(config.read_text() + "rollout_frame: 2\n")
    assert main(["train-world-model", "--config", str(config)]) == 2
    assert "did you mean 'rollout_frames'" in capsys.readouterr().err


def test_clips_shorter_than_observed_plus_rollout_are_refused(tiny_world_dir, dit_config, latents_file, tmp_path):
    with pytest.raises(TheWorldUserError, match="latent frames; observed_frames"):
        train_world_model(arguments(tiny_world_dir, dit_config, latents_file, tmp_path / "x", rollout_frames=2))


def test_activation_checkpointing_reaches_the_dit(tiny_world_dir, dit_config, latents_file, tmp_path):
    result = train_world_model(arguments(tiny_world_dir, dit_config, latents_file, tmp_path / "ckpt", max_steps=1,
                                         activation_checkpointing="true"))  # fmt: skip
    assert result.trainer.model.transformer.gradient_checkpointing is True
    assert result.trainer.args.ddp_find_unused_parameters is False  # every DiT parameter is in every step
