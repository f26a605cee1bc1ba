"""What a training config's model resolves to, asked of the one resolution layer (`model.checkpoints`)."""

from __future__ import annotations

import os
from typing import Any

from theworld.errors import TheWorldUserError
from theworld.model.configuration import WORLD_SETTINGS


def local_or_id(value: str | None) -> str | None:
    """Absolute path for a local folder (so saved configs work from any working directory), else unchanged."""
    if value is not None and os.path.exists(value):
        return os.path.abspath(value)
    return value


def world_settings(config: Any) -> dict[str, Any]:
    """The run's world settings: `enable_world` always, the others where set (None keeps the checkpoint's)."""
    settings = {key: getattr(config, key) for key in WORLD_SETTINGS if getattr(config, key, None) is not None}
    settings["enable_world"] = config.enable_world
    if config.enable_world and config.cosmos_model_name:
        settings["cosmos_model_name"] = local_or_id(config.cosmos_model_name)
    else:
        settings.pop("cosmos_model_name", None)
    return settings


def resolve_model(config: Any) -> Any:
    """`model.checkpoints.resolve` for the run's model and world settings (reads no weights)."""
    from theworld.model.checkpoints import resolve

    try:
        return resolve(local_or_id(config.model_name_or_path), **world_settings(config))
    except (OSError, ValueError) as err:
        raise TheWorldUserError(f"model_name_or_path: cannot read {config.model_name_or_path}: {err}") from err


def encoder_source(config: Any) -> str:
    """Where the run's world encoder loads from (a TheWorld save's own `world_encoder/`, else cosmos_model_name)."""
    source = resolve_model(config).encoder_source
    if source is None:
        raise TheWorldUserError("cosmos_model_name is not set: the latent cache needs to know which world model encodes")
    return source
