"""Find the first module at which two models' activations part ways.

When two models that should agree do not (`compare_logits` failed), the useful answer is *where*:
the first module, in the reference model's execution order, whose output differs, and which of
that module's weights and buffers differ between the two models. A zeroed rotary `inv_freq`
shows up as `model.rotary_emb` (call 1, the second layer type) with `full_attention_inv_freq`
listed; a damaged weight shows up as the innermost module that owns it.

How it works: forward hooks on every named submodule of both models. Modules are matched by
qualified name (model B's names can be translated into model A's through `name_map`, for a
subclass that wraps or renames modules) and by call index, so a module run several times per
forward (a rotary embedding called once per layer type) is compared call by call. Forward hooks
fire when a module returns, so the execution order is a post-order: a leaf that diverges is
reported before the block that contains it.

Memory stays bounded: model A is run recording detached copies of its outputs until
`max_recorded_bytes` is reached, then model B is run comparing on the fly against that window
(B's activations are never stored); if the window agrees, both run again for the next window.
Most searches need one pass of each model.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from theworld.parity.logits import max_abs_diff, move_inputs, run_eval

__all__ = [
    "Divergence",
    "NameMap",
    "TensorDifference",
    "find_first_divergence",
    "module_name_differences",
]

# Translates a qualified module name of model B into model A's naming; None drops the module.
NameMap = Callable[[str], "str | None"] | Mapping[str, "str | None"] | None

DEFAULT_MAX_RECORDED_BYTES = 1 << 30


@dataclass
class TensorDifference:
    """A parameter or buffer of the divergent module that is not the same in both models.

    `name` is relative to the divergent module (`weight`, `mlp.down_proj.weight`); `max_abs_diff`
    is None when the tensor exists in one model only or sits on the meta device (no data), and
    `inf` when the shapes differ.
    """

    name: str
    kind: str  # "parameter" or "buffer"
    max_abs_diff: float | None
    dtype_a: str | None
    dtype_b: str | None
    shape_a: tuple[int, ...] | None
    shape_b: tuple[int, ...] | None
    note: str = ""

    @property
    def direct(self) -> bool:
        """True for the module's own tensors, False for those of its submodules."""
        return "." not in self.name


@dataclass
class Divergence:
    """The first module (in model A's execution order) whose output differs beyond `atol`."""

    module: str  # qualified name in model A ("" is the root)
    module_b: str  # the same module's name in model B
    module_type_a: str
    module_type_b: str
    call_index: int  # which call of that module (0 for the first)
    execution_index: int  # position among model A's matched module calls
    output_path: str  # which tensor of the output differs first ("" for a bare tensor, "[0]", ".logits")
    max_abs_diff: float
    atol: float
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    input_max_abs_diff: float | None = None  # largest difference between the module's inputs
    previous_module: str | None = None  # the last matched call before it, which agreed
    differing_tensors: list[TensorDifference] = field(default_factory=list)
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    call_count_mismatches: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def cause(self) -> str:
        """'module' when the inputs agree (the module itself computes differently), 'inputs' when
        they already differ (the difference arose in code outside any module, e.g. in a parent's
        forward), 'unknown' when the inputs could not be compared."""
        if self.input_max_abs_diff is None:
            return "unknown"
        return "inputs" if self.input_max_abs_diff > self.atol else "module"


