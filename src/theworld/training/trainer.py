"""`TheWorldTrainer`: transformers' `Trainer`, extended where TheWorld differs (docs/training.md, The loss and
the trainer; Checkpoints): a loss over supervised tokens only, a zero-weighted term so DDP sees every trainable
parameter, adapter-only atomic checkpoints, non-finite values that stop the run, one progress bar."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from theworld.errors import TheWorldUserError
from theworld.model.modeling import WORLD_ADAPTER_NAME
from theworld.training.checkpoint_io import publish_directory, write_checksums
from theworld.training.loss import IGNORE_INDEX, supervised_lm_loss
from theworld.training.nonfinite import NonFiniteGradientGuard, check_loss
from theworld.training.stages import has_lora, lora_state_dict, merge_lora

logger = logging.getLogger(__name__)

TRAINING_INFO_NAME = "theworld_training.json"
STAGING_DIR = ".checkpoint-staging"
LORA_DIR = "lora"
LORA_WEIGHTS_NAME = "lora_adapter.safetensors"
LORA_CONFIG_NAME = "lora_config.json"
WORLD_PREFIXES = ("world_projector.", "world_encoder.")
VISION_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.")


@dataclass
class TrainingInfo:
    """What a checkpoint or output folder was trained as; written next to its weights."""

    stage: str
    trainable_parameters: list[str]
    saved_keys: list[str] = field(default_factory=list)
    base_model_name_or_path: str | None = None
    cosmos_model_name: str | None = None
    enable_world: bool = True
    use_lora: bool = False
    lora: dict | None = None
    lora_merged: bool = False
    initialized_from: str | None = None
    global_step: int = 0

    def save(self, directory: str) -> None:
        Path(directory, TRAINING_INFO_NAME).write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: str) -> TrainingInfo | None:
        path = Path(directory, TRAINING_INFO_NAME)
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class TheWorldProgressCallback(TrainerCallback):
    """A progress bar showing loss, learning rate and tokens/s; replaces the Trainer's own."""

    def __init__(self, description: str = "train") -> None:
        self.description = description
        self.bar: tqdm | None = None
        self._last_time: float | None = None
        self._last_tokens = 0
        self.postfix: dict[str, str] = {}

    def tokens_per_second(self, state) -> float | None:
        """Non-padding input tokens per second since the previous call (all processes)."""
        now, last_time, last_tokens = time.perf_counter(), self._last_time, self._last_tokens
        self._last_time, self._last_tokens = now, state.num_input_tokens_seen
        if last_time is None or now <= last_time:
            return None
        return (state.num_input_tokens_seen - last_tokens) / (now - last_time)

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time, self._last_tokens = time.perf_counter(), state.num_input_tokens_seen
        if state.is_world_process_zero and not args.disable_tqdm:
            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc=self.description, unit="step", dynamic_ncols=True
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self.postfix = {"loss": f"{logs['loss']:.4f}"}
            if "learning_rate" in logs:
                self.postfix["lr"] = f"{logs['learning_rate']:.2e}"
            if logs.get("tokens_per_second") is not None:
                self.postfix["tok/s"] = f"{logs['tokens_per_second']:.0f}"
            if self.bar is not None:
                self.bar.set_postfix(self.postfix, refresh=False)
        shown = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items()}
        logger.info("step %d: %s", state.global_step, shown)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _NothingToLearnCallback(TrainerCallback):
    """An epoch without one supervised token means every later epoch is the same: stop there, not at max_steps."""

    def __init__(self, trainer: TheWorldTrainer) -> None:
        self.trainer = trainer

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer.check_something_was_supervised()


