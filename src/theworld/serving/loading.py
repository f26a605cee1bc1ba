"""The one place `theworld chat` and `theworld serve` get a model and its processor.

Only the public API: `TheWorld.from_pretrained` and `TheWorldProcessor.from_model_config` (the
processor saved with the model, else its base checkpoint's), so a later shared loader can take
this function's place without touching its callers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from theworld.errors import TheWorldUserError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def load_model_and_processor(
    model: str, device: str = "auto", dtype: str = "auto", cosmos_model_name: str | None = None
) -> tuple[Any, Any]:
    """(model in eval mode on `device`, processor matching its world settings) for answering chats."""
    from theworld import TheWorld, TheWorldProcessor
    from theworld.evaluation.loading import resolve_device, resolve_dtype

    local = Path(model).expanduser()
    if not local.exists() and (model.startswith(("/", ".", "~")) or model.count("/") > 1):
        raise TheWorldUserError(f"model not found: {model} (no such folder, and not a Hub id such as 'owner/name')")
    target = resolve_device(device)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, target)}
    if cosmos_model_name:
        kwargs["cosmos_model_name"] = cosmos_model_name
    path = str(local) if local.exists() else model
    try:
        loaded = TheWorld.from_pretrained(path, **kwargs)
    except OSError as err:
        raise TheWorldUserError(f"cannot load model {model}: {err}") from err
    if loaded.world_projector is not None and loaded.world_encoder is None:
        raise TheWorldUserError(
            f"{model} has a world path but no world encoder (Cosmos VAE) to encode images: pass --cosmos-model-name"
        )
    loaded = loaded.to(target).eval()
    source = path
    if local.is_dir() and not any((local / name).is_file() for name in _TOKENIZER_FILES):
        source = loaded.config.base_model_name_or_path or path  # an adapter folder: the base's tokenizer
    try:
        processor = TheWorldProcessor.from_model_config(source, loaded.config)
    except (OSError, ValueError) as err:
        raise TheWorldUserError(f"no processor for {model} (looked in {source}): {err}") from err
    return loaded, processor
