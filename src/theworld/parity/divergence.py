"""Find the first module at which two models' activations part ways, and which of its weights
and buffers differ (a zeroed rotary `inv_freq` shows up as `model.rotary_emb` with that buffer).

Forward hooks on every submodule of both models, matched by qualified name (B's translated through
`name_map`) and call index; they fire as modules return, so a diverging leaf is reported before its
block. A records outputs up to `max_recorded_bytes`, then B compares against that window on the fly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from theworld.parity.logits import dtype_name, max_abs_diff, run_forward

__all__ = ["Divergence", "NameMap", "TensorDifference", "find_first_divergence", "module_name_differences"]

# Translates a qualified module name of model B into model A's naming; None drops the module.
NameMap = Callable[[str], "str | None"] | Mapping[str, "str | None"] | None
DEFAULT_MAX_RECORDED_BYTES = 1 << 30
Flat = list[tuple[str, torch.Tensor]]  # every tensor of a module output, with its path ("[0]", ".logits")


@dataclass
class TensorDifference:
    """A parameter or buffer of the divergent module that differs; `max_abs_diff` is None when it
    exists in one model only or is on meta, `inf` when the shapes differ."""

    name: str
    kind: str  # "parameter" or "buffer"
    max_abs_diff: float | None
    dtype_a: str | None
    dtype_b: str | None
    shape_a: tuple[int, ...] | None
    shape_b: tuple[int, ...] | None
    note: str = ""


@dataclass
class Divergence:
    """The first module (in model A's execution order) whose output differs beyond `atol`."""

    module: str  # qualified name in model A ("" is the root)
    module_b: str  # the same module's name in model B
    module_type_a: str
    module_type_b: str
    call_index: int  # which call of that module (0 for the first)
    execution_index: int  # position among model A's matched module calls
    output_path: str  # which tensor of the output differs ("" for a bare tensor, "[0]", ".logits")
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
        """'module' when the inputs agree (the module computes differently), 'inputs' when they already
        differ (code outside any module, e.g. a parent's forward), 'unknown' when not comparable."""
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
    """Run both models on `inputs` and return the first module (in A's execution order, A's names)
    whose output differs by more than `atol`, or None. `name_map` translates B's module names into
    A's: a callable (None leaves a module out) or a prefix mapping such as `{"core": ""}` (longest
    prefix wins); unmatched modules are listed in `only_in_a` / `only_in_b`, not compared."""
    b_to_a, only_in_a, only_in_b = _match_names(model_a, model_b, name_map)
    start = 0
    while True:
        window = _record_window(model_a, inputs, set(b_to_a.values()), start, max_recorded_bytes)
        found, calls_b = _compare_window(model_b, inputs, b_to_a, window, atol)
        if found is not None or window.end >= len(window.order):
            break
        start = window.end
    if found is None:
        return None
    index, (name_a, call), path, diff, shape_a, shape_b = found
    name_b = next(b for b, a in b_to_a.items() if a == name_a)
    module_a, module_b = model_a.get_submodule(name_a), model_b.get_submodule(name_b)
    calls_a, previous = window.calls_per_name, window.order[index - 1] if index else None
    return Divergence(
        name_a, name_b, type(module_a).__name__, type(module_b).__name__, call, index, path, diff, float(atol),
        shape_a, shape_b,
        input_max_abs_diff=_compare_call_inputs(model_a, model_b, inputs, name_a, name_b, call),
        previous_module=None if previous is None else f"{previous[0] or '<root>'} (call {previous[1]})",
        differing_tensors=_differing_tensors(module_a, module_b, atol),
        only_in_a=only_in_a,
        only_in_b=only_in_b,
        call_count_mismatches={n: (calls_a[n], calls_b[n]) for n, _ in model_a.named_modules() if calls_a[n] != calls_b[n]},
    )  # fmt: skip


def module_name_differences(model_a: nn.Module, model_b: nn.Module, name_map: NameMap = None) -> tuple[list[str], list[str]]:
    """(modules only in A, modules only in B) after translating B's names with `name_map`."""
    return _match_names(model_a, model_b, name_map)[1:]


def _match_names(model_a: nn.Module, model_b: nn.Module, name_map: NameMap) -> tuple[dict[str, str], list[str], list[str]]:
    """({B name: A name} in B's order, names only in A, names only in B). Of several B modules
    mapping to one A name, one the map renamed wins, then B's registration order."""
    a_names, mapper = [n for n, _ in model_a.named_modules()], _make_mapper(name_map)
    mapped = {name: mapper(name) for name, _ in model_b.named_modules()}
    a_to_b: dict[str, str | None] = dict.fromkeys(a_names)
    for name in sorted(mapped, key=lambda name: mapped[name] == name):  # renamed ones first, then B's order
        if mapped[name] in a_to_b and a_to_b[mapped[name]] is None:
            a_to_b[mapped[name]] = name
    b_to_a = {name: target for name, target in mapped.items() if a_to_b.get(target) == name}
    return b_to_a, [n for n in a_names if a_to_b[n] is None], [n for n in mapped if n not in b_to_a]


def _make_mapper(name_map: NameMap) -> Callable[[str], str | None]:
    if name_map is None or callable(name_map):
        return name_map or (lambda name: name)
    if not isinstance(name_map, Mapping):
        raise TypeError(f"name_map must be a callable, a mapping of prefixes or None, not {type(name_map).__name__}")
    prefixes = sorted(name_map.items(), key=lambda item: len(item[0]), reverse=True)

    def by_prefix(name: str) -> str | None:
        for old, new in prefixes:
            if old == "" or name == old or name.startswith(old + "."):
                rest = name[len(old) :].lstrip(".")
                return None if new is None else ".".join(part for part in (new, rest) if part)
        return name

    return by_prefix


def _flatten(value: Any, path: str = "", depth: int = 0) -> Flat:
    """Every tensor in a module output, with a path such as `[0]` or `.logits`."""
    if isinstance(value, torch.Tensor):
        return [(path, value)]
    if depth >= 3:
        return []
    if isinstance(value, Mapping):
        return [t for key, item in value.items() for t in _flatten(item, f"{path}.{key}", depth + 1)]
    if isinstance(value, (tuple, list)):
        return [t for index, item in enumerate(value) for t in _flatten(item, f"{path}[{index}]", depth + 1)]
    return []


def _worst(recorded: Flat, current: Flat) -> tuple[str, float, tuple[int, ...], tuple[int, ...]] | None:
    """(path, max |diff|, shape in A, shape in B) of the worst common tensor, or None when none is common."""
    theirs = dict(current)
    diffs = [(path, max_abs_diff(t, theirs[path]), tuple(t.shape), tuple(theirs[path].shape)) for path, t in recorded if path in theirs]
    return max(diffs, key=lambda d: d[1], default=None)


@dataclass
class _Window:
    records: dict[tuple[str, int], tuple[int, Flat]]  # (name, call) -> (execution index, outputs)
    order: list[tuple[str, int]]  # every matched call of A, in execution order
    calls_per_name: Counter
    end: int  # first execution index not recorded


def _run_hooked(
    model: nn.Module, inputs: Mapping[str, Any], modules: Iterable[nn.Module], hook: Callable, with_kwargs: bool = False
) -> None:
    handles = [module.register_forward_hook(hook, with_kwargs=with_kwargs) for module in modules]
    try:
        run_forward(model, inputs)
    finally:
        for handle in handles:
            handle.remove()


def _record_window(model: nn.Module, inputs: Mapping[str, Any], names: set[str], start: int, budget: int) -> _Window:
    window = _Window({}, [], Counter(), end=-1)
    name_of = {module: name for name, module in model.named_modules() if name in names}
    used = 0

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        nonlocal used
        name = name_of[module]
        key, index = (name, window.calls_per_name[name]), len(window.order)
        window.calls_per_name[name] += 1
        window.order.append(key)
        if index < start or window.end >= 0:
            return
        tensors = _flatten(output)
        size = sum(t.numel() * t.element_size() for _, t in tensors)
        if window.records and used + size > budget:
            window.end = index
            return
        window.records[key] = (index, [(path, t.detach().clone()) for path, t in tensors])
        used += size

    _run_hooked(model, inputs, name_of, hook)
    window.end = window.end if window.end >= 0 else len(window.order)
    return window


def _compare_window(model: nn.Module, inputs: Mapping[str, Any], b_to_a: dict[str, str], window: _Window, atol: float):
    """(the earliest differing call of the window, or None; B's calls per A name)."""
    modules = dict(model.named_modules())
    name_of = {modules[b]: a for b, a in b_to_a.items()}  # B's module -> A's name
    counts: Counter = Counter()
    best = None

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        nonlocal best
        key = (name_of[module], counts[name_of[module]])
        counts[key[0]] += 1
        record = window.records.get(key)
        if record is None or (best is not None and best[0] < record[0]):
            return  # not recorded, or an earlier divergence is already known
        worst = _worst(record[1], _flatten(output))
        if worst is not None and (worst[1] > atol or math.isnan(worst[1])):
            best = (record[0], key, *worst)

    try:
        _run_hooked(model, inputs, name_of, hook)
    finally:
        window.records.clear()
    return best, counts


def _compare_call_inputs(model_a, model_b, inputs, name_a: str, name_b: str, call_index: int) -> float | None:
    """Largest difference between the tensor inputs (positional and keyword) of one module call in
    the two models: one more forward of each, recording only that call."""
    captured: list[Flat] = []
    for model, name in ((model_a, name_a), (model_b, name_b)):
        seen: dict[str, Any] = {"calls": 0, "value": None}

        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any, seen=seen) -> None:
            if seen["calls"] == call_index:
                flat = _flatten(tuple(args), "args") + _flatten(dict(kwargs), "kwargs")
                seen["value"] = [(p, t.detach().clone()) for p, t in flat]
            seen["calls"] += 1

        _run_hooked(model, inputs, [model.get_submodule(name)], hook, with_kwargs=True)
        if seen["value"] is None:
            return None
        captured.append(seen["value"])
    worst = _worst(*captured)
    return None if worst is None else worst[1]


