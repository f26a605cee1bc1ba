"""Audit a model's buffers (and optionally parameters) for the signatures of broken loading.

Two bugs this catches, both seen in practice:
  * transformers 5 builds models on the meta device and materialises them; a buffer or parameter
    that nothing fills comes back as uninitialised memory (values such as 2e+38) or zeros; a
    rotary `inv_freq` left at zero moved a model's logits by 0.66;
  * a cast that turns an fp32 buffer into bf16 (`inv_freq` rounded, positions smeared).

Each tensor gets value checks that need no reference (meta device, non-finite, absurd magnitude,
all zeros) and, where one can be computed, a comparison against a *reference*: the value the
model's own initialisation gives that tensor. The reference is found generically by re-running
the owning `PreTrainedModel._init_weights` on a CPU copy of the module, with transformers'
"already initialised" flags cleared so that the init really runs. The copy is made twice, its
tensors pre-filled with two different sentinel values and the random generator seeded
differently; a tensor counts as defined by the init only when both runs give the same value
(so random inits and tensors the init leaves alone get no reference). The copy's parameters are
on the meta device unless they are being checked, so a 2 GB embedding is never duplicated.
When `_init_weights` does not define a buffer, `reference_fns` and built-in fallbacks (rotary
`inv_freq` from the module's rope init function, `embed_scale` from `scalar_embed_scale`) are
tried.

The expected dtype of a buffer is the dtype of the tensor the init copied into it; a buffer now
held in a narrower dtype (fp32 `inv_freq` -> bf16) is reported as a dtype change. Values are
compared at the buffer's own precision, so a bf16 `embed_scale` of 55.5 (sqrt(3072) rounded, as
Gemma does on purpose) is not a mismatch.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["BufferIssue", "Reference", "ReferenceFn", "audit_buffers", "reference_values"]

logger = logging.getLogger(__name__)

GARBAGE_THRESHOLD = 1e10
_SENTINELS = ((3, False, 0), (5, True, 1))  # (numeric fill, bool fill, RNG seed) per run
_CHUNK = 1 << 24  # elements scanned at a time when checking large tensors


@dataclass
class BufferIssue:
    """One problem with one tensor. `kind` is one of:

    meta               on the meta device: it holds no data at all
    non_finite         contains NaN or infinity
    garbage            a finite magnitude above the threshold (uninitialised memory)
    all_zero           every element is zero although its reference is not (or no reference exists)
    reference_mismatch differs from the value the model's own initialisation gives it
    shape_mismatch     has another shape than its reference
    dtype_change       held in another dtype than the initialisation produces (e.g. fp32 -> bf16)
    differs_from_init  (parameters only, severity info) differs from a deterministic init value,
                       which is expected for trained weights
    """

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


# A reference for buffer `name` of `module`: a Reference, a bare tensor (dtype not judged), or None.
ReferenceFn = Callable[[nn.Module, str], "Reference | torch.Tensor | None"]


def audit_buffers(
    model: nn.Module,
    *,
    check_parameters: bool = False,
    reference_fns: Sequence[ReferenceFn] = (),
    rtol: float = 1e-5,
    atol: float = 1e-8,
    garbage_threshold: float = GARBAGE_THRESHOLD,
    max_param_numel: int = 1 << 24,
) -> list[BufferIssue]:
    """Check every buffer of `model` (persistent or not) and, with `check_parameters`, every
    parameter; return the issues found, in module order (an empty list means all is well).

    A value differs from its reference when |value - reference| > atol + rtol * |reference|, with
    the reference rounded to the tensor's dtype first. `reference_fns` are asked first, then the
    owning model's `_init_weights`, then the built-in fallbacks. Parameters larger than
    `max_param_numel` elements get the value checks but no reference (their inits are random).
    """
    issues: list[BufferIssue] = []
    for prefix, module, owner in _modules_with_owner(model):
        own_buffers = [(n, b) for n, b in module._buffers.items() if b is not None]
        own_params = [(n, p) for n, p in module._parameters.items() if p is not None] if check_parameters else []
        if not own_buffers and not own_params:
            continue
        wanted = {n for n, _ in own_buffers}
        wanted |= {n for n, p in own_params if p.numel() <= max_param_numel}
        refs = reference_values(module, owner, wanted, reference_fns)
        for name, tensor in own_buffers:
            issues.extend(_check(_join(prefix, name), tensor, refs.get(name), False, rtol, atol, garbage_threshold))
        for name, tensor in own_params:
            issues.extend(_check(_join(prefix, name), tensor, refs.get(name), True, rtol, atol, garbage_threshold))
    return issues


def reference_values(
    module: nn.Module,
    owner: nn.Module | None,
    names: set[str] | None = None,
    reference_fns: Sequence[ReferenceFn] = (),
) -> dict[str, Reference]:
    """References for the module's own buffers/parameters in `names` (default: its buffers).

    `owner` is the `PreTrainedModel` whose `_init_weights` initialises `module` (the nearest one
    containing it, as transformers dispatches it); None skips that source.
    """
    if names is None:
        names = {n for n, b in module._buffers.items() if b is not None}
    refs: dict[str, Reference] = {}
    for fn in reference_fns:
        for name in sorted(names - refs.keys()):
            ref = _as_reference(fn(module, name))
            if ref is not None:
                refs[name] = ref
    if owner is not None and hasattr(owner, "_init_weights") and names - refs.keys():
        for name, ref in _init_weights_references(module, owner, names - refs.keys()).items():
            refs[name] = ref
    for fn in (_rotary_reference, _embed_scale_reference):
        for name in sorted(names - refs.keys()):
            try:
                ref = _as_reference(fn(module, name))
            except Exception as err:  # a fallback that does not fit this module
                logger.debug("fallback %s failed for %s: %s", fn.__name__, name, err)
                ref = None
            if ref is not None:
                refs[name] = ref
    return refs


# --------------------------------------------------------------------------------------------
# Walking the model


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _modules_with_owner(model: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Module | None]]:
    """(qualified name, module, nearest PreTrainedModel at or above it) for every module once."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        PreTrainedModel = ()  # noqa: N806

    seen: set[int] = set()

    def walk(prefix: str, module: nn.Module, owner: nn.Module | None):
        if id(module) in seen:
            return
        seen.add(id(module))
        if PreTrainedModel and isinstance(module, PreTrainedModel):
            owner = module
        yield prefix, module, owner
        for name, child in module.named_children():
            yield from walk(_join(prefix, name), child, owner)

    yield from walk("", model, None)


