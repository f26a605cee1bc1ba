"""Controls: the same evaluation with the world path removed, blanked, given the wrong scene or, for rollout
models, without imagination (what each rules out: docs/evaluation.md).

Shuffled donors come only from items of the same visual signature, so prompts are unchanged, as a seeded
cyclic permutation (Sattolo's algorithm) that never maps an item to itself.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from theworld.errors import TheWorldUserError
from theworld.evaluation.items import EvalItem

CONTROLS: tuple[str, ...] = ("none", "world-off", "zero-world", "shuffled-world", "zero-rollout", "no-rollout")


def check_control(control: str) -> str:
    if control not in CONTROLS:
        raise TheWorldUserError(f"unknown control {control!r}; known: {', '.join(CONTROLS)}")
    return control


def uses_world(control: str) -> bool:
    """Whether a run under `control` must feed world tokens to the model (all but world-off)."""
    return check_control(control) != "world-off"


@contextlib.contextmanager
def projector_hook(model: torch.nn.Module, hook: Callable[..., Any], required: str | None) -> Iterator[None]:
    """Within the block, `hook` is a forward hook on the world projector; without one, `required` is the error."""
    projector = getattr(model, "world_projector", None)
    if projector is None:
        if required is not None:
            raise TheWorldUserError(required)
        yield
        return
    handle = projector.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def zero_world(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """Within the block the world projector returns zeros: the world block is there, its features are not."""
    needs = "the zero-world control needs a model with a world projector (enable_world=True)"
    return projector_hook(model, lambda _module, _inputs, output: torch.zeros_like(output), needs)


def zero_rollout(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """Within the block the projector's tokens of the K imagined frames (each item's last ones) are zeros."""
    rollout = int(getattr(getattr(model, "config", None), "world_rollout_frames", 0) or 0)
    if getattr(model, "world_projector", None) is None or rollout == 0:
        raise TheWorldUserError("the zero-rollout control needs a model with world rollouts (world_rollout_frames > 0)")
    imagined_tokens = rollout * model.config.world_tokens_per_frame

    def zero_imagined(_module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if len(inputs) < 2 or inputs[1] is None:
            raise TheWorldUserError("zero-rollout: the world projector ran without imagined latents")
        output = output.clone()
        output[:, -imagined_tokens:] = 0  # (N, (Tl + K) * tokens, hidden): the K frames' tokens
        return output

    return projector_hook(model, zero_imagined, None)


def control_context(model: torch.nn.Module, control: str) -> contextlib.AbstractContextManager:
    """What to wrap the model's forwards in for `control` (zero-world and zero-rollout change the model)."""
    hooks = {"zero-world": zero_world, "zero-rollout": zero_rollout}
    return hooks[control](model) if check_control(control) in hooks else contextlib.nullcontext()


def cyclic_derangement(n: int, rng: random.Random) -> list[int]:
    """A random permutation of range(n) with one cycle (Sattolo), so p[i] != i for every i (n >= 2)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)  # j < i: this is what rules out fixed points
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def visual_signature(item: EvalItem) -> tuple[int, ...]:
    """Frames per visual, in prompt order (1 for an image): equal signatures mean equal world shapes."""
    return tuple(len(v) if isinstance(v, (list, tuple)) else 1 for v in item.visuals)


def shuffled_donors(items: Sequence[EvalItem], seed: int = 0) -> list[int | None]:
    """For each item, the index of the item whose world inputs it gets (None: no visuals); resumable, as seeded."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, item in enumerate(items):
        signature = visual_signature(item)
        if signature:
            groups.setdefault(signature, []).append(index)
    lonely = {sig: idx for sig, idx in groups.items() if len(idx) < 2}
    if lonely:
        described = "; ".join(f"item {items[idx[0]].id!r} (frames per visual {list(sig)})" for sig, idx in lonely.items())
        raise TheWorldUserError(
            f"shuffled-world: no other item has the same visual shape as {described}, so its world inputs "
            "cannot be swapped without changing its prompt; evaluate more items or leave such items out"
        )
    rng = random.Random(seed)
    donors: list[int | None] = [None] * len(items)
    for signature in sorted(groups):  # a fixed order, so the seed alone decides the donors
        members = groups[signature]
        for position, target in enumerate(cyclic_derangement(len(members), rng)):
            donors[members[position]] = members[target]
    return donors
