"""Audit a model's buffers (and optionally parameters) for the signatures of broken loading.

It catches what was seen in practice: tensors nothing filled after transformers 5's meta-device
loading (uninitialised memory such as 2e+38, or zeros: a zeroed rotary `inv_freq` moved logits by
0.66), and fp32 buffers cast to bf16. The reference for a tensor is the value the model's own
`_init_weights` gives it on a skeleton copy (tensors under test sentinel-filled, other parameters
on meta), initialised twice with different sentinels and seeds: only values both runs agree on
count. `reference_fns` come before it, built-in fallbacks (rotary `inv_freq`, `embed_scale`) after.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from unittest import mock

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from transformers import PreTrainedModel

from theworld.parity.logits import dtype_name

__all__ = ["BufferIssue", "Reference", "ReferenceFn", "audit_buffers", "reference_values"]

logger = logging.getLogger(__name__)

GARBAGE_THRESHOLD = 1e10  # |values| above it are uninitialised memory
RTOL, ATOL = 1e-5, 1e-8  # against the reference, at the tensor's own precision
MAX_PARAM_NUMEL = 1 << 24  # larger parameters get value checks only
MAX_BATCH_NUMEL = 1 << 27  # parameter elements materialised at a time
_SENTINELS = ((3, False, 0), (5, True, 1))  # (numeric fill, bool fill, RNG seed) per run
_CHUNK = 1 << 24  # elements scanned at a time when checking large tensors
_MAX_REAL_SUBTREE = 1 << 26  # largest subtree (elements) copied for real when an init needs values


@dataclass
class BufferIssue:
    """One problem with one tensor. `kind`: meta, non_finite, garbage, all_zero, reference_mismatch,
    shape_mismatch, dtype_change, or (parameters only, "info") differs_from_init, expected when trained."""

    name: str
    kind: str
    severity: str  # "error", "warning" or "info"
    message: str
    dtype: str | None = None
    expected_dtype: str | None = None
    max_abs_diff: float | None = None
    is_parameter: bool = False


@dataclass
class Reference:
    """The value a tensor should hold, and the dtype it should be held in (None: not known)."""

    value: torch.Tensor
    expected_dtype: torch.dtype | None = None


# A reference for tensor `name` of `module` (its own, unqualified name): a Reference, a bare
# tensor (its dtype is then not judged), or None when the function has nothing to say.
ReferenceFn = Callable[[nn.Module, str], "Reference | torch.Tensor | None"]


@dataclass
class _Entry:
    name: str  # qualified
    module: nn.Module
    local: str  # name inside `module`
    tensor: torch.Tensor
    is_parameter: bool


def audit_buffers(
    model: nn.Module, *, check_parameters: bool = False, reference_fns: Sequence[ReferenceFn] = ()
) -> list[BufferIssue]:
    """The issues of every buffer (and, with `check_parameters`, parameter) of `model` in module order."""
    entries = _entries(model, check_parameters)
    wanted = [e for e in entries if not e.is_parameter or e.tensor.numel() <= MAX_PARAM_NUMEL]
    refs = _references(model, wanted, reference_fns)
    return [issue for e in entries for issue in _check(e, refs.get(e.name))]


def reference_values(
    model: nn.Module, names: Sequence[str] | None = None, *, reference_fns: Sequence[ReferenceFn] = ()
) -> dict[str, Reference]:
    """References for the tensors named in `names` (default: every buffer), as far as they can be found."""
    wanted = None if names is None else set(names)
    entries = [e for e in _entries(model, wanted is not None) if wanted is None or e.name in wanted]
    return _references(model, entries, reference_fns)


def _entries(model: nn.Module, with_parameters: bool) -> list[_Entry]:
    """Every buffer (and parameter) once, under its first qualified name, in module order."""
    entries: dict[int, _Entry] = {}
    for prefix, module in model.named_modules():
        own = [(n, b, False) for n, b in module._buffers.items() if b is not None]
        if with_parameters:
            own = [(n, p, True) for n, p in module._parameters.items() if p is not None] + own
        for local, tensor, is_parameter in own:
            name = f"{prefix}.{local}" if prefix else local
            entries.setdefault(id(tensor), _Entry(name, module, local, tensor, is_parameter))
    return list(entries.values())


# --------------------------------------------------------------------------------------------
# References


def _references(model: nn.Module, entries: list[_Entry], reference_fns: Sequence[ReferenceFn]) -> dict[str, Reference]:
    """Given `reference_fns` first, then the model's own init, then the built-in fallbacks (buffers only)."""
    refs: dict[str, Reference] = {}
    for fn in reference_fns:
        for entry in entries:
            if entry.name in refs or (ref := fn(entry.module, entry.local)) is None:
                continue
            if not isinstance(ref, (Reference, torch.Tensor)):
                raise TypeError(f"a reference function must return a Reference, a tensor or None, not {type(ref).__name__}")
            refs[entry.name] = ref if isinstance(ref, Reference) else Reference(ref)
    # Every buffer in the first batch; parameters while the batch stays under MAX_BATCH_NUMEL.
    pending = sorted((e for e in entries if e.name not in refs and not e.tensor.is_meta), key=lambda e: e.is_parameter)
    batch, size = [], 0
    for entry in pending:
        if entry.is_parameter and batch and size + entry.tensor.numel() > MAX_BATCH_NUMEL:
            refs.update(_init_weights_references(model, batch))
            batch, size = [], 0
        batch.append(entry)
        size += entry.tensor.numel() if entry.is_parameter else 0
    if batch:
        refs.update(_init_weights_references(model, batch))
    for entry in (e for e in entries if e.name not in refs and not e.is_parameter):
        try:  # the two fallbacks take different names: at most one applies
            ref = _rotary_reference(entry.module, entry.local) or _embed_scale_reference(entry.module, entry.local)
        except Exception as err:  # a rotary module the fallback does not fit
            logger.debug("fallback reference failed for %s: %s", entry.name, err)
            ref = None
        if ref is not None:
            refs[entry.name] = ref
    return refs