def find_first_divergence(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: Mapping[str, Any],
    atol: float = 0.0,
    *,
    name_map: NameMap = None,
    max_recorded_bytes: int = DEFAULT_MAX_RECORDED_BYTES,
) -> Divergence | None:
    """Run both models on `inputs` and return the first module whose output differs, or None.

    Model A is the reference: its execution order defines "first", and reported names are A's.
    `name_map` translates B's qualified module names into A's: a callable (return None to leave a
    module out) or a prefix mapping such as `{"core": ""}` (B's `core.model.layers.0` is A's
    `model.layers.0`; the longest matching prefix wins). Modules of B that map to no module of A,
    and modules of A that nothing maps to, are listed in `only_in_b` / `only_in_a` and not compared.
    All tensors of a module's output (a tensor, a tuple, a ModelOutput) are compared in fp32; the
    output differs when any common tensor differs by more than `atol` or has another shape.
    """
    a_names = _module_names(model_a)
    b_to_a, only_in_a, only_in_b = _match_names(a_names, _module_names(model_b), name_map)
    matched = set(b_to_a.values())

    start = 0
    while True:
        window = _record_window(model_a, inputs, matched, start, max_recorded_bytes)
        found, calls_b = _compare_window(model_b, inputs, b_to_a, window, atol)
        if found is not None or window.end >= window.total_calls:
            break
        start = window.end

    if found is None:
        return None
    exec_index, key, path, diff, shape_a, shape_b = found
    name_a, call_index = key
    name_b = next(b for b, a in b_to_a.items() if a == name_a)
    module_a = model_a.get_submodule(name_a)
    module_b = model_b.get_submodule(name_b)
    counts_a = window.calls_per_name
    position = {name: i for i, name in enumerate(a_names)}
    mismatches = {
        name: (counts_a.get(name, 0), calls_b.get(name, 0))
        for name in sorted(set(counts_a) | set(calls_b), key=position.__getitem__)
        if counts_a.get(name, 0) != calls_b.get(name, 0)
    }
    return Divergence(
        module=name_a,
        module_b=name_b,
        module_type_a=type(module_a).__name__,
        module_type_b=type(module_b).__name__,
        call_index=call_index,
        execution_index=exec_index,
        output_path=path,
        max_abs_diff=diff,
        atol=float(atol),
        shape_a=shape_a,
        shape_b=shape_b,
        input_max_abs_diff=_compare_call_inputs(model_a, model_b, inputs, name_a, name_b, call_index),
        previous_module=_previous_call(window.order, exec_index),
        differing_tensors=_differing_tensors(module_a, module_b, atol),
        only_in_a=only_in_a,
        only_in_b=only_in_b,
        call_count_mismatches=mismatches,
    )


def module_name_differences(
    model_a: nn.Module, model_b: nn.Module, name_map: NameMap = None
) -> tuple[list[str], list[str]]:
    """(modules only in A, modules only in B) after translating B's names with `name_map`."""
    _, only_in_a, only_in_b = _match_names(_module_names(model_a), _module_names(model_b), name_map)
    return only_in_a, only_in_b


# --------------------------------------------------------------------------------------------
# Name mapping


def _module_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules()]


def _match_names(
    a_names: list[str], b_names: list[str], name_map: NameMap
) -> tuple[dict[str, str], list[str], list[str]]:
    """({B name: A name} for matched modules, names only in A, names only in B). When several B
    modules map to the same A name, one the map renamed wins over one it left as it was (with
    `{"core": ""}`, B's `core` is A's root, not B's own root); then B's registration order."""
    mapper = _make_mapper(name_map)
    known = set(a_names)
    mapped_names = {name_b: mapper(name_b) for name_b in b_names}
    b_to_a: dict[str, str] = {}
    used: set[str] = set()
    for renamed_only in (True, False):
        for name_b, mapped in mapped_names.items():
            if mapped is None or mapped not in known or mapped in used or name_b in b_to_a:
                continue
            if renamed_only and mapped == name_b:
                continue
            b_to_a[name_b] = mapped
            used.add(mapped)
    b_to_a = {name_b: b_to_a[name_b] for name_b in b_names if name_b in b_to_a}  # B's order
    return b_to_a, [n for n in a_names if n not in used], [n for n in b_names if n not in b_to_a]


def _make_mapper(name_map: NameMap) -> Callable[[str], str | None]:
    if name_map is None:
        return lambda name: name
    if callable(name_map):
        return name_map
    if not isinstance(name_map, Mapping):
        raise TypeError(f"name_map must be a callable, a mapping of prefixes or None, not {type(name_map).__name__}")
    prefixes = sorted(name_map.items(), key=lambda item: len(item[0]), reverse=True)

    def by_prefix(name: str) -> str | None:
        for old, new in prefixes:
            if old == "" or name == old or name.startswith(old + "."):
                if new is None:
                    return None
                rest = name[len(old) :].lstrip(".")
                return ".".join(part for part in (new, rest) if part)
        return name

    return by_prefix


