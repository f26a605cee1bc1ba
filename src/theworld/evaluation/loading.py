"""The model and processor an evaluation control needs, loaded by `theworld.model.checkpoints`.

`load_model(path, control)` accepts what `TheWorld.from_pretrained` accepts: a Gemma 3
checkpoint (world modules freshly initialised: a baseline with untrained world tokens), a saved
TheWorld folder, or a world-adapter folder (adapter weights + a config naming the base Gemma).

- Controls none / zero-world / shuffled-world load it with the world path on and need the Cosmos
  VAE (from the folder's `world_encoder/`, the config's `cosmos_model_name`, or
  `cosmos_model_name=` here) because items arrive as pixels.
- Control world-off loads the *same* checkpoint with `enable_world=False` (and so a processor
  with `enable_world=False`): Gemma 3 exactly, with whatever Gemma weights the checkpoint holds.
  For an adapter folder that means the base Gemma plus any non-world tensors the adapter carries.
- Control no-rollout loads a checkpoint trained with world rollouts with `world_rollout_frames=0`:
  the same projector on the observed tokens only, no world model (a checkpoint without rollouts
  is refused: that control would be the plain run).
"""

from __future__ import annotations

from typing import Any

import torch

from theworld.errors import TheWorldUserError
from theworld.evaluation.controls import check_control, uses_world
from theworld.model.checkpoints import check_model_path, load_pretrained

DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


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


def load_model(
    path: str,
    control: str = "none",
    cosmos_model_name: str | None = None,
    dtype: str | None = "auto",
    device: str | None = "auto",
) -> tuple[Any, Any]:
    """(model, processor) for evaluating the checkpoint at `path` under `control`, in eval mode."""
    world = uses_world(check_control(control))
    path = check_model_path(path, not_found="model not found: {name} (no such folder, and not a Hub id such as 'owner/name')")
    target = resolve_device(device)
    settings: dict[str, Any] = {} if world else {"enable_world": False}
    if control == "no-rollout":
        from theworld.model.checkpoints import resolve

        if not resolve(path).config.world_rollout_frames:
            raise TheWorldUserError(f"control 'no-rollout' needs a model with world rollouts; {path} has world_rollout_frames=0")
        settings["world_rollout_frames"] = 0
    if cosmos_model_name and world:
        settings["cosmos_model_name"] = cosmos_model_name
    model, processor = load_pretrained(path, device=target, dtype=resolve_dtype(dtype, target), **settings)
    if world and model.world_projector is None:
        raise TheWorldUserError(f"{path} was saved with enable_world=False; control {control!r} needs the world path")
    if world and model.world_encoder is None:
        raise TheWorldUserError(
            f"control {control!r} needs the Cosmos VAE to encode images, and {path} names none: "
            "pass --cosmos-model-name (a Cosmos-Predict2 repo or VAE folder)"
        )
    return model, processor