def _init_weights_references(model: nn.Module, batch: list[_Entry]) -> dict[str, Reference]:
    """The tensors of `batch` that two sentinel-filled skeletons, once initialised, agree on."""
    (values_1, dtypes), (values_2, _) = (_initialised_skeleton(model, batch, *s) for s in _SENTINELS)
    refs = {}
    for name, v1 in values_1.items():
        v2 = values_2.get(name)
        same_kind = v2 is not None and v1.shape == v2.shape and v1.dtype == v2.dtype
        if same_kind and bool(((v1 == v2) | (v1.isnan() & v2.isnan())).all()):
            refs[name] = Reference(v1, dtypes.get(name))
    return refs


def _copy(tensor: torch.Tensor, real: bool) -> torch.Tensor:
    """A real CPU copy (floating tensors in fp32) or an empty meta tensor of the same shape."""
    if tensor.is_meta or not real:
        return torch.empty(tuple(tensor.shape), dtype=tensor.dtype, device="meta")
    dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
    return tensor.detach().to(device="cpu", dtype=dtype).clone(memory_format=torch.contiguous_format)


def _initialised_skeleton(
    model: nn.Module, batch: list[_Entry], fill: int, bool_fill: bool, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.dtype]]:
    """One run: (the value of each batch tensor the skeleton's init set, the dtype the init meant where known)."""
    by_id = {id(e.tensor): e.name for e in batch}
    created: dict[str, torch.Tensor] = {}  # batch name -> the skeleton's tensor
    originals: dict[int, torch.Tensor] = {}  # id(skeleton tensor) -> model tensor
    replaced: dict[int, torch.Tensor] = {}  # id(model tensor) -> skeleton tensor (shared tensors stay shared)
    skeletons: dict[int, nn.Module] = {}  # id(model module) -> skeleton module

    def replacement(tensor: torch.Tensor, is_parameter: bool, real: bool) -> torch.Tensor:
        if id(tensor) not in replaced:
            name = by_id.get(id(tensor))
            if name is None:
                new = _copy(tensor, real)
            else:  # under test: a sentinel the init must overwrite
                dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
                new = torch.full(tuple(tensor.shape), bool_fill if dtype == torch.bool else fill, dtype=dtype)
            if is_parameter:
                new = nn.Parameter(new, requires_grad=tensor.requires_grad)
            if name is not None:
                created[name] = new
            replaced[id(tensor)], originals[id(new)] = new, tensor
        return replaced[id(tensor)]

    def skeleton(module: nn.Module) -> nn.Module:
        if id(module) not in skeletons:
            clone = skeletons[id(module)] = copy.copy(module)
            state = clone.__dict__
            state.pop("_is_hf_initialized", None)
            # Buffers are small and other modules' inits may read them: real copies; parameters on meta.
            state["_parameters"] = {n: p if p is None else replacement(p, True, False) for n, p in module._parameters.items()}
            state["_buffers"] = {n: b if b is None else replacement(b, False, True) for n, b in module._buffers.items()}
            state["_modules"] = {n: c if c is None else skeleton(c) for n, c in module._modules.items()}
            # Plain tensor attributes must not be shared either: an init writing into one would write into the model.
            tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
            # An attribute that aliases a replaced tensor keeps the alias; the rest are copies.
            state.update(
                {k: replaced[id(v)] if id(v) in replaced else _copy(v, v.numel() <= _CHUNK) for k, v in tensors.items()}
            )
        return skeletons[id(module)]

    root = skeleton(model)
    recorder = _CopySources({id(t): name for name, t in created.items()})
    failed: set[str] = set()

    def initialise(module: nn.Module, owner: nn.Module | None) -> None:
        for child in module.children():
            initialise(child, child if isinstance(child, PreTrainedModel) else owner)
        if owner is None:
            return
        try:
            owner._init_weights(module)
            return
        except Exception as err:
            logger.debug("_init_weights(%s) failed on meta parameters: %s", type(module).__name__, err)
        # The init needs real parameter values: give this subtree real copies and retry.
        metas = [(m, n, p) for m in module.modules() for n, p in m._parameters.items() if p is not None and p.is_meta]
        try:
            if sum(p.numel() for _, _, p in metas) > _MAX_REAL_SUBTREE:
                raise RuntimeError("subtree too large to copy")
            for holder, name, param in metas:
                holder._parameters[name] = nn.Parameter(_copy(originals[id(param)], real=True), requires_grad=param.requires_grad)
            owner._init_weights(module)
        except Exception as err:
            logger.debug("_init_weights(%s) failed: %s", type(module).__name__, err)
            mine = {id(t) for t in [*module.parameters(), *module.buffers()]}
            failed.update(name for name, t in created.items() if id(t) in mine)

    with _genuine_torch_init(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad(), recorder:
            initialise(root, root if isinstance(root, PreTrainedModel) else None)

    values: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = dict(recorder.sources)
    for entry in batch:
        holder = skeletons[id(entry.module)]  # every module of the model has one
        tensor = (holder._parameters if entry.is_parameter else holder._buffers).get(entry.local)
        if tensor is None or tensor.is_meta or entry.name in failed:
            continue
        if tensor.data_ptr() != created[entry.name].data_ptr():
            dtypes.setdefault(entry.name, tensor.dtype)  # the init replaced the tensor: its dtype is the intent
        values[entry.name] = tensor.detach().to("cpu")
    return values, dtypes


class _CopySources(TorchFunctionMode):
    """Records the dtype of the source of every `copy_` into one of the target tensors."""

    def __init__(self, targets: dict[int, str]):
        super().__init__()
        self.targets, self.sources = targets, {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        source = args[1] if len(args) > 1 else kwargs.get("src")
        if func is torch.Tensor.copy_ and id(args[0]) in self.targets and isinstance(source, torch.Tensor):
            self.sources[self.targets[id(args[0])]] = source.dtype
        return func(*args, **kwargs)


@contextmanager
def _genuine_torch_init() -> Iterator[None]:
    """torch's own `torch.nn.init` functions for the duration (transformers' `no_init_weights` makes them
    no-ops), so that an `_init_weights` calling them really initialises the copy."""
    try:
        from transformers.initialization import TORCH_INIT_FUNCTIONS as functions, TORCH_MODULES_TO_PATCH as names
    except ImportError:  # transformers < 5
        functions, names = {}, ()
    with ExitStack() as stack:
        for module in (sys.modules[name] for name in names if name in sys.modules):
            for func in functions.keys() & vars(module).keys():
                stack.enter_context(mock.patch.object(module, func, functions[func]))
        yield


# --------------------------------------------------------------------------------------------
# Built-in fallbacks (used only where _init_weights defines nothing)


def _rotary_reference(module: nn.Module, name: str) -> Reference | None:
    """`inv_freq` / `original_inv_freq` / `<layer_type>_inv_freq` of a rotary embedding module,
    recomputed with the module's own rope init function (transformers 4.x and 5.x layouts)."""
    config = getattr(module, "config", None)
    if not name.endswith("inv_freq") or "Rotary" not in type(module).__name__ or config is None:
        return None
    suffix = next((s for s in ("_original_inv_freq", "_inv_freq") if name.endswith(s) and name != s[1:]), None)
    layer_type = name.removesuffix(suffix) if suffix else None
    rope_type = getattr(module, "rope_type", "default")
    if isinstance(rope_type, dict):
        rope_type = rope_type.get(layer_type, "default")
    if rope_type == "default" and hasattr(module, "compute_default_rope_parameters"):
        init_fn = module.compute_default_rope_parameters
    elif callable(getattr(module, "rope_init_fn", None)) and layer_type is None:
        init_fn = module.rope_init_fn
    else:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        init_fn = ROPE_INIT_FUNCTIONS[rope_type]
    inv_freq = (init_fn(config, "cpu") if layer_type is None else init_fn(config, "cpu", layer_type=layer_type))[0]
    return Reference(inv_freq.detach().to("cpu"), inv_freq.dtype)


def _embed_scale_reference(module: nn.Module, name: str) -> Reference | None:
    """A scaled embedding's `embed_scale` buffer from the float it was built from."""
    scalar = getattr(module, "scalar_embed_scale", None)
    if name != "embed_scale" or not isinstance(scalar, (int, float)):
        return None
    return Reference(torch.tensor(float(scalar), dtype=torch.float32))


# --------------------------------------------------------------------------------------------
# Checks


def _value_stats(tensor: torch.Tensor) -> tuple[bool, float, bool]:
    """(has non-finite values, largest finite |value|, all zero), scanned in chunks."""
    nonfinite, largest, nonzero = False, 0.0, False
    for chunk in tensor.detach().reshape(-1).split(_CHUNK):
        if chunk.is_floating_point() or chunk.is_complex():
            finite = torch.isfinite(chunk)
            nonfinite = nonfinite or not bool(finite.all())
            chunk = chunk[finite]
        if chunk.numel():
            largest = max(largest, float(chunk.abs().max()))
            nonzero = nonzero or bool((chunk != 0).any())
    return nonfinite, largest, not (nonzero or nonfinite)


def _check(entry: _Entry, ref: Reference | None) -> list[BufferIssue]:
    tensor, is_parameter = entry.tensor, entry.is_parameter
    what = "parameter" if is_parameter else "buffer"
    found: list[BufferIssue] = []

    def issue(kind: str, severity: str, message: str, **extra) -> None:
        found.append(BufferIssue(entry.name, kind, severity, message, dtype_name(tensor), is_parameter=is_parameter, **extra))

    if tensor.is_meta:
        issue("meta", "error", f"{what} is on the meta device: it was never materialised")
        return found
    if tensor.dtype != torch.bool and tensor.numel():
        nonfinite, largest, all_zero = _value_stats(tensor)
        if nonfinite:
            issue("non_finite", "error", f"{what} contains NaN or infinity")
        if largest > GARBAGE_THRESHOLD:
            issue(
                "garbage", "error",
                f"{what} holds |values| up to {largest:.3g} (> {GARBAGE_THRESHOLD:.0e}): "
                "uninitialised memory, typically a tensor nothing filled after meta-device loading",
            )  # fmt: skip
        if all_zero and ref is None:
            issue("all_zero", "warning", f"{what} is all zeros and no reference says that is intended")
        elif all_zero and bool((ref.value != 0).any()):
            issue("all_zero", "error", f"{what} is all zeros but its initialisation is not")
    if ref is None:
        return found
    expected = ref.value.detach().to("cpu")
    if tuple(expected.shape) != tuple(tensor.shape):
        issue("shape_mismatch", "error", f"{what} has shape {tuple(tensor.shape)}, its initialisation {tuple(expected.shape)}")
        return found
    actual_t, expected_t = tensor.dtype, ref.expected_dtype
    if expected_t is not None and expected_t != actual_t:
        if actual_t.is_floating_point and expected_t.is_floating_point:
            downcast = torch.finfo(actual_t).eps > torch.finfo(expected_t).eps
        else:
            downcast = actual_t.is_floating_point != expected_t.is_floating_point
        issue(
            "dtype_change", "error" if downcast else "warning",
            f"{what} is {dtype_name(actual_t)} but its initialisation produces {dtype_name(expected_t)}"
            + (" (precision lost)" if downcast else ""),
            expected_dtype=dtype_name(expected_t),
        )  # fmt: skip
    actual = tensor.detach().to("cpu")
    if tensor.is_floating_point():
        rounded, value = expected.to(actual_t).to(torch.float32), actual.to(torch.float32)
        bad = ~((value - rounded).abs() <= ATOL + RTOL * rounded.abs()) & ~(value.isnan() & rounded.isnan())
        diff = (value - rounded).abs().nan_to_num(nan=math.inf)
    else:
        bad = actual != expected.to(actual_t)
        diff = (actual.to(torch.float64) - expected.to(torch.float64)).abs()
    max_diff = float(diff.max()) if diff.numel() else 0.0
    if not bool(bad.any()):
        return found
    if is_parameter:
        kind, severity, what = "differs_from_init", "info", "parameter differs from its deterministic initial value"
        detail = "(expected for trained weights)"
    else:
        kind, severity, what = "reference_mismatch", "error", "buffer differs from the value its initialisation gives it"
        detail = f"({int(bad.sum())} of {bad.numel()} elements)"
    issue(kind, severity, f"{what} by up to {max_diff:.3g} {detail}", max_abs_diff=max_diff)
    return found
