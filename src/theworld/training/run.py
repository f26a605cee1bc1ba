"""`train(config)`: one stage of TheWorld training, start to finish.

1. read the data with the shared loaders (`theworld.data.loading.load_samples`);
2. load the model: from a Gemma 3 checkpoint, or from an earlier stage's output_dir (its weights
   only: the optimizer, scheduler and step count start fresh, and the log says so);
3. apply the stage (which parameters train) and keep trainable weights in fp32;
4. train with `TheWorldTrainer` (resuming a checkpoint of the *same* stage restores optimizer,
   scheduler, step, RNG and data position);
5. write the final model to output_dir, loadable by `TheWorld.from_pretrained(output_dir)`.

Precision (`bf16: true`): frozen weights are loaded in bf16, trainable weights are kept in fp32
(they are the optimizer's master copies), and the Trainer's bf16 autocast runs the forward pass in
bf16. No fp16 path is offered: Gemma overflows in fp16.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from theworld.errors import TheWorldUserError
from theworld.training.config import TrainConfig
from theworld.training.stages import LoraSettings, apply_stage, cast_trainable_to_fp32

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: str
    global_step: int
    metrics: dict[str, float]
    trainable_names: list[str]
    dropped_samples: list[str]
    trainer: Any = None


def resolve_checkpoint(config: TrainConfig) -> str | None:
    """The checkpoint folder to resume from, or None."""
    value = config.resume_from_checkpoint
    if value is None:
        return None
    if value == "latest":
        from transformers.trainer_utils import get_last_checkpoint

        found = get_last_checkpoint(config.output_dir) if os.path.isdir(config.output_dir) else None
        if found is None:
            raise TheWorldUserError(f"resume_from_checkpoint=latest: no checkpoint-N folder in {config.output_dir}")
        return found
    return value


def _local_or_id(value: str | None) -> str | None:
    """Absolute path for a local folder (so saved configs work from any working directory), else unchanged."""
    if value is not None and os.path.exists(value):
        return os.path.abspath(value)
    return value


def load_model(config: TrainConfig):
    """TheWorld for this run, plus the earlier stage's record when it starts from a TheWorld output."""
    from theworld.model.modeling import TheWorld
    from theworld.training.trainer import TrainingInfo

    source = _local_or_id(config.model_name_or_path)
    cosmos = _local_or_id(config.cosmos_model_name)
    previous = TrainingInfo.load(source) if os.path.isdir(source) else None
    kwargs: dict[str, Any] = {"enable_world": config.enable_world}
    # With a latent cache the VAE is never run: it is not loaded (not even the one an earlier
    # stage's config names), only recorded in the config below.
    if config.enable_world:
        kwargs["cosmos_model_name"] = None if config.latent_cache_dir else cosmos
    for key in ("world_image_size", "world_tokens_per_frame", "world_num_frames", "world_projector_type", "world_bidirectional"):
        if getattr(config, key) is not None:
            kwargs[key] = getattr(config, key)
    if config.bf16:
        kwargs["dtype"] = torch.bfloat16
    else:
        kwargs["dtype"] = torch.float32
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    if previous is not None and previous.enable_world != config.enable_world:
        raise TheWorldUserError(
            f"model_name_or_path {source} was trained with enable_world={previous.enable_world}, "
            f"this config says enable_world={config.enable_world}"
        )
    try:
        model = TheWorld.from_pretrained(source, **kwargs)
    except TheWorldUserError:
        raise
    except (OSError, ValueError) as err:
        raise TheWorldUserError(f"model_name_or_path: cannot load {source}: {err}") from None
    if config.enable_world and cosmos is not None:
        model.config.cosmos_model_name = cosmos
    if previous is not None:
        logger.info(
            "stage %s starts from the weights of %s (stage %s, step %d): weights only; the optimizer, "
            "scheduler and step count start fresh",
            config.stage, source, previous.stage, previous.global_step,
        )  # fmt: skip
    return model, previous


def build_trainer(config: TrainConfig, model=None, previous=None, resume: str | None = None):
    """Everything up to `trainer.train()`: data, model, stage, collator, TrainingArguments, trainer."""
    from transformers import TrainingArguments, set_seed

    from theworld.processing.processor import TheWorldProcessor
    from theworld.training.collator import TheWorldCollator
    from theworld.training.dataset import load_dataset
    from theworld.training.preflight import check_dataset
    from theworld.training.trainer import TheWorldTrainer, TrainingInfo, check_resumable

    set_seed(config.seed)
    train_dataset = load_dataset(
        config.train_data,
        format=config.train_data_format,
        image_folder=config.image_folder,
        max_skip_fraction=config.max_skip_fraction,
        limit=config.max_train_samples,
        name="train",
    )
    eval_dataset = None
    if config.eval_data:
        eval_dataset = load_dataset(
            config.eval_data,
            format=config.eval_data_format,
            image_folder=config.image_folder,
            max_skip_fraction=config.max_skip_fraction,
            limit=config.max_eval_samples,
            name="eval",
        )
    if model is None:
        model, previous = load_model(config)
    lora = LoraSettings(config.lora_r, config.lora_alpha, config.lora_dropout, list(config.lora_target_modules))
    trainable = apply_stage(
        model, config.stage, use_lora=config.use_lora, lora=lora, train_cosmos_vae=config.train_cosmos_vae
    )
    if config.bf16:
        cast_trainable_to_fp32(model)
    if resume is not None:
        from theworld.training.trainer import TRAINING_INFO_NAME

        info = TrainingInfo.load(resume)
        if info is None:
            raise TheWorldUserError(f"resume_from_checkpoint: {resume} has no {TRAINING_INFO_NAME}")
        check_resumable(info, config.stage, trainable, resume)

    processor_source = _local_or_id(config.model_name_or_path)
    processor = TheWorldProcessor.from_model_config(processor_source, model.config)
    # Every sample checked before step 1 (clip lengths, something to learn), with the processor that builds the batches.
    for key, dataset in (("train_data", train_dataset), ("eval_data", eval_dataset)):
        if dataset is not None:
            check_dataset(dataset, processor, source=f"{key} {getattr(config, key)}", max_skip_fraction=config.max_skip_fraction)
    latent_cache = None
    if config.latent_cache_dir and config.enable_world:
        latent_cache = open_latent_cache(config, [d for d in (train_dataset, eval_dataset) if d is not None])
    collator = TheWorldCollator(
        processor, max_length=config.max_length, on_truncated=config.on_truncated, latent_cache=latent_cache
    )
    base = model.config.base_model_name_or_path
    info = TrainingInfo(
        stage=config.stage,
        trainable_parameters=trainable,
        base_model_name_or_path=base,
        cosmos_model_name=model.config.cosmos_model_name,
        enable_world=config.enable_world,
        use_lora=config.use_lora,
        lora=lora.to_dict() if config.use_lora else None,
        initialized_from=_local_or_id(config.model_name_or_path) if previous is not None else None,
    )
    inherited = list(previous.saved_keys) if previous is not None else []
    args = TrainingArguments(**training_arguments(config, has_eval=eval_dataset is not None))
    check_process_group(args)
    trainer = TheWorldTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        stage=config.stage,
        trainable_names=trainable,
        processor=processor,
        training_info=info,
        inherited_keys=inherited,
    )
    return trainer


