"""What a training config's paths resolve to: its `TheWorldConfig` and where its world encoder comes from.

Temporary, and the only place training does this: the model package's resolution layer will answer
both questions (switch these two functions to it). Everything else in training receives the
resolved `TheWorldConfig` object (the loaded model's `config`) and the encoder source string.
"""

from __future__ import annotations

import os
from typing import Any

from theworld.errors import TheWorldUserError

WORLD_KEYS = ("world_image_size", "world_num_frames", "world_tokens_per_frame")


def world_config_for(model_name_or_path: str | os.PathLike, **world_overrides: Any) -> Any:
    """The `TheWorldConfig` `TheWorld.from_pretrained(model_name_or_path, **overrides)` would use, read
    from config.json alone (no weights); `None` overrides keep the checkpoint's own values."""
    from transformers import PretrainedConfig

    from theworld.model.configuration import TheWorldConfig

    path = str(model_name_or_path)
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(path)
    except OSError as err:
        raise TheWorldUserError(f"model_name_or_path: cannot read the config of {path} ({err})") from err
    model_type = config_dict.get("model_type")
    if model_type == TheWorldConfig.model_type:
        config = TheWorldConfig.from_dict(config_dict)
    elif model_type == "gemma3":
        config = TheWorldConfig.from_gemma_config(config_dict)
    else:
        raise TheWorldUserError(f"model_name_or_path: {path} holds a {model_type!r} model, not Gemma 3 or TheWorld")
    for key, value in world_overrides.items():
        if value is not None:
            setattr(config, key, value)
    try:
        config.validate_world()
    except ValueError as err:
        raise TheWorldUserError(str(err)) from None
    return config


def encoder_source_for(model_name_or_path: str, cosmos_model_name: str | None) -> str:
    """Where `TheWorld.from_pretrained` takes its world encoder from: a TheWorld save's own
    `world_encoder/` folder first, else `cosmos_model_name`."""
    from theworld.model.modeling import WORLD_ENCODER_DIR

    local = os.path.join(str(model_name_or_path), WORLD_ENCODER_DIR)
    if os.path.isfile(os.path.join(local, "config.json")):
        return local
    if not cosmos_model_name:
        raise TheWorldUserError("cosmos_model_name is not set: the latent cache needs to know which world model encodes")
    return str(cosmos_model_name)