# --------------------------------------------------------------------------------------------
# References from _init_weights


def _init_weights_references(module: nn.Module, owner: nn.Module, names: set[str]) -> dict[str, Reference]:
    """Run `owner._init_weights` on two sentinel-filled copies of `module`; keep the tensors it
    sets to the same value both times. Parameters of the copy not in `names` are on the meta
    device; if the init needs their values, it is retried with real copies of them."""
    for real_params in (False, True):
        if real_params and _subtree_numel(module) > (1 << 26):
            return {}
        try:
            runs = [_init_copy(module, owner, names, fill, bool_fill, seed, real_params) for fill, bool_fill, seed in _SENTINELS]
        except Exception as err:
            logger.debug("_init_weights on a copy of %s failed (real_params=%s): %s", type(module).__name__, real_params, err)
            continue
        (values_1, dtypes_1), (values_2, _) = runs
        refs = {}
        for name in names:
            v1, v2 = values_1.get(name), values_2.get(name)
            if v1 is None or v2 is None or v1.is_meta or v2.is_meta:
                continue
            if v1.shape == v2.shape and v1.dtype == v2.dtype and _identical(v1, v2):
                refs[name] = Reference(v1, dtypes_1.get(name))
        return refs
    return {}


def _subtree_numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.is_floating_point():
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
    return bool(torch.equal(a, b))


