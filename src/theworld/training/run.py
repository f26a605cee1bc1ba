"""`train(config)`: one stage of TheWorld training, start to finish (docs/training.md). output_dir belongs to
one run and one writer (a `RunLock`): a folder holding a run is resumed, replaced or refused, never mixed."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import get_last_checkpoint

from theworld.errors import TheWorldUserError
from theworld.model.modeling import WORLD_ADAPTER_NAME, TheWorld
from theworld.processing.processor import TheWorldProcessor
from theworld.training.checkpoint_io import CHECKPOINT_PATTERN, clear_run, list_checkpoints, verify_checkpoint
from theworld.training.collator import TheWorldCollator
from theworld.training.config import TrainConfig
from theworld.training.dataset import load_datasets
from theworld.training.latent_cache import open_cache
from theworld.training.preflight import check_dataset
from theworld.training.run_lock import RunLock
from theworld.training.sources import encoder_source, local_or_id, resolve_model, world_settings
from theworld.training.stages import LoraSettings, apply_stage, cast_trainable_to_fp32
from theworld.training.trainer import LORA_DIR, STAGING_DIR, TRAINING_INFO_NAME, TrainingInfo
from theworld.training.trainer import TheWorldTrainer, check_resumable

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
        found = get_last_checkpoint(config.output_dir) if os.path.isdir(config.output_dir) else None
        if found is None:
            raise TheWorldUserError(f"resume_from_checkpoint=latest: no checkpoint-N folder in {config.output_dir}")
        return found
    return value


def load_model(config: TrainConfig):
    """TheWorld for this run, plus the earlier stage's record when it starts from a TheWorld output."""
    source = local_or_id(config.model_name_or_path)
    cosmos = local_or_id(config.cosmos_model_name)
    previous = TrainingInfo.load(source) if os.path.isdir(source) else None
    check_rollout_source(config)
    kwargs: dict[str, Any] = world_settings(config)
    # With a latent cache the VAE is never run: it is not loaded (not even the one an earlier
    # stage's config names), only recorded in the config below.
    if config.enable_world:
        kwargs["cosmos_model_name"] = None if config.latent_cache_dir else cosmos
    kwargs["dtype"] = torch.bfloat16 if config.bf16 else torch.float32
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
    set_seed(config.seed)
    train_dataset, eval_dataset = load_datasets(config)
    if model is None:
        model, previous = load_model(config)
    lora = LoraSettings(config.lora_r, config.lora_alpha, config.lora_dropout, list(config.lora_target_modules))
    trainable = apply_stage(
        model, config.stage, use_lora=config.use_lora, lora=lora, train_cosmos_vae=config.train_cosmos_vae
    )
    if config.bf16:
        cast_trainable_to_fp32(model)
    resumed_from = None
    if resume is not None:
        verify_resume(resume, weights_only=config.resume_weights_only)
        resumed_from = TrainingInfo.load(resume)
        if resumed_from is None:
            raise TheWorldUserError(f"resume_from_checkpoint: {resume} has no {TRAINING_INFO_NAME}")
        check_resumable(resumed_from, config.stage, trainable, resume)
        if config.resume_weights_only:
            model.load_world_adapter(resume)
            logger.info(
                "a new run starts from the weights of %s (step %d): weights only; the optimizer, scheduler, step "
                "count, RNG and data order start fresh (resume_weights_only)",
                resume, resumed_from.global_step,
            )  # fmt: skip

    processor = TheWorldProcessor.from_model_config(local_or_id(config.model_name_or_path), model.config)
    # Every sample checked before step 1 (clip lengths, something to learn), for the model's world settings.
    for key, dataset in (("train_data", train_dataset), ("eval_data", eval_dataset)):
        if dataset is not None:
            check_dataset(dataset, model.config, source=f"{key} {getattr(config, key)}", max_skip_fraction=config.max_skip_fraction)
    latent_cache = None
    if config.latent_cache_dir and config.enable_world:
        latent_cache = open_latent_cache(config, model, [d for d in (train_dataset, eval_dataset) if d is not None])
    # (sample ids: named in the error when a batch's loss is not finite)
    collator = TheWorldCollator(
        processor, max_length=config.max_length, on_truncated=config.on_truncated, latent_cache=latent_cache,
        return_sample_ids=True,
    )  # fmt: skip
    info = TrainingInfo(
        config.stage, trainable, base_model_name_or_path=model.config.base_model_name_or_path,
        cosmos_model_name=model.config.cosmos_model_name, enable_world=config.enable_world, use_lora=config.use_lora,
        lora=lora.to_dict() if config.use_lora else None,
        initialized_from=local_or_id(config.model_name_or_path) if previous is not None else None,
    )  # fmt: skip
    inherited = list(previous.saved_keys) if previous is not None else []
    if config.resume_weights_only and resumed_from is not None:
        info.initialized_from = os.path.abspath(resume)
        inherited = list(resumed_from.saved_keys)
    check_process_group(config)
    return TheWorldTrainer(
        model=model, args=config, train_dataset=train_dataset, eval_dataset=eval_dataset, data_collator=collator,
        stage=config.stage, trainable_names=trainable, processor=processor, training_info=info, inherited_keys=inherited,
    )  # fmt: skip