def training_arguments(config: TrainConfig, has_eval: bool = False) -> dict[str, Any]:
    """TrainConfig -> TrainingArguments keywords (the settings TheWorld fixes are explained inline)."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    args: dict[str, Any] = dict(
        output_dir=config.output_dir,
        max_steps=config.max_steps,
        num_train_epochs=config.num_train_epochs,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.effective_learning_rate(),
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler_type,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=(config.eval_steps or config.save_steps) if has_eval else None,
        seed=config.seed,
        bf16=config.bf16,
        report_to=[r for r in config.report_to if r != "none"] or "none",
        push_to_hub=config.push_to_hub,
        hub_model_id=config.hub_model_id,
        hub_strategy="end",
        dataloader_num_workers=config.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,  # the dataset yields Samples; the collator builds the model inputs
        label_names=["labels"],
        prediction_loss_only=True,
        include_num_input_tokens_seen="non_padding",  # for tokens/s
        average_tokens_across_devices=True,  # num_items_in_batch counts every process's tokens
        ddp_find_unused_parameters=False,  # the trainer's zero-weighted term reaches every trainable tensor
        disable_tqdm=False,
        # Without a GPU, processes started by torchrun / `accelerate launch --multi_gpu` must join a
        # gloo process group on the CPU; transformers only does that with use_cpu=True.
        use_cpu=not _has_accelerator(),
    )
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing: gradients reach the world projector through frozen layers
        # without `enable_input_require_grads`.
        name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
        args[name] = True
        args[f"{name}_kwargs"] = {"use_reentrant": False}
    return args


def _has_accelerator() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps is not None and mps.is_available())


def check_process_group(args) -> None:
    """Processes launched as N ranks that did not form a process group would each train alone and
    write the same output_dir: refuse instead."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and args.world_size != launched:
        raise TheWorldUserError(
            f"this process is one of {launched} launched ranks, but the Trainer sees world_size={args.world_size}: "
            "the processes did not form a process group (see docs/training.md, 'Multi-process')"
        )


def open_latent_cache(config: TrainConfig, datasets: list) -> Any:
    """The latent cache `theworld cache-latents` built for this config, checked to hold every visual."""
    from theworld.training.latent_cache import open_for_training

    cache = open_for_training(config)
    for dataset in datasets:
        cache.check_complete(dataset.samples)  # fail before step 1, not at the first miss
    logger.info("world latents come from the cache in %s (%d latents); the VAE is not run", config.latent_cache_dir, len(cache))
    return cache


def train(config: TrainConfig) -> TrainResult:
    """Run one stage as configured; returns where the model went and the final metrics."""
    resume = resolve_checkpoint(config)
    if resume is None and os.path.isdir(config.output_dir):
        from transformers.trainer_utils import get_last_checkpoint

        existing = get_last_checkpoint(config.output_dir)
        if existing is not None:
            logger.warning(
                "%s already holds %s; this run starts from step 0 (set resume_from_checkpoint: latest to continue it)",
                config.output_dir, os.path.basename(existing),
            )  # fmt: skip
    trainer = build_trainer(config, resume=resume)
    if resume is not None:
        logger.info("resuming stage %s from %s", config.stage, resume)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.check_something_was_supervised()  # before the final model is written
    trainer.save_final()
    if config.push_to_hub:
        trainer.push_to_hub(commit_message=f"TheWorld stage {config.stage}")
    dropped = list(trainer.data_collator.dropped)
    if dropped:
        logger.warning("%d samples were dropped for length (on_truncated=drop): %s", len(dropped), dropped[:20])
    metrics = dict(result.metrics)
    logger.info("stage %s done after %d steps; model in %s", config.stage, trainer.state.global_step, config.output_dir)
    return TrainResult(
        output_dir=config.output_dir,
        global_step=trainer.state.global_step,
        metrics=metrics,
        trainable_names=list(trainer.trainable_names),
        dropped_samples=dropped,
        trainer=trainer,
    )
