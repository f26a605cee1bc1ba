"""The model and processor `theworld chat` and `theworld serve` answer with.

A thin wrapper over the one loader (`theworld.model.checkpoints.load_pretrained`), adding what a
server needs decided at start: the device and dtype, and a world encoder when the world path is on
(requests carry pixels, never cached latents).
"""

from __future__ import annotations

from typing import Any

from theworld.errors import TheWorldUserError


def load_model_and_processor(
    model: str, device: str = "auto", dtype: str = "auto", cosmos_model_name: str | None = None
) -> tuple[Any, Any]:
    """(model in eval mode on `device`, processor matching its world settings) for answering chats."""
    from theworld.evaluation.loading import resolve_device, resolve_dtype
    from theworld.model.checkpoints import load_pretrained

    target = resolve_device(device)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, target)}
    if cosmos_model_name:
        kwargs["cosmos_model_name"] = cosmos_model_name
    loaded, processor = load_pretrained(model, device=target, **kwargs)
    if loaded.world_projector is not None and loaded.world_encoder is None:
        raise TheWorldUserError(
            f"{model} has a world path but no world encoder (Cosmos VAE) to encode images: pass --cosmos-model-name"
        )
    return loaded, processor