def check_process_group(args) -> None:
    """Refuse N launched ranks that formed no process group: each would train alone into one output_dir."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and args.world_size != launched:
        raise TheWorldUserError(
            f"this process is one of {launched} launched ranks, but the Trainer sees world_size={args.world_size}: "
            "the processes did not form a process group (see docs/training.md, 'Multi-process')"
        )


def check_rollout_source(config: TrainConfig) -> None:
    """World rollouts (K > 0) train from cached rollouts only: one costs ~100 Gemma prompts (docs/rollout.md, Cost)."""
    if not config.enable_world or config.latent_cache_dir:
        return
    frames = resolve_model(config).config.world_rollout_frames
    if frames:
        raise TheWorldUserError(
            f"world_rollout_frames={frames}: training reads imagined latents from a cache; set latent_cache_dir and "
            "run `theworld cache-latents --config <this training config>` first (it encodes and rolls out every "
            "visual once)"
        )


def open_latent_cache(config: TrainConfig, model: Any, datasets: list) -> Any:
    """The run's latent cache (with rollouts: joined with the rollout cache), checked to hold every visual."""
    cache = open_cache(config.latent_cache_dir, model.config, encoder_source(config))
    for dataset in datasets:
        cache.check_complete(dataset.samples)  # fail before step 1, not at the first miss
    logger.info("world latents come from the cache in %s (%d latents); the VAE is not run", config.latent_cache_dir, len(cache))
    if not model.config.world_rollout_frames:
        return cache
    from theworld.world_model.rollout_cache import WorldLatentsWithRollouts

    rollouts = open_rollout_cache(config, model.config, cache)
    for dataset in datasets:
        rollouts.check_complete(dataset.samples)
    logger.info("imagined latents come from the rollout cache in %s; the world model is not run", rollouts.dir)
    return WorldLatentsWithRollouts(cache, rollouts)


def open_rollout_cache(config: TrainConfig, world_config: Any, latent_cache: Any) -> Any:
    """The rollout cache of this run's world settings, keyed as `cache-latents` keyed it, without loading the DiT or T5."""
    from theworld.world_model.model import encoder_identity, identity_from_files, resolve_world_model_folder
    from theworld.world_model.rollout_cache import RolloutCache, rollout_identity
    from theworld.world_model.text import WorldTextCondition, text_encoder_id

    settings = world_config.world_rollout_settings()
    folder = config.rollout_cache_path()
    negative = settings.resolved_negative_prompt
    text = WorldTextCondition.find(folder, settings.prompt, negative, settings.max_sequence_length)
    if text is None:
        raise TheWorldUserError(
            f"rollout cache {folder} holds no rollouts for world_rollout_prompt={settings.prompt!r} (max_sequence_length "
            f"{settings.max_sequence_length}): run `theworld cache-latents --config <this training config>` first"
        )
    cosmos = local_or_id(config.cosmos_model_name or world_config.cosmos_model_name)
    world_folder = resolve_world_model_folder(cosmos, need_text_encoder=False)
    if (world_folder / "text_encoder").is_dir() and text.text_encoder != text_encoder_id(world_folder):
        raise TheWorldUserError(
            f"rollout cache {folder}: its text condition came from another T5 ({text.text_encoder}) than {cosmos}'s "
            f"({text_encoder_id(world_folder)}): run `theworld cache-latents` again"
        )
    identity = identity_from_files(world_folder, settings, text, encoder_identity(latent_cache.fingerprint))
    return RolloutCache(
        folder, latent_cache.settings, rollout_identity(identity), pixel_key=latent_cache.key_for, text_condition=text
    )


