"""Loading the model and processor an evaluation control needs.

`load_model(path, control)` accepts what `TheWorld.from_pretrained` accepts: a Gemma 3
checkpoint (world modules freshly initialised: a baseline with untrained world tokens), a saved
TheWorld folder, or a world-adapter folder (adapter weights + a config naming the base Gemma).

- Controls none / zero-world / shuffled-world load it with the world path on and need the Cosmos
  VAE (from the folder's `world_encoder/`, the config's `cosmos_model_name`, or
  `cosmos_model_name=` here) because items arrive as pixels.
- Control world-off loads the *same* checkpoint with `enable_world=False` and a processor with
  `enable_world=False`: Gemma 3 exactly, with whatever Gemma weights the checkpoint holds. For an
  adapter folder that means the base Gemma plus any non-world tensors the adapter carries.

The processor is the one saved with the model (`TheWorldProcessor.from_model_config`, so its
world settings follow the model config), else the base checkpoint's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from theworld.errors import TheWorldUserError
from theworld.evaluation.controls import check_control, uses_world
from theworld.model.checkpoints import looks_local, resolve_base_checkpoint

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_PROCESSOR_FILES = ("processor_config.json", "tokenizer_config.json", "tokenizer.json")


def resolve_device(device: str | None = None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise TheWorldUserError(f"unknown device {device!r} ({err})") from err


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """"auto": bfloat16 on a GPU, float32 on CPU (Gemma 3 overflows in float16; avoid it)."""
    name = dtype or "auto"
    if name not in DTYPES:
        raise TheWorldUserError(f"unknown dtype {name!r}; known: {', '.join(DTYPES)}")
    chosen = DTYPES[name]
    if chosen is None:
        chosen = torch.bfloat16 if device.type == "cuda" else torch.float32
    return chosen


def _check_exists(path: str) -> None:
    """A path that exists nowhere and cannot be a Hub id is reported as missing, naming it."""
    if not Path(path).expanduser().exists() and looks_local(path):
        raise TheWorldUserError(f"model not found: {path} (no such folder, and not a Hub id such as 'owner/name')")


def _config_dict(path: str) -> dict[str, Any]:
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(path)
    except OSError as err:
        raise TheWorldUserError(f"cannot read the model config of {path}: {err}") from err
    return config


def _processor_sources(path: str, config: Any) -> list[str]:
    sources = [path]
    base = getattr(config, "base_model_name_or_path", None)
    if base and base != path:
        sources.append(base)
    return [s for s in sources if not Path(s).is_dir() or any((Path(s) / f).is_file() for f in _PROCESSOR_FILES)]


def load_processor(path: str, config: Any):
    """`TheWorldProcessor` matching `config` (world settings, enable_world), from `path` or its base."""
    from theworld import TheWorldProcessor

    errors = []
    for source in _processor_sources(path, config):
        try:
            return TheWorldProcessor.from_model_config(source, config)
        except (OSError, ValueError) as err:
            errors.append(f"{source}: {err}")
    raise TheWorldUserError(f"no processor for {path}: " + ("; ".join(errors) or "no tokenizer files found"))


def _is_adapter(path: str, config_dict: dict[str, Any]) -> bool:
    from theworld.model.modeling import WORLD_ADAPTER_NAME

    return config_dict.get("model_type") == "theworld" and Path(path, WORLD_ADAPTER_NAME).is_file() and not any(
        p.name.startswith("model") and p.suffix == ".safetensors" for p in Path(path).iterdir()
    )


def _load_world_off(path: str, config_dict: dict[str, Any], dtype: torch.dtype):
    """The checkpoint with enable_world=False; an adapter folder's non-world tensors are applied too."""
    from safetensors.torch import load_file

    from theworld import TheWorld
    from theworld.model.modeling import WORLD_ADAPTER_NAME

    if not _is_adapter(path, config_dict):
        return TheWorld.from_pretrained(path, enable_world=False, dtype=dtype)
    base = resolve_base_checkpoint(config_dict.get("base_model_name_or_path"), path)
    model = TheWorld.from_pretrained(base, enable_world=False, dtype=dtype)
    adapter = {k: v for k, v in load_file(str(Path(path, WORLD_ADAPTER_NAME))).items() if not k.startswith("world_")}
    if adapter:
        state = model.state_dict()
        unknown = sorted(k for k in adapter if k not in state or state[k].shape != adapter[k].shape)
        if unknown:
            raise TheWorldUserError(f"adapter {path} has tensors that do not fit {base}: {unknown[:5]}")
        with torch.no_grad():
            for key, value in adapter.items():
                state[key].copy_(value.to(state[key].dtype))
        logger.info("world-off: applied %d non-world adapter tensors from %s", len(adapter), path)
    return model


def load_model(
    path: str,
    control: str = "none",
    cosmos_model_name: str | None = None,
    dtype: str | None = "auto",
    device: str | None = "auto",
) -> tuple[Any, Any]:
    """(model, processor) for evaluating the checkpoint at `path` under `control`, in eval mode."""
    from theworld import TheWorld

    check_control(control)
    path = str(path)
    _check_exists(path)
    if Path(path).expanduser().exists():
        path = str(Path(path).expanduser())
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    config_dict = _config_dict(path)
    if config_dict.get("model_type") not in ("gemma3", "theworld"):
        raise TheWorldUserError(
            f"{path} holds a {config_dict.get('model_type')!r} model; evaluation loads Gemma 3 or TheWorld checkpoints"
        )
    try:
        if uses_world(control):
            kwargs: dict[str, Any] = {"dtype": torch_dtype}
            if cosmos_model_name:
                kwargs["cosmos_model_name"] = cosmos_model_name
            model = TheWorld.from_pretrained(path, **kwargs)
        else:
            model = _load_world_off(path, config_dict, torch_dtype)
    except OSError as err:
        raise TheWorldUserError(f"cannot load model {path}: {err}") from err
    if uses_world(control):
        if model.world_projector is None:
            raise TheWorldUserError(f"{path} was saved with enable_world=False; control {control!r} needs the world path")
        if model.world_encoder is None:
            raise TheWorldUserError(
                f"control {control!r} needs the Cosmos VAE to encode images, and {path} names none: "
                "pass --cosmos-model-name (a Cosmos-Predict2 repo or VAE folder)"
            )
    # Inference only, and every run in one trainability state: torch.matmul picks its kernel by
    # requires_grad, so a frozen and a trainable copy of one checkpoint can differ in the last bits.
    model = model.to(target).eval().requires_grad_(False)
    processor = load_processor(path, model.config)
    if getattr(processor, "enable_world", None) != uses_world(control):
        raise TheWorldUserError(f"processor for {path} has enable_world={processor.enable_world}, control {control!r}")
    return model, processor