def _module_tensors(module: nn.Module) -> dict[str, tuple[str, torch.Tensor]]:
    """{relative name: (kind, tensor)} of the module's parameters and buffers, its submodules' included."""
    return {n: ("parameter", t) for n, t in module.named_parameters()} | {n: ("buffer", t) for n, t in module.named_buffers()}


def _differing_tensors(module_a: nn.Module, module_b: nn.Module, atol: float) -> list[TensorDifference]:
    tensors_a, tensors_b = _module_tensors(module_a), _module_tensors(module_b)
    result = []
    for name in tensors_a | tensors_b:  # A's order, then B's own
        kind, a = tensors_a.get(name) or (tensors_b[name][0], None)
        b = tensors_b.get(name, (kind, None))[1]
        diff, note = None, ""
        if a is None or b is None:
            note = "only in model A" if b is None else "only in model B"
        elif a.is_meta or b.is_meta:
            note = "on the meta device (no data)"
        elif a.shape != b.shape:
            diff, note = math.inf, "shape differs"
        else:
            diff, note = max_abs_diff(a, b), "dtype differs" if a.dtype != b.dtype else ""
        if note or diff > atol or math.isnan(diff):
            shapes = [None if t is None else tuple(t.shape) for t in (a, b)]
            result.append(TensorDifference(name, kind, diff, dtype_name(a), dtype_name(b), *shapes, note))
    return sorted(result, key=lambda item: "." in item.name)  # own tensors first, then nested ones