def _init_copy(
    module: nn.Module,
    owner: nn.Module,
    names: set[str],
    fill: int,
    bool_fill: bool,
    seed: int,
    real_params: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.dtype]]:
    """One run: copy the module (own tensors in `names` filled with the sentinel, floating ones in
    fp32, on CPU), initialise the copy, and return its own tensors in `names` and, for each, the
    dtype of the tensor the init copied into it (when it used `copy_` or replaced the tensor)."""
    memo: dict[int, object] = {}
    targets: dict[int, str] = {}
    created: dict[str, torch.Tensor] = {}

    def sentinel(tensor: torch.Tensor) -> torch.Tensor:
        dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
        value = bool_fill if dtype == torch.bool else fill
        return torch.full(tuple(tensor.shape), value, dtype=dtype)

    def plain_copy(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.is_meta:
            return torch.empty(tuple(tensor.shape), dtype=tensor.dtype, device="meta")
        dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
        return tensor.detach().to(device="cpu", dtype=dtype).clone(memory_format=torch.contiguous_format)

    own_params = {id(p): n for n, p in module._parameters.items() if p is not None}
    own_buffers = {id(b): n for n, b in module._buffers.items() if b is not None}
    for param in module.parameters():
        name = own_params.get(id(param))
        if name in names:
            new = sentinel(param)
            targets[id(new)] = name
            created[name] = new
            memo[id(param)] = nn.Parameter(new, requires_grad=param.requires_grad)
        elif real_params:
            memo[id(param)] = nn.Parameter(plain_copy(param), requires_grad=param.requires_grad)
        else:
            memo[id(param)] = nn.Parameter(
                torch.empty(tuple(param.shape), dtype=param.dtype, device="meta"), requires_grad=param.requires_grad
            )
    for buffer in module.buffers():
        name = own_buffers.get(id(buffer))
        if name in names:
            new = sentinel(buffer)
            targets[id(new)] = name
            created[name] = new
            memo[id(buffer)] = new
        else:
            memo[id(buffer)] = plain_copy(buffer)

    clone = copy.deepcopy(module, memo)
    for sub in clone.modules():
        if "_is_hf_initialized" in sub.__dict__:
            del sub.__dict__["_is_hf_initialized"]
        for tensor in [*sub._parameters.values(), *sub._buffers.values()]:
            if tensor is not None and "_is_hf_initialized" in getattr(tensor, "__dict__", {}):
                del tensor.__dict__["_is_hf_initialized"]
    # Parameters wrap the sentinel tensors; track the Parameter objects too (copy_ sees those).
    for name, param in clone._parameters.items():
        if param is not None and name in created:
            targets[id(param)] = name

    recorder = _CopySources(targets)
    with _genuine_torch_init(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad(), recorder:
            owner._init_weights(clone)

    values: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = dict(recorder.sources)
    for name in names:
        tensor = clone._parameters.get(name) if name in clone._parameters else clone._buffers.get(name)
        if tensor is None:
            continue
        tensor = tensor.detach()
        if name in created and tensor.data_ptr() != created[name].data_ptr() and not tensor.is_meta:
            dtypes.setdefault(name, tensor.dtype)  # the init replaced the tensor: its dtype is the intent
        values[name] = tensor.to("cpu") if not tensor.is_meta else tensor
    return values, dtypes


class _CopySources(TorchFunctionMode):
    """Records the dtype of the source of every `copy_` into one of the target tensors."""

    def __init__(self, targets: dict[int, str]):
        super().__init__()
        self.targets = targets
        self.sources: dict[str, torch.dtype] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.copy_ and args:
            name = self.targets.get(id(args[0]))
            source = args[1] if len(args) > 1 else kwargs.get("src")
            if name is not None and isinstance(source, torch.Tensor):
                self.sources[name] = source.dtype
        return func(*args, **kwargs)


@contextmanager
def _genuine_torch_init() -> Iterator[None]:
    """Undo, for the duration, any patching of `torch.nn.init` by transformers (`no_init_weights`
    replaces the init functions by no-ops, `guard_torch_init_functions` by flag-checking ones), so
    that an `_init_weights` calling torch's init directly really initialises the copy."""
    try:
        from transformers import initialization as hf_init
    except ImportError:  # transformers < 5
        yield
        return
    originals = getattr(hf_init, "TORCH_INIT_FUNCTIONS", {})
    restored = []
    for module_name in getattr(hf_init, "TORCH_MODULES_TO_PATCH", ()):
        torch_module = sys.modules.get(module_name)
        if torch_module is None:
            continue
        for func_name, func in originals.items():
            current = getattr(torch_module, func_name, None)
            if current is not None and current is not func:
                restored.append((torch_module, func_name, current))
                setattr(torch_module, func_name, func)
    try:
        yield
    finally:
        for torch_module, func_name, func in reversed(restored):
            setattr(torch_module, func_name, func)


# --------------------------------------------------------------------------------------------
# Built-in fallbacks (used only where _init_weights defines nothing)


def _as_reference(value: Reference | torch.Tensor | None) -> Reference | None:
    if value is None or isinstance(value, Reference):
        return value
    if isinstance(value, torch.Tensor):
        return Reference(value)
    raise TypeError(f"a reference function must return a Reference, a tensor or None, not {type(value).__name__}")


def _rotary_reference(module: nn.Module, name: str) -> Reference | None:
    """`inv_freq` / `original_inv_freq` / `<layer_type>_inv_freq` of a rotary embedding module,
    recomputed with the module's own rope init function (transformers 4.x and 5.x layouts)."""
    if not name.endswith("inv_freq") or "Rotary" not in type(module).__name__:
        return None
    config = getattr(module, "config", None)
    if config is None:
        return None
    layer_type = None
    for suffix in ("_original_inv_freq", "_inv_freq"):
        if name.endswith(suffix) and name != suffix.lstrip("_"):
            layer_type = name[: -len(suffix)]
            break
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
    if layer_type is None:
        inv_freq = init_fn(config, "cpu")[0]
    else:
        inv_freq = init_fn(config, "cpu", layer_type=layer_type)[0]
    return Reference(inv_freq.detach().to("cpu"), inv_freq.dtype)


def _embed_scale_reference(module: nn.Module, name: str) -> Reference | None:
    """A scaled embedding's `embed_scale` buffer from the float it was built from."""
    scalar = getattr(module, "scalar_embed_scale", None)
    if name != "embed_scale" or not isinstance(scalar, (int, float)):
        return None
    return Reference(torch.tensor(float(scalar), dtype=torch.float32))


# --------------------------------------------------------------------------------------------
# Checks


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).replace("torch.", "")


def _value_stats(tensor: torch.Tensor) -> tuple[bool, float, bool]:
    """(has non-finite values, largest finite |value|, all zero), scanned in chunks."""
    flat = tensor.detach().reshape(-1)
    nonfinite, largest, all_zero = False, 0.0, True
    for start in range(0, flat.numel(), _CHUNK):
        chunk = flat[start : start + _CHUNK]
        if chunk.is_floating_point() or chunk.is_complex():
            finite = torch.isfinite(chunk)
            if not bool(finite.all()):
                nonfinite = True
                chunk = chunk[finite]
            chunk = chunk.abs().to(torch.float64)
        else:
            chunk = chunk.to(torch.float64).abs()
        if chunk.numel():
            largest = max(largest, float(chunk.max()))
            if all_zero and bool((chunk != 0).any()):
                all_zero = False
    return nonfinite, largest, all_zero and not nonfinite


def _is_downcast(actual: torch.dtype, expected: torch.dtype) -> bool:
    if actual.is_floating_point and expected.is_floating_point:
        return torch.finfo(actual).eps > torch.finfo(expected).eps
    return actual.is_floating_point != expected.is_floating_point


def _check(
    name: str,
    tensor: torch.Tensor,
    ref: Reference | None,
    is_parameter: bool,
    rtol: float,
    atol: float,
    garbage_threshold: float,
) -> list[BufferIssue]:
    what = "parameter" if is_parameter else "buffer"
    dtype = _dtype_name(tensor.dtype)

    def issue(kind: str, severity: str, message: str, **extra) -> BufferIssue:
        return BufferIssue(name, kind, severity, message, dtype=dtype, is_parameter=is_parameter, **extra)

    if tensor.is_meta:
        return [issue("meta", "error", f"{what} is on the meta device: it was never materialised")]
    found: list[BufferIssue] = []

    if tensor.dtype != torch.bool and tensor.numel():
        nonfinite, largest, all_zero = _value_stats(tensor)
        if nonfinite:
            found.append(issue("non_finite", "error", f"{what} contains NaN or infinity"))
        if largest > garbage_threshold:
            found.append(
                issue(
                    "garbage",
                    "error",
                    f"{what} holds |values| up to {largest:.3g} (> {garbage_threshold:.0e}): "
                    "uninitialised memory, typically a tensor nothing filled after meta-device loading",
                )
            )
        ref_all_zero = ref is not None and not bool((ref.value != 0).any())
        if all_zero and not ref_all_zero:
            if ref is None:
                found.append(issue("all_zero", "warning", f"{what} is all zeros and no reference says that is intended"))
            else:
                found.append(issue("all_zero", "error", f"{what} is all zeros but its initialisation is not"))

    if ref is None:
        return found
    expected = ref.value.detach().to("cpu")
    if tuple(expected.shape) != tuple(tensor.shape):
        found.append(
            issue(
                "shape_mismatch",
                "error",
                f"{what} has shape {tuple(tensor.shape)}, its initialisation {tuple(expected.shape)}",
            )
        )
        return found

    if ref.expected_dtype is not None and ref.expected_dtype != tensor.dtype:
        downcast = _is_downcast(tensor.dtype, ref.expected_dtype)
        found.append(
            issue(
                "dtype_change",
                "error" if downcast else "warning",
                f"{what} is {dtype} but its initialisation produces {_dtype_name(ref.expected_dtype)}"
                + (" (precision lost)" if downcast else ""),
                expected_dtype=_dtype_name(ref.expected_dtype),
            )
        )

    actual = tensor.detach().to("cpu")
    if tensor.is_floating_point():
        rounded = expected.to(tensor.dtype).to(torch.float32)
        value = actual.to(torch.float32)
        bad = ~((value - rounded).abs() <= atol + rtol * rounded.abs())
        bad &= ~(torch.isnan(value) & torch.isnan(rounded))
        diff = (value - rounded).abs().nan_to_num(nan=math.inf)
        max_diff = float(diff.max()) if diff.numel() else 0.0
    else:
        bad = actual != expected.to(tensor.dtype)
        max_diff = float((actual.to(torch.float64) - expected.to(torch.float64)).abs().max()) if actual.numel() else 0.0
    if bool(bad.any()):
        if is_parameter:
            found.append(
                issue(
                    "differs_from_init",
                    "info",
                    f"parameter differs from its deterministic initial value by up to {max_diff:.3g} "
                    "(expected for trained weights)",
                    max_abs_diff=max_diff,
                )
            )
        else:
            found.append(
                issue(
                    "reference_mismatch",
                    "error",
                    f"buffer differs from the value its initialisation gives it by up to {max_diff:.3g} "
                    f"({int(bad.sum())} of {bad.numel()} elements)",
                    max_abs_diff=max_diff,
                )
            )
    return found
