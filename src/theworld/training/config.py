"""`TrainConfig`: transformers' `TrainingArguments` plus TheWorld's own keys, read by `HfArgumentParser`
from a YAML/JSON file and `--key value` overrides, with errors that name the key or file."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser, SchedulerType, TrainingArguments

from theworld.errors import TheWorldUserError

STAGES = ("align", "vision", "finetune", "full")
ON_TRUNCATED = ("drop", "error")
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow", "trackio", "all")
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Learning rates used when `learning_rate` is not set (Prismatic's recipe: a high rate for a freshly
# initialised projector alone, a low one once the language model trains; LoRA tolerates a higher one).
DEFAULT_LEARNING_RATES = {"align": 1e-3, "vision": 2e-5, "finetune": 2e-5, "finetune_lora": 2e-4, "full": 2e-5}
LR_SCHEDULERS = tuple(s.value for s in SchedulerType)
REQUIRED = ("model_name_or_path", "train_data", "output_dir")


def _key(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A config key: its default and its one-line meaning (`metadata["help"]`, as `HfArgumentParser` reads it)."""
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class TheWorldArguments:
    """TheWorld's own keys: what to train, on which data, and how the run folder is treated."""

    # --- model ---------------------------------------------------------------------------
    model_name_or_path: str = _key(
        "google/gemma-3-4b-it", "a Gemma 3 checkpoint (hub id or folder), or an earlier stage's output_dir (weights only)"
    )
    cosmos_model_name: str | None = _key(
        "nvidia/Cosmos-Predict2-2B-Video2World", "the world model: a Cosmos repo with vae/, or a VAE folder"
    )
    enable_world: bool = _key(True, "false trains the Gemma control: same data, same stage, no world tokens")
    stage: str = _key("align", f"what trains: {', '.join(STAGES)} (docs/training.md, Stages)")
    attn_implementation: str | None = _key(None, "attention kernel, e.g. eager or sdpa (null: transformers' choice)")
    # world settings; None keeps the model's own (the defaults for a Gemma base, the stored ones for a TheWorld dir)
    world_image_size: int | None = _key(None, "side of the square frames the VAE sees (null: the model's own)")
    world_tokens_per_frame: int | None = _key(None, "world tokens per latent frame, a square (null: the model's own)")
    world_num_frames: int | None = _key(None, "longest clip accepted, 4k+1 frames (null: the model's own)")
    world_projector_type: str | None = _key(None, "mlp or linear (null: the model's own)")
    world_bidirectional: bool | None = _key(None, "world tokens attend to each other both ways (null: the model's own)")
    train_cosmos_vae: bool = _key(False, "explicit opt-in to train the VAE encoder (stage full only; no latent cache)")
    # world rollouts (docs/rollout.md); None keeps the model's own. K > 0 trains from cached rollouts.
    world_rollout_frames: int | None = _key(None, "K imagined latent frames per visual, 0 = none (null: the model's own)")
    world_rollout_steps: int | None = _key(None, "rollout sampler steps (null: the model's own)")
    world_rollout_guidance: float | None = _key(None, "rollout classifier-free guidance, 1.0 = none (null: the model's own)")
    world_rollout_seed: int | None = _key(None, "rollout seed (null: the model's own)")
    world_rollout_prompt: str | None = _key(None, "the world model's fixed text condition (null: the model's own)")
    world_rollout_negative_prompt: str | None = _key(
        None, "negative prompt with guidance > 1 (null: the model's own, by default the pipeline's)"
    )
    world_rollout_max_sequence_length: int | None = _key(None, "T5 tokens of the text condition (null: the model's own)")

    # --- data ----------------------------------------------------------------------------
    train_data: str | None = _key(None, "training data: a JSON/JSONL file or a Hub id owner/name[:split] (required)")
    train_data_format: str = _key("auto", "llava, cc3m, messages, qa, openspatial, vsr, or auto (from the first record)")
    image_folder: str | None = _key(None, "where relative image paths resolve, and must stay (null: the data file's folder)")
    eval_data: str | None = _key(None, "evaluation data for an eval loss every eval_steps (null: none)")
    eval_data_format: str = _key("auto", "format of eval_data, as train_data_format")
    max_train_samples: int | None = _key(None, "read at most this many training samples (null: all)")
    max_eval_samples: int | None = _key(None, "read at most this many evaluation samples (null: all)")
    max_skip_fraction: float = _key(0.01, "share of unusable samples (unreadable, wrong frame count) skipped before the run stops")
    max_length: int = _key(4096, "tokens per sample; longer ones are cut or dropped (see on_truncated)")
    on_truncated: str = _key("drop", "a sample over max_length that cannot be cut: drop (log its id) or error")
    latent_cache_dir: str | None = _key(None, "world latents from `theworld cache-latents` (the VAE is then not loaded)")
    rollout_cache_dir: str | None = _key(
        None, "imagined latents from `theworld cache-latents` when world_rollout_frames > 0 (null: <latent_cache_dir>/rollouts)"
    )

    # --- LoRA (stages finetune / full) ---------------------------------------------------
    use_lora: bool = _key(False, "LoRA on the language model instead of training it fully (finetune / full)")
    lora_r: int = _key(16, "LoRA rank")
    lora_alpha: int = _key(32, "LoRA scale numerator (scale = alpha / r)")
    lora_dropout: float = _key(0.05, "dropout on the LoRA input")
    lora_target_modules: list[str] = _key(
        help="language-model linear layers that get LoRA", default_factory=lambda: list(DEFAULT_LORA_TARGETS)
    )

    # --- the run folder ------------------------------------------------------------------
    resume_weights_only: bool = _key(
        False, "with resume_from_checkpoint: start a new run (step 0, fresh optimizer) from that checkpoint's weights only"
    )
    overwrite_output_dir: bool = _key(
        False, "replace the run already in output_dir (its checkpoints and final model are deleted) instead of refusing"
    )