class AtomicCheckpoints(TrainerCallback):
    """Checkpoints appear whole or not at all: the save goes to `output_dir/.checkpoint-staging`; `on_save`
    checksums and fsyncs it, renames it to `checkpoint-N` and rotates old checkpoints."""

    def __init__(self) -> None:
        self.run_dir: str | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save and self.run_dir is None:
            self.run_dir = args.output_dir
            staging = os.path.join(self.run_dir, STAGING_DIR)
            if args.should_save:
                shutil.rmtree(os.path.join(staging, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"), ignore_errors=True)
                os.makedirs(staging, exist_ok=True)  # (a run killed mid-save left the folder above)
            PartialState().wait_for_everyone()
            args.output_dir = staging

    on_epoch_end = on_step_end

    def on_save(self, args, state, control, **kwargs):
        if self.run_dir is None:
            return
        staging, args.output_dir, self.run_dir = args.output_dir, self.run_dir, None
        PartialState().wait_for_everyone()  # every rank has written its RNG state
        if args.should_save:
            name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            write_checksums(os.path.join(staging, name))  # fsyncs every file: the rename never outruns the data
            publish_directory(os.path.join(staging, name), os.path.join(args.output_dir, name))
            with contextlib.suppress(OSError):
                os.rmdir(staging)  # only when empty
            logger.info("checkpoint %s complete", os.path.join(args.output_dir, name))
            rotate_checkpoints(
                output_dir=args.output_dir,
                save_total_limit=args.save_total_limit,
                best_model_checkpoint=state.best_model_checkpoint,
                use_mtime=False,
            )
        PartialState().wait_for_everyone()


class TheWorldTrainer(Trainer):
    """`Trainer` for one stage of TheWorld; see the module docstring for what it changes."""

    # `compute_loss` divides by `num_items_in_batch` (tokens of the whole optimizer step): the
    # Trainer must not divide again by the accumulation steps.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args: Any,
        stage: str,
        trainable_names: list[str],
        processor: Any = None,
        training_info: TrainingInfo | None = None,
        inherited_keys: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Gemma 3 says `accepts_loss_kwargs = False`; our loss does use `num_items_in_batch`, so
        # the Trainer must count supervised tokens per optimizer step.
        self.model_accepts_loss_kwargs = True
        self.stage = stage
        self.trainable_names = list(trainable_names)
        self.inherited_keys = list(inherited_keys or [])
        self.merged_lora_keys: list[str] = []
        self.processor = processor
        self.training_info = training_info or TrainingInfo(stage=stage, trainable_parameters=self.trainable_names)
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self._world_params = [p for n, p in named if n.startswith(WORLD_PREFIXES)]
        self._vision_params = [p for n, p in named if n.startswith(VISION_PREFIXES)]
        # Frozen parts that see no gradient stay in eval mode (the Trainer calls model.train() every
        # step): dropout-free, deterministic features. The frozen language model is left in train
        # mode, because gradient checkpointing only runs in train mode.
        inner = self.model
        parts = [getattr(inner, "world_encoder", None), inner.model.vision_tower, inner.model.multi_modal_projector]
        self._frozen_eval_parts = [m for m in parts if m is not None and not any(p.requires_grad for p in m.parameters())]
        self._step_samples: list[str] = []  # sample ids of the current optimizer step (for error messages)
        self.supervised_tokens_seen: torch.Tensor | int = 0  # summed num_items_in_batch of this process's steps
        self.training_batches_seen = 0
        self.progress = TheWorldProgressCallback(description=f"{stage}")
        self.remove_callback(ProgressCallback)
        self.remove_callback(PrinterCallback)
        for callback in (self.progress, NonFiniteGradientGuard(self._step_samples), AtomicCheckpoints()):
            self.add_callback(callback)
        self.add_callback(_NothingToLearnCallback(self))

    # ---------------------------------------------------------------------------------------
    # loss

    def _unused_parameter_term(self, inputs: dict[str, Any]) -> torch.Tensor | float:
        """0 x (parameters this batch does not reach): keeps DDP's gradient hooks firing on every rank."""
        unused: list[torch.nn.Parameter] = []
        if inputs.get("world_pixel_values") is None and inputs.get("world_latents") is None:
            unused += self._world_params
        if inputs.get("pixel_values") is None:
            unused += self._vision_params
        if not unused:
            return 0.0
        return torch.stack([p.sum().float() for p in unused]).sum() * 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        sample_ids = inputs.pop("sample_ids", None)
        if model.training:  # before the clamp below: a run that never sees a supervised token must fail
            self.training_batches_seen += 1
            self.supervised_tokens_seen += num_items_in_batch if num_items_in_batch is not None else labels.ne(IGNORE_INDEX).sum()
        if num_items_in_batch is not None:
            # A step whose samples were all dropped has 0 supervised tokens: 0 / 1, never 0 / 0.
            tensor = torch.is_tensor(num_items_in_batch)
            num_items_in_batch = num_items_in_batch.clamp(min=1) if tensor else max(int(num_items_in_batch), 1)
        if model.training:
            for part in self._frozen_eval_parts:
                part.eval()
        loss, _ = supervised_lm_loss(model, inputs, labels, num_items_in_batch)
        if model.training:
            loss = loss + self._unused_parameter_term(inputs)
            self._step_samples.extend(sample_ids or [])
            check_loss(loss, self.state.global_step + 1, sample_ids)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # `num_items_in_batch` is summed over processes and DDP averages gradients over them.
            loss = loss * self.accelerator.num_processes
        return (loss, None) if return_outputs else loss

    def check_something_was_supervised(self) -> None:
        """Fail a run whose steps so far saw no supervised token: a model saved from them would look trained.
        The count is `num_items_in_batch`, summed over processes, so every rank decides alike."""
        if self.training_batches_seen == 0 or int(self.supervised_tokens_seen) > 0:
            return  # nothing ran in this process yet (e.g. resumed at the last step), or something was learnt
        collator = self.data_collator
        dropped = list(getattr(collator, "dropped", []))
        detail = f" (dropped: {', '.join(dropped[:5])}{', ...' if len(dropped) > 5 else ''})" if dropped else ""
        raise TheWorldUserError(
            f"{self.training_batches_seen} training batches saw no supervised token: every sample drawn was dropped for "
            f"length (max_length={getattr(collator, 'max_length', None)}, on_truncated=drop){detail} or has no answer "
            "tokens. Raise max_length, or check the data"
        )

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation: the mean loss over this batch's supervised tokens; no logits are kept."""
        inputs = dict(self._prepare_inputs(inputs))
        labels = inputs.pop("labels")
        inputs.pop("sample_ids", None)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, _ = supervised_lm_loss(model, inputs, labels)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            rate = self.progress.tokens_per_second(self.state)
            if rate is not None:
                logs["tokens_per_second"] = round(rate, 2)
        super().log(logs, start_time)

    # ---------------------------------------------------------------------------------------
    # saving

    def saved_keys(self, state_keys) -> list[str]:
        """Tensors a checkpoint / output holds: trainable ones, merged LoRA bases, and those inherited from the
        earlier stage this run started from (so its training is not lost when this stage trains less)."""
        state_keys = set(state_keys)
        ordered = dict.fromkeys(self.inherited_keys + self.trainable_names + self.merged_lora_keys)
        return [key for key in ordered if key in state_keys]

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write the trainable tensors + config + stage record (gathered on every process, written by the main one)."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        state_dict = self.accelerator.get_state_dict(self.model_wrapped)
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        keys = self.saved_keys(state_dict.keys())
        tensors = {k: state_dict[k].detach().to("cpu").contiguous() for k in keys}
        save_file(tensors, os.path.join(output_dir, WORLD_ADAPTER_NAME), metadata={"format": "pt"})
        model.config.save_pretrained(output_dir)
        info = self.training_info
        info.saved_keys = keys
        info.global_step = self.state.global_step
        info.lora_merged = bool(self.merged_lora_keys)
        info.save(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        logger.info("saved %d trainable tensors (stage %s) to %s", len(keys), self.stage, output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume the checkpoint's trainable tensors: the one private Trainer method overridden (it wants a full model)."""
        info = TrainingInfo.load(resume_from_checkpoint)
        if info is None:
            raise TheWorldUserError(f"{resume_from_checkpoint} is not a TheWorld checkpoint (no {TRAINING_INFO_NAME})")
        check_resumable(info, self.stage, self.trainable_names, resume_from_checkpoint)
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        target.load_world_adapter(resume_from_checkpoint)
        logger.info("resumed weights, optimizer, scheduler, RNG and data position from %s", resume_from_checkpoint)

    def save_final(self) -> str:
        """The finished model in output_dir; LoRA goes to `lora/` unmerged, then is merged so loading needs no peft."""
        output_dir = self.args.output_dir
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if has_lora(model):
            if self.args.should_save:
                lora_dir = os.path.join(output_dir, LORA_DIR)
                os.makedirs(lora_dir, exist_ok=True)
                save_file(lora_state_dict(model), os.path.join(lora_dir, LORA_WEIGHTS_NAME), metadata={"format": "pt"})
                with open(os.path.join(lora_dir, LORA_CONFIG_NAME), "w", encoding="utf-8") as handle:
                    json.dump(self.training_info.lora or {}, handle, indent=2)
            self.merged_lora_keys = merge_lora(model)
            logger.info("merged LoRA into %d language-model weights", len(self.merged_lora_keys))
        self.save_model(output_dir)
        if self.args.should_save and self.processor is not None:
            self.processor.save_pretrained(output_dir)
        return output_dir


def check_resumable(info: TrainingInfo, stage: str, trainable_names: list[str], checkpoint: str) -> None:
    """A checkpoint resumes only the run that wrote it: same stage, same trainable tensors in the same order."""
    if info.stage != stage:
        raise TheWorldUserError(
            f"resume_from_checkpoint: {checkpoint} was written by stage {info.stage!r}, this run is stage {stage!r}. "
            f"To start a new stage from it, set model_name_or_path to that stage's output_dir and leave "
            f"resume_from_checkpoint unset (weights only, fresh optimizer)"
        )
    if info.trainable_parameters != trainable_names:
        ours, theirs = set(trainable_names), set(info.trainable_parameters)
        raise TheWorldUserError(
            f"resume_from_checkpoint: {checkpoint} trained a different parameter set "
            f"({len(theirs - ours)} names only there, {len(ours - theirs)} only here; e.g. "
            f"{sorted(theirs ^ ours)[:3]}): check use_lora / lora_* / enable_world against the run that wrote it"
        )

