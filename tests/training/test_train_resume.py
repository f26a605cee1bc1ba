"""Resuming a stage restores everything (5 steps + kill + resume == 10 straight steps); a new stage
starts from an earlier stage's weights only."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from theworld.cli.main import main
from theworld.errors import TheWorldUserError
from theworld.model.modeling import WORLD_ADAPTER_NAME
from theworld.training.config import build_config
from theworld.training.run import build_trainer, load_model, train
from theworld.training.trainer import TheWorldTrainer


class KillAfterSave(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed after checkpoint-{self.step}")


@pytest.fixture
def cached_values(train_config_values, write_config, tmp_path):
    """The align config with a latent cache built by `theworld cache-latents` (no VAE in the steps)."""
    values = dict(
        train_config_values, max_steps=10, save_steps=5, save_total_limit=None, per_device_train_batch_size=1,
        gradient_accumulation_steps=2, lr_scheduler_type="cosine", warmup_steps=2, learning_rate=5e-3,
        latent_cache_dir=str(tmp_path / "latents"),
    )  # fmt: skip
    assert main(["cache-latents", "--config", write_config(values), "--no-progress"]) == 0
    return values


def _weights(directory: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(directory, WORLD_ADAPTER_NAME))


def test_resume_after_kill_equals_straight_run(cached_values, tmp_path, monkeypatch):
    straight = train(build_config(dict(cached_values, output_dir=str(tmp_path / "straight"))))

    interrupted = dict(cached_values, output_dir=str(tmp_path / "interrupted"))
    trainer = build_trainer(build_config(interrupted))
    trainer.add_callback(KillAfterSave(step=5))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert sorted(os.listdir(interrupted["output_dir"])) == ["checkpoint-5"]
    calls = []
    original = TheWorldTrainer.training_step
    monkeypatch.setattr(TheWorldTrainer, "training_step", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    resumed = train(build_config(dict(interrupted, resume_from_checkpoint="latest")))

    assert resumed.global_step == straight.global_step == 10
    assert len(calls) == 5 * 2  # steps 6..10 only, 2 micro-batches each
    a, b = _weights(straight.output_dir), _weights(resumed.output_dir)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"resume: max |straight - resumed| over the adapter = {worst:.3g}")
    assert worst <= 1e-6
    # the runs also logged the same losses for steps 6..10
    loss = lambda r: {e["step"]: e["loss"] for e in r.trainer.state.log_history if "loss" in e}  # noqa: E731
    assert loss(straight).keys() == loss(resumed).keys() == set(range(1, 11))
    assert all(abs(loss(straight)[s] - loss(resumed)[s]) < 1e-6 for s in range(6, 11))
    assert straight.trainer.state.num_input_tokens_seen == resumed.trainer.state.num_input_tokens_seen
    # and moved away from the initial weights
    first = _weights(os.path.join(straight.output_dir, "checkpoint-5"))
    assert max(float((first[k] - a[k]).abs().max()) for k in a) > 1e-4


def test_new_stage_loads_weights_only_and_mismatched_resume_is_refused(cached_values, tmp_path, caplog):
    align = train(build_config(dict(cached_values, max_steps=2, save_steps=2, output_dir=str(tmp_path / "align"))))
    finetune = dict(
        cached_values, stage="finetune", model_name_or_path=align.output_dir, max_steps=2, learning_rate=1e-3,
        output_dir=str(tmp_path / "finetune"),
    )  # fmt: skip

    # resuming the align checkpoint as a finetune run is refused, with the way to do it instead
    with pytest.raises(TheWorldUserError, match="written by stage 'align', this run is stage 'finetune'"):
        train(build_config(dict(finetune, resume_from_checkpoint=os.path.join(align.output_dir, "checkpoint-2"))))

    model, previous = load_model(build_config(finetune))
    aligned = _weights(align.output_dir)
    state = model.state_dict()
    assert previous.stage == "align" and all(torch.equal(state[k], v) for k, v in aligned.items())

    with caplog.at_level(logging.INFO, logger="theworld.training.run"):
        result = train(build_config(finetune))
    assert "starts from the weights of" in caplog.text and "weights only" in caplog.text
    assert result.global_step == 2  # fresh step count (and optimizer, scheduler)
    saved = _weights(result.output_dir)
    assert set(aligned) < set(saved) and any(k.startswith("model.language_model.") for k in saved)
    assert not any(k.startswith(("model.vision_tower.", "world_encoder.")) for k in saved)