@dataclass
class TrainConfig(TheWorldArguments, TrainingArguments):
    """One run (one stage): `TrainingArguments` plus `TheWorldArguments`; below, the keys whose default TheWorld changes."""

    output_dir: str | None = _key(None, "folder for checkpoints and the final model (required)")
    num_train_epochs: float = _key(1.0, "passes over the training data (when max_steps <= 0)")
    per_device_train_batch_size: int = _key(1, "training samples per process per micro-batch")
    per_device_eval_batch_size: int = _key(1, "evaluation samples per process per batch")
    learning_rate: float | None = _key(
        None, "peak learning rate (null: the stage's default, align 1e-3, finetune 2e-5, LoRA 2e-4, full 2e-5)"
    )
    lr_scheduler_type: str = _key("cosine", "learning-rate schedule, e.g. cosine, linear, constant")
    bf16: bool = _key(False, "frozen weights and the forward pass in bf16; trainable weights stay fp32")
    gradient_checkpointing: bool = _key(False, "non-reentrant activation checkpointing (less memory, more compute)")
    logging_steps: int = _key(10, "log loss, learning rate and tokens/s every this many optimizer steps")
    save_steps: int = _key(500, "write a checkpoint every this many optimizer steps")
    save_total_limit: int | None = _key(2, "keep at most this many checkpoints (null: all)")
    eval_steps: int | None = _key(None, "eval loss every this many optimizer steps (null: save_steps)")
    resume_from_checkpoint: str | None = _key(
        None, "continue this stage from a checkpoint-N folder, or latest for the newest in output_dir"
    )
    report_to: list[str] = _key(
        help=f"loggers: {', '.join(REPORT_TO)} (a list or comma-separated)", default_factory=lambda: ["none"]
    )
    # Fixed by how TheWorld trains (changing them breaks it): the dataset yields samples that the
    # collator turns into model inputs; the loss alone is evaluated; tokens/s counts real tokens.
    remove_unused_columns: bool = _key(False, "keep false: the collator builds the model inputs from whole samples")
    label_names: list[str] = _key(help="the batch key holding the labels", default_factory=lambda: ["labels"])
    prediction_loss_only: bool = _key(True, "evaluation computes the loss only (no logits are kept)")
    include_num_input_tokens_seen: str = _key("non_padding", "count non-padding input tokens (for tokens/s)")
    # The trainer's zero-weighted term reaches every trainable tensor, so DDP needs no search.
    ddp_find_unused_parameters: bool | None = _key(False, "DDP searches the graph for unused parameters")
    hub_strategy: str = _key("end", "with push_to_hub: when to push (end: the final output_dir only)")
    disable_tqdm: bool | None = _key(False, "no progress bar")

    def __post_init__(self) -> None:
        self.check_values()
        if self.learning_rate is None:
            key = "finetune_lora" if self.use_lora and self.stage in ("finetune", "full") else self.stage
            self.learning_rate = DEFAULT_LEARNING_RATES[key]
        if self.eval_data:
            self.eval_strategy, self.eval_steps = "steps", self.eval_steps or self.save_steps
        if self.gradient_checkpointing:
            # Non-reentrant checkpointing: gradients reach the world projector through frozen layers
            # without `enable_input_require_grads`. (`gradient_checkpointing` is the key users write;
            # transformers 5 calls it `activation_checkpointing`.)
            self.activation_checkpointing = True
            self.activation_checkpointing_kwargs = self.activation_checkpointing_kwargs or {"use_reentrant": False}
        self.gradient_checkpointing = None
        # Without a GPU, processes started by torchrun / `accelerate launch --multi_gpu` must join a
        # gloo process group on the CPU; transformers only does that with use_cpu=True.
        mps = getattr(torch.backends, "mps", None)
        self.use_cpu = self.use_cpu or not (torch.cuda.is_available() or (mps is not None and mps.is_available()))
        super().__post_init__()

    def rollout_cache_path(self) -> str | None:
        """Where the imagined latents of this run live: rollout_cache_dir, else <latent_cache_dir>/rollouts."""
        if self.rollout_cache_dir:
            return self.rollout_cache_dir
        return os.path.join(self.latent_cache_dir, "rollouts") if self.latent_cache_dir else None

    def effective_learning_rate(self) -> float:
        """The peak learning rate: the one set, or the stage's default (resolved when the config is built)."""
        return self.learning_rate

    def check_values(self) -> None:
        """Check values that types alone do not catch; every error names its key."""
        for key, choices in (("stage", STAGES), ("on_truncated", ON_TRUNCATED), ("lr_scheduler_type", LR_SCHEDULERS)):
            if getattr(self, key) not in choices:
                raise TheWorldUserError(_unknown_choice(key, getattr(self, key), choices))
        for value in self.report_to:
            if value not in REPORT_TO:
                raise TheWorldUserError(_unknown_choice("report_to", value, REPORT_TO))
        if self.world_projector_type is not None and self.world_projector_type not in ("mlp", "linear"):
            raise TheWorldUserError(_unknown_choice("world_projector_type", self.world_projector_type, ("mlp", "linear")))
        if self.stage == "align" and not self.enable_world:
            raise TheWorldUserError(
                "stage=align trains only the world projector, and enable_world=false has none: train the Gemma "
                "control with stage=finetune (or full)"
            )
        if self.use_lora and self.stage in ("align", "vision"):
            raise TheWorldUserError(f"use_lora=true needs stage=finetune or full: stage {self.stage} trains no language model")
        if self.train_cosmos_vae and self.stage != "full":
            raise TheWorldUserError("train_cosmos_vae=true is only allowed with stage=full")
        if self.train_cosmos_vae and self.latent_cache_dir:
            raise TheWorldUserError("train_cosmos_vae=true cannot use latent_cache_dir: cached latents come from a frozen VAE")
        if self.rollout_cache_dir and not self.latent_cache_dir:
            raise TheWorldUserError("rollout_cache_dir needs latent_cache_dir: imagined latents are read beside cached latents")
        if self.resume_weights_only and self.resume_from_checkpoint is None:
            raise TheWorldUserError("resume_weights_only=true needs resume_from_checkpoint (the checkpoint to take weights from)")
        if self.fp16:
            raise TheWorldUserError("fp16 is not offered: Gemma overflows in fp16; use bf16=true")
        if self.remove_unused_columns:
            raise TheWorldUserError("remove_unused_columns must stay false: the collator builds the inputs from whole samples")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise TheWorldUserError("set max_steps > 0 or num_train_epochs > 0")
        positive = (
            "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
            "logging_steps", "save_steps", "max_length", "lora_r", "lora_alpha",
        )  # fmt: skip
        for key in positive:
            if getattr(self, key) <= 0:
                raise TheWorldUserError(f"{key} must be positive, got {getattr(self, key)}")
        for key in ("save_total_limit", "eval_steps", "max_train_samples", "max_eval_samples"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise TheWorldUserError(f"{key} must be positive (or null), got {value}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise TheWorldUserError(f"learning_rate must be positive, got {self.learning_rate}")
        for key in ("max_skip_fraction", "lora_dropout"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise TheWorldUserError(f"{key} must be between 0 and 1, got {getattr(self, key)}")
        for key in ("warmup_steps", "dataloader_num_workers", "weight_decay", "max_grad_norm"):
            if getattr(self, key) < 0:
                raise TheWorldUserError(f"{key} must not be negative, got {getattr(self, key)}")
        if not self.lora_target_modules:
            raise TheWorldUserError("lora_target_modules must name at least one module")

    def validate(self, check_paths: bool = True) -> None:
        """`check_values`, and with `check_paths` that the files and folders the config names exist."""
        self.check_values()
        if check_paths:
            self.check_paths()

    def check_paths(self) -> None:
        from theworld.data.loading import FORMATS, looks_like_hub_id
        from theworld.model.checkpoints import looks_local

        for key in ("train_data_format", "eval_data_format"):
            if getattr(self, key) not in FORMATS:
                raise TheWorldUserError(_unknown_choice(key, getattr(self, key), FORMATS))
        for key in ("train_data", "eval_data"):
            value = getattr(self, key)
            if value is None or looks_like_hub_id(value):
                continue
            if not os.path.exists(value):
                raise TheWorldUserError(f"{key}: data file {value} does not exist")
            if os.path.isdir(value):
                raise TheWorldUserError(f"{key}: {value} is a folder; give the JSON/JSONL data file")
        if self.image_folder is not None and not os.path.isdir(self.image_folder):
            raise TheWorldUserError(f"image_folder: folder {self.image_folder} does not exist")
        # latent_cache_dir may not exist yet: `theworld cache-latents` reads this config to build it.
        for key in ("latent_cache_dir", "rollout_cache_dir"):
            if getattr(self, key) is not None and os.path.isfile(getattr(self, key)):
                raise TheWorldUserError(f"{key}: {getattr(self, key)} is a file, not a folder")
        for key in ("model_name_or_path", "cosmos_model_name"):
            value = getattr(self, key)
            if value is not None and looks_local(value) and not os.path.exists(value):
                raise TheWorldUserError(f"{key}: {value} does not exist (and is not a hub id owner/name)")
        if self.resume_from_checkpoint not in (None, "latest") and not os.path.isdir(self.resume_from_checkpoint):
            raise TheWorldUserError(
                f"resume_from_checkpoint: checkpoint folder {self.resume_from_checkpoint} does not exist "
                "(give a checkpoint-N folder, or 'latest')"
            )


# ------------------------------------------------------------------------------------------------
# the keys, as `theworld train --help` shows them

_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig) if f.init}
FIELD_NAMES: tuple[str, ...] = tuple(_FIELDS)
_HINTS = typing.get_type_hints(TrainConfig)


def _unknown_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{key}: unknown value {value!r}{hint} (valid: {', '.join(choices)})"


def unknown_key_message(key: str, source: str) -> str:
    close = difflib.get_close_matches(key, FIELD_NAMES, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else " (see docs/training.md for the valid keys)"
    return f"unknown config key {key!r} in {source}{hint}"


def _parts(key: str) -> tuple[list[Any], bool]:
    """The types a key's annotation allows (None dropped), and whether it allows None."""
    hint = _HINTS[key]
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    args = list(typing.get_args(hint)) if union else [hint]
    return [a for a in args if a is not type(None)], type(None) in args


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is list:
        return "list of " + "/".join(_type_name(a) for a in typing.get_args(kind))
    if typing.get_origin(kind) is typing.Literal or (isinstance(kind, type) and issubclass(kind, Enum)):
        return "str"
    return getattr(kind, "__name__", str(kind))


def key_type(key: str) -> str:
    """The type of config key `key` as a user writes it: `int`, `float or null`, `list of str`, ..."""
    kinds, optional = _parts(key)
    names = list(dict.fromkeys(_type_name(k) for k in kinds))
    return " or ".join(names + (["null"] if optional else []))


def key_default(key: str) -> str:
    """The default of config key `key` as YAML would write it (`null`, `true`, `a,b`)."""
    spec = _FIELDS[key]
    value = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default  # type: ignore[misc]
    if isinstance(value, Enum):
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return json.dumps(value) if isinstance(value, dict) else str(value)


def key_help(key: str) -> str:
    """The meaning of config key `key` (its field's `metadata["help"]`)."""
    return _FIELDS[key].metadata.get("help", "")


# ------------------------------------------------------------------------------------------------
# reading: a file's values and command-line overrides -> `HfArgumentParser` -> TrainConfig

_NULL = ("null", "none", "~")


class _ConfigParser(HfArgumentParser):
    """`HfArgumentParser` whose errors are `TheWorldUserError`s naming the key and what it expects."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(TrainConfig, allow_abbrev=False)
        self.values = values

    def error(self, message: str) -> typing.NoReturn:
        match = re.search(r"argument --([\w-]+)", message)
        key = match.group(1).replace("-", "_") if match else None
        if key not in self.values:
            raise TheWorldUserError(f"config: {message}")
        kinds, _ = _parts(key)
        choices = [k for k in kinds if isinstance(k, type) and issubclass(k, Enum)]
        if choices and "invalid choice" in message:
            raise TheWorldUserError(_unknown_choice(key, self.values[key], tuple(c.value for c in choices[0])))
        raise _wrong_type(key, self.values[key])


def _wrong_type(key: str, value: Any) -> TheWorldUserError:
    kinds, _ = _parts(key)
    words = {int: "an integer", float: "a number", bool: "true or false", list: "a list of strings (or one comma-separated string)"}
    expected = words.get(typing.get_origin(kinds[0]) or kinds[0], "a string")
    return TheWorldUserError(f"{key}: expected {expected}, got {value!r} ({type(value).__name__})")


def _arguments(key: str, value: Any) -> list[str] | None:
    """`--key` and its value(s) as command-line strings, for `HfArgumentParser`; None for null."""
    kinds, optional = _parts(key)
    is_list = typing.get_origin(kinds[0]) is list
    if value is None or (isinstance(value, str) and value.strip().lower() in _NULL and optional):
        if not optional:
            raise TheWorldUserError(f"{key}: a value is required (got null)")
        return None
    if is_list:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
            raise _wrong_type(key, value)
        return [f"--{key}", *value]
    if isinstance(value, dict) and any((typing.get_origin(k) or k) is dict for k in kinds):
        return [f"--{key}", json.dumps(value)]
    if isinstance(value, (list, tuple, dict)) or (isinstance(value, bool) and bool not in kinds):
        raise _wrong_type(key, value)
    if isinstance(value, float) and value.is_integer() and int in kinds:
        value = int(value)
    return [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]


def build_config(
    values: dict[str, Any], source: str = "config", overrides: dict[str, Any] | None = None, check_paths: bool = True
) -> TrainConfig:
    """A validated TrainConfig from file values plus command-line overrides (strings, parsed by type)."""
    merged: dict[str, Any] = {}
    for where, items in ((source, values), ("the command line", overrides or {})):
        for key, value in items.items():
            if key not in _FIELDS:
                raise TheWorldUserError(unknown_key_message(str(key), where))
            merged[key] = value
    parser = _ConfigParser(merged)
    argv: list[str] = []
    for key, value in merged.items():
        arguments = _arguments(key, value)
        if arguments is None:
            parser.set_defaults(**{key: None})
        else:
            argv += arguments
    for key in REQUIRED:
        if merged.get(key, _FIELDS[key].default) is None:
            raise TheWorldUserError(f"{key} is required (set it in the config file or with --{key})")
    try:
        (config,) = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    except ValueError as err:  # TrainingArguments' own checks (e.g. an option transformers refuses)
        raise TheWorldUserError(f"config: {err}") from None
    if check_paths:
        config.check_paths()
    return config


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML or JSON mapping from a file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise TheWorldUserError(f"config file {path} does not exist")
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text) if text.strip() else {}
        else:
            data = yaml.safe_load(text) or {}
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:  # user errors: name the file
        raise TheWorldUserError(f"config file {path} could not be parsed: {err}") from None
    if not isinstance(data, dict):
        raise TheWorldUserError(f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def load_config(
    path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None, check_paths: bool = True
) -> TrainConfig:
    """Read `path` (YAML or JSON; optional) and apply `overrides` ({key: value}) on top."""
    values = read_config_file(path) if path is not None else {}
    return build_config(values, source=str(path) if path else "config", overrides=overrides, check_paths=check_paths)


def parse_override_args(extras: list[str]) -> dict[str, str]:
    """`["--key", "value", "--other=value"]` -> {"key": "value", "other": "value"} (dashes read as underscores)."""
    overrides: dict[str, str] = {}
    i = 0
    while i < len(extras):
        token = extras[i]
        if not token.startswith("--") or len(token) == 2:
            raise TheWorldUserError(f"unexpected argument {token!r}: overrides are given as --key value")
        name, eq, value = token[2:].partition("=")
        name = name.replace("-", "_")
        if not eq:
            if i + 1 >= len(extras) or (extras[i + 1].startswith("--") and len(extras[i + 1]) > 2):
                raise TheWorldUserError(f"--{name} needs a value")
            value = extras[i + 1]
            i += 1
        overrides[name] = value
        i += 1
    return overrides
