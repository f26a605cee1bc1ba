"""What is at a checkpoint name, and what are its world settings: the one place that decides (`resolve`), plus
the adapter format and `load_pretrained`; everything after receives the objects it returns."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from theworld.errors import TheWorldUserError
from theworld.model.configuration import FREEZE_FLAGS, WORLD_SETTINGS, TheWorldConfig

if TYPE_CHECKING:
    from theworld.model.modeling import TheWorld
    from theworld.processing.processor import TheWorldProcessor

logger = logging.getLogger(__name__)

WORLD_ADAPTER_NAME = "world_adapter.safetensors"
WORLD_ENCODER_DIR = "world_encoder"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# `from_pretrained` keywords that are TheWorld's rather than transformers' own.
LOAD_SETTINGS = (*WORLD_SETTINGS, *FREEZE_FLAGS, "base_model_name_or_path")
# The projector's world-rollout tensors (world_rollout_frames > 0 only): left out when a rollout
# checkpoint is loaded with world_rollout_frames=0 (the no-rollout control).
ROLLOUT_KEYS = ("world_projector.rollout_temporal_embedding", "world_projector.imagined_embedding")
HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "force_download")


# ------------------------------------------------------------------------------------------------
# names: local folder or Hub id


def looks_local(name: str) -> bool:
    """True when `name` can only be a filesystem path, never a Hub id 'owner/name' ('runs/gemma' if ./runs exists)."""
    if os.path.exists(name) or os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name:
        return True
    parts = name.split("/")
    return len(parts) != 2 or not all(parts) or os.path.isdir(parts[0])


def check_model_path(
    name: str | os.PathLike, what: str = "model", not_found: str = "{what} folder {name} does not exist"
) -> str:
    """`name` as a string (`~` expanded); raises `not_found` when it is a local path that does not exist."""
    name = os.fspath(name)
    if not os.path.exists(os.path.expanduser(name)) and looks_local(name):
        raise TheWorldUserError(not_found.format(what=what, name=name))
    return os.path.expanduser(name) if name.startswith("~") else name


def portable_base_reference(base: str | None, folder: str | os.PathLike) -> str | None:
    """The base a save in `folder` records: a local folder relative to `folder` ('../x'), a Hub id unchanged."""
    if not base or not os.path.isdir(os.path.expanduser(base)):
        return base
    relative = os.path.relpath(os.path.abspath(os.path.expanduser(base)), os.path.abspath(folder))
    return relative if relative.startswith(".") else f".{os.sep}{relative}"


def absolute_base_reference(recorded: str | None, folder: str | os.PathLike) -> str | None:
    """A recorded base made absolute: './x', '../x' are relative to `folder`, the save that recorded them."""
    if not recorded or not recorded.startswith("."):
        return recorded
    return os.path.normpath(os.path.join(os.path.abspath(folder), recorded))


def resolve_base_checkpoint(recorded: str | None, folder: str | os.PathLike, override: str | None = None) -> str:
    """The base checkpoint of the saved TheWorld folder `folder`, checked to exist when local."""
    config_file = Path(folder, "config.json")
    if override:
        return check_model_path(override, what="base checkpoint (base_model_name_or_path=)")
    if not recorded:
        raise TheWorldUserError(
            f"{folder} holds world weights only and {config_file} names no base checkpoint: "
            "pass base_model_name_or_path= (the Gemma 3 checkpoint it was trained on)"
        )
    base = absolute_base_reference(recorded, folder)
    if not os.path.exists(base) and looks_local(recorded):
        raise TheWorldUserError(
            f"base checkpoint {base} not found ({config_file} records {recorded!r}): it was moved or deleted; "
            f"pass base_model_name_or_path= with its new location, or set it in {config_file}"
        )
    return base


def is_adapter_dir(path: str | None) -> bool:
    """A folder holding `world_adapter.safetensors` and no full model weights."""
    return (
        path is not None
        and os.path.isfile(os.path.join(path, WORLD_ADAPTER_NAME))
        and not any(
            name.startswith("model") and name.endswith((".safetensors", ".safetensors.index.json"))
            for name in os.listdir(path)
        )
    )


def has_tokenizer(path: str) -> bool:
    return not os.path.isdir(path) or any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES)


def read_config_dict(path: str, **hub_kwargs: Any) -> dict[str, Any]:
    from transformers import PretrainedConfig

    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise TheWorldUserError(f"{path} is a directory without config.json: not a checkpoint")
    try:
        return PretrainedConfig.get_config_dict(path, **hub_kwargs)[0]
    except OSError as err:
        raise TheWorldUserError(f"cannot read the config of {path}: {err}") from err


# ------------------------------------------------------------------------------------------------
# resolving a checkpoint


@dataclass
class Resolved:
    """A checkpoint as TheWorld sees it, from config files alone: the config to build (settings applied), the
    weights transformers loads (an adapter's base), the adapter applied after, where encoder and processor load."""

    config: TheWorldConfig
    weights: str | None
    adapter: str | None = None
    from_gemma: bool = False
    encoder_source: str | None = None
    processor_source: str | None = None
    new_vocab_size: int | None = None

    @property
    def base(self) -> str | None:
        """The Gemma 3 checkpoint this model comes from (itself for a Gemma 3 checkpoint)."""
        return self.weights if self.from_gemma else self.config.base_model_name_or_path


def resolve(
    name_or_path: str | os.PathLike | None,
    *,
    config: Any = None,
    hub_kwargs: dict[str, Any] | None = None,
    base_model_name_or_path: str | None = None,
    **settings: Any,
) -> Resolved:
    """What `TheWorld.from_pretrained(name_or_path, config=config, **settings)` loads; `settings` apply as given
    (`cosmos_model_name=None` loads no VAE) and the caller's `config` is never changed."""
    unknown = sorted(set(settings) - set(LOAD_SETTINGS))
    if unknown:
        raise TypeError(f"resolve() got unknown world settings {unknown}")
    hub_kwargs = {k: v for k, v in (hub_kwargs or {}).items() if k in HUB_KWARGS}
    path = None if name_or_path is None else check_model_path(name_or_path)
    adapter = path if path is not None and os.path.isdir(path) and is_adapter_dir(path) else None
    if config is None:
        if path is None:
            raise TheWorldUserError("TheWorld.from_pretrained(None) needs config= (and usually state_dict=)")
        config = read_config_dict(path, **hub_kwargs)
        if config.get("model_type") == TheWorldConfig.model_type:
            config = TheWorldConfig.from_dict(config)
        elif config.get("model_type") != "gemma3":
            raise TheWorldUserError(
                f"{path} holds a {config.get('model_type')!r} model; TheWorld loads Gemma 3 ('gemma3') or TheWorld "
                "checkpoints"
            )
    from_gemma = not isinstance(config, TheWorldConfig)
    if from_gemma:
        if adapter is not None:
            raise TheWorldUserError(f"{path} holds a world adapter but its config is not a TheWorld config")
        config = TheWorldConfig.from_gemma_config(config, base_model_name_or_path=path)
    else:
        config = copy.deepcopy(config)  # the caller's config is not changed by the settings below
    weights = path
    if adapter is not None:  # the weights are the base checkpoint's, the adapter's tensors come after
        weights = resolve_base_checkpoint(config.base_model_name_or_path, path, base_model_name_or_path)
        config.base_model_name_or_path = weights
    elif path is not None and not from_gemma:  # a save records its base relative to itself: made absolute
        config.base_model_name_or_path = absolute_base_reference(config.base_model_name_or_path, path)
    for key, value in settings.items():
        setattr(config, key, value)
    config.validate_world()

    new_vocab_size = None
    if config.enable_world and config.world_token_id is None:
        if weights is None:
            raise TheWorldUserError(
                "enable_world=True without a checkpoint: the config must set start_of_world_token_id, "
                "world_token_id and end_of_world_token_id (they are read from a checkpoint's tokenizer otherwise)"
            )
        new_vocab_size = _resolve_world_token_ids(config, weights, hub_kwargs)

    processor_source = path
    if path is not None and not has_tokenizer(path) and config.base_model_name_or_path:
        processor_source = config.base_model_name_or_path  # a save without tokenizer files: its base's
    encoder_source = None
    if config.enable_world:
        local = os.path.join(weights, WORLD_ENCODER_DIR) if weights is not None else None
        has_local = local is not None and os.path.isfile(os.path.join(local, "config.json"))
        encoder_source = local if has_local else config.cosmos_model_name
    return Resolved(config, weights, adapter, from_gemma, encoder_source, processor_source, new_vocab_size)


def _resolve_world_token_ids(config: TheWorldConfig, path: str, hub_kwargs: dict) -> int | None:
    """World marker ids come from the checkpoint's tokenizer (reserved `<unusedN>` tokens)."""
    from transformers import AutoTokenizer

    from theworld.processing.tokens import resolve_world_tokens

    if not has_tokenizer(path):
        raise TheWorldUserError(
            f"{path} has no tokenizer files: TheWorld needs them to resolve its world token ids "
            "(give a checkpoint with its tokenizer, or load it with enable_world=False)"
        )
    tokenizer = AutoTokenizer.from_pretrained(path, **hub_kwargs)
    tokens = resolve_world_tokens(tokenizer)
    if tokens.added:
        # Only a tokenizer without reserved tokens gets new ones (never the case for Gemma 3);
        # the embedding is resized after loading.
        logger.warning("tokenizer of %s has no reserved <unusedN> tokens: world tokens are new ids", path)
    config.start_of_world_token_id = tokens.start_id
    config.world_token_id = tokens.world_id
    config.end_of_world_token_id = tokens.end_id
    return len(tokenizer) if tokens.added else None


# ------------------------------------------------------------------------------------------------
# loading: around transformers' own from_pretrained


@contextlib.contextmanager
def adapter_keys_not_missing(cls: type, resolved: Resolved):
    """Within: the tensors the adapter restores next are not reported missing while its base loads."""
    if resolved.adapter is None:
        yield
        return
    with safe_open(os.path.join(resolved.adapter, WORLD_ADAPTER_NAME), framework="pt") as handle:
        keys = list(handle.keys())
    own = "_keys_to_ignore_on_load_missing" in cls.__dict__
    previous = cls._keys_to_ignore_on_load_missing
    cls._keys_to_ignore_on_load_missing = list(previous or ()) + [rf"^{re.escape(key)}$" for key in keys]
    try:
        yield
    finally:
        if own:
            cls._keys_to_ignore_on_load_missing = previous
        else:
            del cls._keys_to_ignore_on_load_missing


def finish_loading(model: TheWorld, resolved: Resolved, missing_keys: list[str], safety_checker: Any = None) -> None:
    """After transformers loaded the Gemma weights: the world parts, the adapter, what trains."""
    from theworld.model.parameters import set_trainable, trainable_parts
    from theworld.world_encoder.vae import CosmosWorldEncoder

    if resolved.new_vocab_size is not None and resolved.new_vocab_size > model.config.text_config.vocab_size:
        model.resize_token_embeddings(resolved.new_vocab_size)
    if model.world_projector is not None:
        if resolved.from_gemma and model.config.world_embed_rms is None:
            model.match_world_embedding_scale()
        if resolved.adapter is None:  # an adapter's own line says where its world weights come from
            if not any(key.startswith("world_projector.") for key in missing_keys):
                logger.info("world projector: restored from %s", resolved.weights or "the given state_dict")
            elif resolved.weights is not None:  # transformers' load report lists the keys
                logger.info(
                    "world projector: newly initialised (%s holds no world weights; train stage align)", resolved.weights
                )
        if resolved.encoder_source is None:
            logger.info(
                "world encoder: none loaded (no cosmos_model_name): this model takes world_latents, not world pixels"
            )
        else:
            param = model.get_input_embeddings().weight
            encoder = CosmosWorldEncoder.from_pretrained(resolved.encoder_source, dtype=param.dtype, device=param.device)
            model.attach_world_encoder(encoder)
        if model.config.world_rollout_frames:
            load_world_model(model, safety_checker, stored_in=[resolved.adapter, resolved.weights])
    if resolved.adapter is not None:
        keys = load_world_adapter(model, resolved.adapter)
        # e.g. 'world_projector.*: 6, model.language_model.*: 2'
        groups = Counter(".".join(k.split(".")[: 2 if k.split(".")[0] == "model" else 1]) + ".*" for k in keys)
        logger.info(
            "world weights: %d tensors restored from %s (%s) on base checkpoint %s", len(keys),
            os.path.join(resolved.adapter, WORLD_ADAPTER_NAME), ", ".join(f"{g}: {n}" for g, n in groups.items()),
            resolved.weights,
        )  # fmt: skip
    set_trainable(model, trainable_parts(model.config))


def load_world_model(model: TheWorld, safety_checker: Any = None, stored_in: list[str | None] = ()) -> None:
    """Attach the world model of rollouts from `cosmos_model_name`, sharing the encoder; the text condition a
    folder in `stored_in` keeps spares loading T5."""
    from theworld.world_model import WorldModel, WorldTextCondition

    config = model.config
    if not config.cosmos_model_name:
        logger.info("world model: none loaded (no cosmos_model_name): imagined latents must be given (latent cache)")
        return
    settings = config.world_rollout_settings()
    text = None
    for folder in (f for f in stored_in if f is not None and os.path.isdir(f)):
        text = WorldTextCondition.find(folder, settings.prompt, settings.resolved_negative_prompt, settings.max_sequence_length)
        if text is not None:
            logger.info("world model: text condition read from %s (T5 is not loaded)", folder)
            break
    param = model.get_input_embeddings().weight
    world_model = WorldModel.from_pretrained(
        config.cosmos_model_name, settings, safety_checker=safety_checker, text_condition=text,
        encoder=model.world_encoder, dtype=param.dtype, device=param.device,
    )  # fmt: skip
    model.attach_world_model(world_model)


# ------------------------------------------------------------------------------------------------
# adapters: the trainable tensors only, plus a config naming the base checkpoint


def save_world_adapter(model: TheWorld, save_directory: str | os.PathLike, keys: list[str] | None = None) -> Path:
    """Write `keys` (default: the world projector) and the config; `from_pretrained` loads the folder."""
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if keys is None:
        keys = [k for k in state if k.startswith("world_projector.")]
    tensors = {k: state[k].detach().contiguous().cpu() for k in keys}
    save_file(tensors, str(out / WORLD_ADAPTER_NAME), metadata={"format": "pt"})
    model.config.save_pretrained(out)
    if model.world_model is not None:
        model.world_model.text.save(out)  # rollouts reload without T5
    return out / WORLD_ADAPTER_NAME


def load_world_adapter(model: TheWorld, path: str | os.PathLike) -> list[str]:
    """Strict load of an adapter (every key with its shape, every world key given); returns the keys applied.
    With the world off its world tensors are left out (the world-off control)."""
    path = Path(path)
    file = path / WORLD_ADAPTER_NAME if path.is_dir() else path
    if not file.is_file():
        raise TheWorldUserError(f"no world adapter at {file}")
    adapter = load_file(str(file))
    if model.world_projector is None:
        adapter = {k: v for k, v in adapter.items() if not k.startswith("world_projector.")}
    elif model.world_projector.imagined_embedding is None:  # loaded with world_rollout_frames=0 (no-rollout)
        adapter = {k: v for k, v in adapter.items() if k not in ROLLOUT_KEYS}
    state = model.state_dict()
    unexpected = sorted(k for k in adapter if k not in state)
    missing = sorted(k for k in state if k.startswith("world_projector.") and k not in adapter)
    wrong_shape = sorted(k for k in adapter if k in state and adapter[k].shape != state[k].shape)
    if unexpected or missing or wrong_shape:
        raise TheWorldUserError(
            f"world adapter {file} does not fit this model: unexpected keys {unexpected}, "
            f"missing keys {missing}, wrong shapes {wrong_shape}"
        )
    with torch.no_grad():
        for key, value in adapter.items():
            state[key].copy_(value.to(state[key].dtype))
    return list(adapter)


# ------------------------------------------------------------------------------------------------
# (model, processor) for inference


def load_pretrained(
    name_or_path: str | os.PathLike, *, device: str | torch.device | None = None, **kwargs: Any
) -> tuple[TheWorld, TheWorldProcessor]:
    """(model, processor) for a checkpoint, in eval mode with every parameter frozen (`kwargs`: `from_pretrained`'s)."""
    from theworld.model.modeling import TheWorld
    from theworld.processing.processor import TheWorldProcessor

    settings = {k: kwargs.pop(k) for k in LOAD_SETTINGS if k in kwargs}
    resolved = resolve(name_or_path, hub_kwargs=kwargs, **settings)
    try:
        model = TheWorld.from_resolved(resolved, **kwargs)
        processor = TheWorldProcessor.from_model_config(resolved.processor_source, model.config)
    except (OSError, ValueError, KeyError) as err:
        raise TheWorldUserError(f"cannot load {os.fspath(name_or_path)}: {type(err).__name__}: {err}") from err
    # Inference only, and every run in one trainability state: torch.matmul picks its kernel by
    # requires_grad, so a frozen and a trainable copy of one checkpoint can differ in the last bits.
    model = model.to(device).eval().requires_grad_(False)
    return model, processor