def train(config: TrainConfig) -> TrainResult:
    """Run one stage as configured; returns where the model went and the final metrics."""
    # One writer per output_dir. Under DDP the rank-0 process holds the lock for the run.
    with RunLock(config.output_dir, what="training") if _is_main_process() else contextlib.nullcontext():
        resume = resolve_checkpoint(config)
        check_output_dir(config, resume)
        trainer = build_trainer(config, resume=resume)
        if resume is not None and not config.resume_weights_only:
            logger.info("resuming stage %s from %s", config.stage, resume)
        result = trainer.train(resume_from_checkpoint=None if config.resume_weights_only else resume)
        trainer.check_something_was_supervised()  # before the final model is written
        trainer.save_final()
        # With world rollouts the final model keeps the rollout cache's text condition: loading it never loads T5.
        text = getattr(getattr(trainer.data_collator.latent_cache, "rollout_cache", None), "text_condition", None)
        if text is not None and trainer.args.should_save:
            text.save(trainer.args.output_dir)
        if config.push_to_hub:
            trainer.push_to_hub(commit_message=f"TheWorld stage {config.stage}")
        dropped = list(trainer.data_collator.dropped)
        if dropped:
            logger.warning("%d samples were dropped for length (on_truncated=drop): %s", len(dropped), dropped[:20])
        logger.info("stage %s done after %d steps; model in %s", config.stage, trainer.state.global_step, config.output_dir)
        step, names = trainer.state.global_step, list(trainer.trainable_names)
        return TrainResult(config.output_dir, step, dict(result.metrics), names, dropped, trainer)


# ------------------------------------------------------------------------------------------------
# the run folder and the checkpoint a run resumes


def _is_main_process() -> bool:
    """Rank 0 of a launched multi-process run, or a single process (decided before any process group exists)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


# Top-level files and folders of output_dir that belong to a TheWorld run (besides checkpoint-N).
RUN_FILES = (WORLD_ADAPTER_NAME, TRAINING_INFO_NAME, LORA_DIR, STAGING_DIR, "training_args.bin")


def existing_run(output_dir: str) -> list[str]:
    """What in output_dir marks an earlier run: its checkpoint-N folders and its final model, if any."""
    found = [p.name for p in list_checkpoints(output_dir)]
    if any(os.path.isfile(os.path.join(output_dir, n)) for n in (WORLD_ADAPTER_NAME, TRAINING_INFO_NAME)):
        found.append("a final model")
    return found


def _step_of(checkpoint: str | os.PathLike) -> int | None:
    match = CHECKPOINT_PATTERN.match(Path(checkpoint).name)
    return int(match.group(1)) if match else None


def check_output_dir(config: TrainConfig, resume: str | None) -> None:
    """output_dir holds no run, the run being resumed (later checkpoints move to `superseded-<time>/`), or
    (overwrite_output_dir) nothing of an older run."""
    out = config.output_dir
    found = existing_run(out)
    if not found:
        return
    inside = resume is not None and os.path.dirname(os.path.realpath(resume)) == os.path.realpath(out)
    if inside and not config.resume_weights_only:
        step = _step_of(resume)
        later = [p for p in list_checkpoints(out) if step is not None and (_step_of(p) or 0) > step]
        if later and _is_main_process():
            aside = Path(out) / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
            aside.mkdir(exist_ok=True)
            for path in later:
                os.rename(path, aside / path.name)
            logger.warning(
                "resuming %s: the later checkpoints %s of this folder were moved to %s (a resumed run must not mix "
                "with them)",
                os.path.basename(resume), [p.name for p in later], aside,
            )  # fmt: skip
        return
    if inside:  # resume_weights_only from this folder's own checkpoint
        raise TheWorldUserError(
            f"resume_weights_only starts a new run (step 0) from {resume}, which lies in output_dir {out}: the new "
            f"run's checkpoints would mix with the old run's ({', '.join(found)}). Set output_dir to another folder"
        )
    if config.overwrite_output_dir:
        if _is_main_process():
            removed = clear_run(out, RUN_FILES)
            logger.warning("overwrite_output_dir: removed the earlier run in %s (%s)", out, ", ".join(removed))
        return
    raise TheWorldUserError(
        f"output_dir {out} already holds a training run ({', '.join(found)}). Continue it with "
        "--resume_from_checkpoint latest, train into another output_dir, or replace it with "
        "--overwrite_output_dir true"
    )


def verify_resume(checkpoint: str, weights_only: bool = False) -> None:
    """The checkpoint's files are whole (checksums) and hold what the resume restores; raises `CheckpointError`."""
    weights = (WORLD_ADAPTER_NAME, TRAINING_INFO_NAME)
    if weights_only:
        verify_checkpoint(checkpoint, required=weights, only_required=True)
        return
    required = (*weights, TRAINER_STATE_NAME, SCHEDULER_NAME)
    if not any(p.name.startswith("global_step") for p in Path(checkpoint).iterdir()):  # DeepSpeed keeps its own
        required += (OPTIMIZER_NAME,)
    verify_checkpoint(checkpoint, required=required, weights=weights)