# --------------------------------------------------------------------------------------------
# Output flattening


def _flatten(value: Any, path: str = "", depth: int = 0) -> list[tuple[str, torch.Tensor]]:
    """Every tensor in a module output, with a path such as `[0]` or `.logits`."""
    if isinstance(value, torch.Tensor):
        return [(path, value)]
    if depth >= 3:
        return []
    found: list[tuple[str, torch.Tensor]] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            found.extend(_flatten(item, f"{path}.{key}", depth + 1))
    elif isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            found.extend(_flatten(item, f"{path}[{index}]", depth + 1))
    return found


def _compare_flat(
    recorded: list[tuple[str, torch.Tensor]], current: list[tuple[str, torch.Tensor]]
) -> tuple[str, float, tuple[int, ...], tuple[int, ...]] | None:
    """The worst difference between two flattened outputs over their common paths:
    (path, max |diff|, shape in A, shape in B), or None when they share no tensor."""
    theirs = dict(current)
    worst = None
    for path, tensor_a in recorded:
        tensor_b = theirs.get(path)
        if tensor_b is None:
            continue
        diff = max_abs_diff(tensor_a, tensor_b)
        if worst is None or diff > worst[1]:
            worst = (path, diff, tuple(tensor_a.shape), tuple(tensor_b.shape))
    return worst


# --------------------------------------------------------------------------------------------
# Recording model A, comparing model B


@dataclass
class _Window:
    records: dict[tuple[str, int], tuple[int, list[tuple[str, torch.Tensor]]]]
    order: list[tuple[str, int]]  # every matched call of A, in execution order
    calls_per_name: Counter
    end: int  # first execution index not recorded
    total_calls: int


def _record_window(
    model: nn.Module, inputs: Mapping[str, Any], names: set[str], start: int, budget: int
) -> _Window:
    records: dict[tuple[str, int], tuple[int, list[tuple[str, torch.Tensor]]]] = {}
    order: list[tuple[str, int]] = []
    counts: Counter = Counter()
    state = {"bytes": 0, "end": None}

    def make_hook(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            key = (name, counts[name])
            counts[name] += 1
            index = len(order)
            order.append(key)
            if index < start or state["end"] is not None:
                return
            tensors = _flatten(output)
            size = sum(t.numel() * t.element_size() for _, t in tensors)
            if records and state["bytes"] + size > budget:
                state["end"] = index
                return
            records[key] = (index, [(path, t.detach().clone()) for path, t in tensors])
            state["bytes"] += size

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in model.named_modules() if n in names]
    try:
        with run_eval(model):
            model(**move_inputs(inputs, model))
    finally:
        for handle in handles:
            handle.remove()
    end = state["end"] if state["end"] is not None else len(order)
    return _Window(records, order, counts, end, len(order))


