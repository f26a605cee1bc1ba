"""The model and processor an evaluation control needs: `world-off` loads the checkpoint with `enable_world=False`
(Gemma 3 exactly), `no-rollout` with `world_rollout_frames=0`; the world-enabled ones need the Cosmos VAE.
"""

from __future__ import annotations

from typing import Any

import torch

from theworld.errors import TheWorldUserError
from theworld.evaluation.controls import check_control, uses_world
from theworld.model.checkpoints import check_model_path, load_pretrained, resolve

DTYPES: dict[str, torch.dtype | None] = {
    "auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16
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
    return DTYPES[name] or (torch.bfloat16 if device.type == "cuda" else torch.float32)


def load_model(
    path: str,
    control: str = "none",
    cosmos_model_name: str | None = None,
    dtype: str | None = "auto",
    device: str | None = "auto",
    safety_checker: Any = None,
) -> tuple[Any, Any]:
    """(model, processor) for evaluating `path` under `control`, in eval mode. `safety_checker`: None loads
    cosmos_guardrail's; only `theworld.testing`'s `TinyTestSafetyChecker` may stand in, for tiny test world models."""
    world = uses_world(check_control(control))
    not_found = "model not found: {name} (no such folder, and not a Hub id such as 'owner/name')"
    path = check_model_path(path, not_found=not_found)
    target = resolve_device(device)
    settings: dict[str, Any] = {} if world else {"enable_world": False}
    if control == "no-rollout":
        if not resolve(path).config.world_rollout_frames:
            raise TheWorldUserError(
                f"control 'no-rollout' needs a model with world rollouts; {path} has world_rollout_frames=0"
            )
        settings["world_rollout_frames"] = 0
    if cosmos_model_name and world:
        settings["cosmos_model_name"] = cosmos_model_name
    if safety_checker is not None:
        from theworld.world_model.guardrail import is_test_double

        if not is_test_double(safety_checker):
            raise TheWorldUserError(
                f"safety_checker {type(safety_checker).__name__}: evaluation takes cosmos_guardrail's checker (leave it "
                "unset) or theworld.testing's TinyTestSafetyChecker for tiny test world models"
            )
        settings["world_safety_checker"] = safety_checker
    model, processor = load_pretrained(path, device=target, dtype=resolve_dtype(dtype, target), **settings)
    if world and model.world_projector is None:
        raise TheWorldUserError(f"{path} was saved with enable_world=False; control {control!r} needs the world path")
    if world and model.world_encoder is None:
        raise TheWorldUserError(
            f"control {control!r} needs the Cosmos VAE to encode images, and {path} names none: "
            "pass --cosmos-model-name (a Cosmos-Predict2 repo or VAE folder)"
        )
    return model, processor
