"""Short training runs on the tiny models: the loss falls, checkpoints hold only trainable tensors and
are written atomically, the output dir reloads to the same logits, gradients weigh every token equally."""

from __future__ import annotations

import glob
import json
import os

import pytest
import torch
from safetensors import safe_open

from theworld.data.loading import load_samples
from theworld.model.modeling import WORLD_ADAPTER_NAME, TheWorld
from theworld.processing.processor import TheWorldProcessor
from theworld.training.collator import TheWorldCollator
from theworld.training.config import build_config
from theworld.training.loss import supervised_lm_loss
from theworld.training.run import build_trainer, train
from theworld.training.trainer import STAGING_DIR, TRAINING_INFO_NAME, TheWorldTrainer


def _image_batch(model, processor_source, data_file):
    samples = [s for s in load_samples(data_file) if s.visuals()]
    processor = TheWorldProcessor.from_model_config(processor_source, model.config)
    return TheWorldCollator(processor)(samples)


def _loss(model, batch) -> float:
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return float(supervised_lm_loss(model, inputs, batch["labels"])[0])


def _adapter_keys(directory) -> list[str]:
    with safe_open(os.path.join(directory, WORLD_ADAPTER_NAME), framework="pt") as handle:
        return list(handle.keys())


def test_align_run_learns_and_writes_a_loadable_output_dir(train_config_values, train_data_file, tiny_gemma_dir):
    values = dict(
        train_config_values,
        max_steps=8,
        learning_rate=1e-2,
        save_steps=3,
        save_total_limit=2,
        eval_data=train_data_file,
        eval_steps=8,
        max_eval_samples=2,
        report_to="tensorboard",
    )
    result = train(build_config(values))
    trainer, out = result.trainer, values["output_dir"]
    model = trainer.model

    # the loss on the image samples falls (only the world projector trained); `fresh` is the
    # run's starting point (same seed before loading)
    from transformers import set_seed

    set_seed(values["seed"])
    fresh = TheWorld.from_pretrained(
        tiny_gemma_dir, cosmos_model_name=values["cosmos_model_name"], dtype=torch.float32,
        world_image_size=64, world_tokens_per_frame=16, world_num_frames=9,
    )  # fmt: skip
    batch = _image_batch(model, tiny_gemma_dir, train_data_file)
    before, after = _loss(fresh, batch), _loss(model, batch)
    print(f"align: image-sample loss {before:.4f} -> {after:.4f}")
    assert after < before - 0.05
    assert any("eval_loss" in entry for entry in trainer.state.log_history)
    assert all("tokens_per_second" in e for e in trainer.state.log_history if "loss" in e and e["step"] > 1)

    # checkpoints: the Trainer's folders, the newest two kept, only trainable tensors inside
    assert sorted(os.path.basename(p) for p in glob.glob(f"{out}/checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]
    assert not os.path.exists(os.path.join(out, STAGING_DIR))
    ckpt = os.path.join(out, "checkpoint-6")
    for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", TRAINING_INFO_NAME, WORLD_ADAPTER_NAME):
        assert os.path.isfile(os.path.join(ckpt, name)), name
    assert not glob.glob(f"{ckpt}/model*.safetensors")
    info = json.load(open(os.path.join(ckpt, TRAINING_INFO_NAME)))
    assert info["stage"] == "align" and info["trainable_parameters"] == result.trainable_names
    assert all(k.startswith("world_projector.") for k in _adapter_keys(ckpt))
    assert glob.glob(f"{out}/runs/**/events.out.tfevents.*", recursive=True)

    # the output dir: adapter + config naming the base + processor; reloads to the same world logits
    config = json.load(open(os.path.join(out, "config.json")))
    # the base is recorded relative to the output dir: a run moved together with its base still loads
    assert config["base_model_name_or_path"] == os.path.relpath(tiny_gemma_dir, out)
    assert config["cosmos_model_name"] == values["cosmos_model_name"]
    reloaded = TheWorld.from_pretrained(out)
    reloaded_processor = TheWorldProcessor.from_pretrained(out)
    assert reloaded_processor.world_tokens_per_frame == 16 and reloaded_processor.world_image_size == 64
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model.eval(), reloaded.eval(), fresh.eval()
    with torch.no_grad():
        trained_logits = model(**inputs).logits
        assert torch.equal(reloaded(**inputs).logits, trained_logits)
        assert not torch.allclose(fresh(**inputs).logits, trained_logits)


def test_killed_checkpoint_write_leaves_the_previous_checkpoint(train_config_values, monkeypatch):
    values = dict(train_config_values, max_steps=4, save_steps=2, per_device_train_batch_size=1)
    calls = {"n": 0}
    original = TheWorldTrainer._save_rng_state

    def dies_on_second_save(self, output_dir):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed while writing checkpoint-4")
        return original(self, output_dir)

    monkeypatch.setattr(TheWorldTrainer, "_save_rng_state", dies_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        train(build_config(values))
    out = values["output_dir"]
    assert sorted(os.path.basename(p) for p in glob.glob(f"{out}/checkpoint-*")) == ["checkpoint-2"]
    from transformers.trainer_utils import get_last_checkpoint

    assert get_last_checkpoint(out) == os.path.join(out, "checkpoint-2")
    for name in ("trainer_state.json", "optimizer.pt", "rng_state.pth", WORLD_ADAPTER_NAME, TRAINING_INFO_NAME):
        assert os.path.isfile(os.path.join(out, "checkpoint-2", name))


class GradRecorder:
    """Callback keeping the world projector's gradients of the first optimizer step."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def __getattr__(self, name):  # every other TrainerCallback event is a no-op
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.grads:
            self.grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_accumulation_weighs_every_answer_token_equally(train_config_values):
    """batch 2 x 1 micro-batch and batch 1 x 2 micro-batches give the same gradient when the two
    samples have different numbers of answer tokens (a per-micro-batch mean would not)."""
    grads = []
    for batch_size, accumulation in ((2, 1), (1, 2)):
        values = dict(
            train_config_values, max_steps=1, per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, max_grad_norm=0.0, save_steps=100,
            output_dir=train_config_values["output_dir"] + f"-{batch_size}x{accumulation}",
        )  # fmt: skip
        trainer = build_trainer(build_config(values))
        recorder = GradRecorder()
        trainer.add_callback(recorder)
        if batch_size == 2:
            first_batch = next(iter(trainer.get_train_dataloader()))
            counts = (first_batch["labels"] != -100).sum(1).tolist()
        trainer.train()
        grads.append(recorder.grads)
    print(f"answer tokens of the two samples of step 1: {counts}")
    assert counts[0] != counts[1]  # else a per-micro-batch mean would agree too
    assert set(grads[0]) == set(grads[1]) and grads[0]
    for name in grads[0]:
        # fp32 reduction order differs between batch 2 and 2 x batch 1 (~4e-4 relative here); the bug this
        # guards against (a per-micro-batch mean with 3 vs 11 tokens) is off by tens of percent.
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-3)


def test_gradient_checkpointing_with_only_the_projector_training(tiny_gemma_dir, tiny_vae_dir, world_settings, train_data_file):
    from theworld.training.stages import apply_stage

    model = TheWorld.from_pretrained(tiny_gemma_dir, cosmos_model_name=tiny_vae_dir, dtype=torch.float32, **world_settings)
    apply_stage(model, "align")
    batch = _image_batch(model, tiny_gemma_dir, train_data_file)
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def grads():
        model.zero_grad()
        model.train()
        supervised_lm_loss(model, inputs, batch["labels"])[0].backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain = grads()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = grads()
    assert all(g.abs().sum() > 0 for g in checkpointed.values())
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_lora_finetune_output_is_merged_and_reloads(train_config_values):
    values = dict(
        train_config_values, stage="finetune", use_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0,
        max_steps=2, learning_rate=1e-2, per_device_train_batch_size=1,
    )  # fmt: skip
    result = train(build_config(values))
    out = values["output_dir"]
    assert os.path.isfile(os.path.join(out, "lora", "lora_adapter.safetensors"))
    keys = _adapter_keys(out)
    assert any(k.endswith("q_proj.weight") for k in keys) and not any(".lora_" in k for k in keys)
    assert not any(k.startswith("model.vision_tower.") for k in keys)
    info = json.load(open(os.path.join(out, TRAINING_INFO_NAME)))
    assert info["use_lora"] and info["lora_merged"] and info["stage"] == "finetune"
    reloaded = TheWorld.from_pretrained(out).eval()
    merged = result.trainer.model.eval()
    ids = torch.tensor([[2, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, merged(input_ids=ids).logits)


def test_gemma_control_finetune_run(train_config_values, tiny_gemma_dir):
    values = dict(train_config_values, enable_world=False, stage="finetune", max_steps=2, learning_rate=1e-3)
    values.pop("cosmos_model_name")
    result = train(build_config(values))
    out = values["output_dir"]
    reloaded = TheWorld.from_pretrained(out)
    assert reloaded.world_projector is None and not reloaded.config.enable_world
    keys = _adapter_keys(out)
    assert "model.language_model.embed_tokens.weight" in keys and not any(k.startswith("world_") for k in keys)
    base = TheWorld.from_pretrained(tiny_gemma_dir, enable_world=False)
    ids = torch.tensor([[2, 40, 41, 42]])
    with torch.no_grad():
        trained = result.trainer.model.eval()(input_ids=ids).logits
        assert torch.equal(reloaded.eval()(input_ids=ids).logits, trained)
        assert not torch.allclose(base.eval()(input_ids=ids).logits, trained)


def test_bf16_run_keeps_fp32_master_weights(train_config_values):
    values = dict(train_config_values, bf16=True, max_steps=2, per_device_train_batch_size=1)
    result = train(build_config(values))
    model = result.trainer.model
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    losses = [e["loss"] for e in result.trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    with safe_open(os.path.join(values["output_dir"], WORLD_ADAPTER_NAME), framework="pt") as handle:
        assert all(handle.get_tensor(k).dtype == torch.float32 for k in handle.keys())


def test_vision_stage_through_the_cli_saves_and_resumes_exactly_what_trains(train_config_values, write_config, tiny_gemma_dir):
    """`theworld train --stage vision`: checkpoints and the output hold exactly the trainable tensors (SigLIP,
    Gemma's multi-modal projector, the world projector), a resume checks them, the language model stays Gemma's."""
    from theworld.cli.main import main
    from theworld.errors import TheWorldUserError

    values = dict(train_config_values, max_steps=2, save_steps=1, save_total_limit=None, learning_rate=1e-3)
    path = write_config(dict(values, stage="align"))
    assert main(["train", "--config", path, "--stage", "vision"]) == 0
    out = values["output_dir"]
    info = json.load(open(os.path.join(out, "checkpoint-1", TRAINING_INFO_NAME)))
    trainable = info["trainable_parameters"]
    assert info["stage"] == "vision"
    assert {n.split(".")[0] if n.startswith("world_") else ".".join(n.split(".")[:2]) for n in trainable} == {
        "world_projector", "model.vision_tower", "model.multi_modal_projector"
    }
    assert not any(n.startswith(("model.language_model.", "lm_head.", "world_encoder.")) for n in trainable)
    for folder in (os.path.join(out, "checkpoint-1"), out):
        assert sorted(_adapter_keys(folder)) == sorted(trainable)  # safetensors lists keys sorted

    # the frozen language model is bit-identical to Gemma's; the vision tower moved
    trained = TheWorld.from_pretrained(out)
    base = TheWorld.from_pretrained(tiny_gemma_dir)
    ours, theirs = trained.state_dict(), base.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs if k.startswith(("model.language_model.", "lm_head.")))
    assert not all(torch.equal(ours[k], theirs[k]) for k in theirs if k.startswith("model.vision_tower."))

    # resume: the same stage continues from its checkpoint; another stage is refused
    resumed = train(build_config(dict(values, stage="vision", max_steps=3, resume_from_checkpoint=os.path.join(out, "checkpoint-2"))))
    assert resumed.global_step == 3 and resumed.trainable_names == trainable
    with pytest.raises(TheWorldUserError, match="written by stage 'vision', this run is stage 'full'"):
        train(build_config(dict(values, stage="full", resume_from_checkpoint=os.path.join(out, "checkpoint-2"))))