def _compare_window(
    model: nn.Module,
    inputs: Mapping[str, Any],
    b_to_a: dict[str, str],
    window: _Window,
    atol: float,
) -> tuple[tuple | None, Counter]:
    counts: Counter = Counter()
    state: dict[str, Any] = {"best": None}

    def make_hook(name_a: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            key = (name_a, counts[name_a])
            counts[name_a] += 1
            record = window.records.get(key)
            if record is None:
                return
            index, recorded = record
            best = state["best"]
            if best is not None and best[0] < index:
                return  # an earlier divergence is already known
            worst = _compare_flat(recorded, _flatten(output))
            if worst is None:
                return
            path, diff, shape_a, shape_b = worst
            if diff > atol or math.isnan(diff):
                state["best"] = (index, key, path, diff, shape_a, shape_b)

        return hook

    modules = dict(model.named_modules())
    handles = [modules[b].register_forward_hook(make_hook(a)) for b, a in b_to_a.items()]
    try:
        with run_eval(model):
            model(**move_inputs(inputs, model))
    finally:
        for handle in handles:
            handle.remove()
        window.records.clear()
    return state["best"], counts


def _previous_call(order: list[tuple[str, int]], index: int) -> str | None:
    if index == 0:
        return None
    name, call = order[index - 1]
    return f"{name or '<root>'} (call {call})"


def _compare_call_inputs(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: Mapping[str, Any],
    name_a: str,
    name_b: str,
    call_index: int,
) -> float | None:
    """Largest difference between the positional and keyword tensor inputs of one module call
    in the two models (one more forward of each, recording only that call)."""
    captured: list[list[tuple[str, torch.Tensor]]] = []
    for model, name in ((model_a, name_a), (model_b, name_b)):
        seen = {"calls": 0, "value": None}

        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any, seen=seen) -> None:
            if seen["calls"] == call_index:
                flat = _flatten(tuple(args), "args") + _flatten(dict(kwargs), "kwargs")
                seen["value"] = [(p, t.detach().clone()) for p, t in flat]
            seen["calls"] += 1

        handle = model.get_submodule(name).register_forward_hook(hook, with_kwargs=True)
        try:
            with run_eval(model):
                model(**move_inputs(inputs, model))
        finally:
            handle.remove()
        if seen["value"] is None:
            return None
        captured.append(seen["value"])
    worst = _compare_flat(captured[0], captured[1])
    return None if worst is None else worst[1]


# --------------------------------------------------------------------------------------------
# Weights and buffers of the divergent module


def _module_tensors(module: nn.Module) -> list[tuple[str, str, torch.Tensor]]:
    """(relative name, kind, tensor): the module's own parameters and buffers first, then its
    submodules' in registration order."""
    direct = [(n, "parameter", t) for n, t in module.named_parameters(recurse=False)]
    direct += [(n, "buffer", t) for n, t in module.named_buffers(recurse=False)]
    nested = [(n, "parameter", t) for n, t in module.named_parameters() if "." in n]
    nested += [(n, "buffer", t) for n, t in module.named_buffers() if "." in n]
    return direct + nested


def _dtype(tensor: torch.Tensor | None) -> str | None:
    return None if tensor is None else str(tensor.dtype).replace("torch.", "")


def _differing_tensors(module_a: nn.Module, module_b: nn.Module, atol: float) -> list[TensorDifference]:
    tensors_a = _module_tensors(module_a)
    tensors_b = _module_tensors(module_b)
    by_name_b = {name: (kind, tensor) for name, kind, tensor in tensors_b}
    names_a = {name for name, _, _ in tensors_a}
    result: list[TensorDifference] = []
    for name, kind, tensor_a in tensors_a:
        tensor_b = by_name_b.get(name, (kind, None))[1]
        if tensor_b is None:
            result.append(
                TensorDifference(name, kind, None, _dtype(tensor_a), None, tuple(tensor_a.shape), None, "only in model A")
            )
            continue
        shape_a, shape_b = tuple(tensor_a.shape), tuple(tensor_b.shape)
        note = ""
        if tensor_a.is_meta or tensor_b.is_meta:
            diff, note = None, "on the meta device (no data)"
        elif shape_a != shape_b:
            diff, note = math.inf, "shape differs"
        else:
            diff = max_abs_diff(tensor_a, tensor_b)
        if diff is None or diff > atol or math.isnan(diff) or tensor_a.dtype != tensor_b.dtype:
            if not note and tensor_a.dtype != tensor_b.dtype:
                note = "dtype differs"
            result.append(
                TensorDifference(name, kind, diff, _dtype(tensor_a), _dtype(tensor_b), shape_a, shape_b, note)
            )
    for name, kind, tensor_b in tensors_b:
        if name not in names_a:
            result.append(
                TensorDifference(name, kind, None, None, _dtype(tensor_b), None, tuple(tensor_b.shape), "only in model B")
            )
    # Own tensors first, then nested ones (stable within each group).
    result.sort(key=lambda item: not item.direct)
    return result
