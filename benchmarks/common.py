"""Shared pieces of TheWorld's benchmarks: random models from a config, paired timing, results.

Every benchmark reports a *ratio measured within one run*: the development machines are small and
shared, so absolute times drift with whatever else is running. A and B are timed in alternating
pairs (A B, then B A, ...), so slow spells hit both about equally, and the figure is the median
of the per-pair ratios B/A, with its interquartile range.

Each benchmark script writes its results as JSON (`--json PATH`) for `run_all.py`, and prints
them with the command that produced them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from theworld.testing.gemma import GemmaSpec, gemma3_config, gemma3_layer_types

REPO_ROOT = Path(__file__).resolve().parent.parent

# Token ids used by the random models (any ids inside the vocabulary would do; these stay clear of
# the random text ids, which are drawn from TEXT_ID_START upwards).
PAD_ID, EOS_ID, BOS_ID = 0, 1, 2
BOI_ID, EOI_ID, IMAGE_ID = 5, 6, 7
START_OF_WORLD_ID, WORLD_ID, END_OF_WORLD_ID = 10, 11, 12
TEXT_ID_START = 100


# ------------------------------------------------------------------------------------------------
# models


@dataclasses.dataclass
class LMSize(GemmaSpec):
    """Sizes of a random Gemma 3 language model (its vision tower is kept tiny: unused by text)."""

    hidden_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 64
    intermediate_size: int = 2048
    vocab_size: int = 32_000
    max_position_embeddings: int = 8192
    # Gemma 3 interleaves 5 sliding-window layers per global one; with few layers the last is global.
    layer_types: list[str] | None = None

    def __post_init__(self) -> None:
        self.layer_types = list(self.layer_types or gemma3_layer_types(self.num_hidden_layers))


def gemma_config(size: LMSize):
    """A `Gemma3Config` for a random model of the given size; token ids set inside the vocabulary."""
    return gemma3_config(size, pad=PAD_ID, bos=BOS_ID, eos=EOS_ID, boi=BOI_ID, eoi=EOI_ID, image=IMAGE_ID)


def world_config(base, **world: Any):
    """A `TheWorldConfig` built from a Gemma 3 config, with world marker ids set (no tokenizer needed)."""
    from theworld import TheWorldConfig

    world.setdefault("start_of_world_token_id", START_OF_WORLD_ID)
    world.setdefault("world_token_id", WORLD_ID)
    world.setdefault("end_of_world_token_id", END_OF_WORLD_ID)
    return TheWorldConfig.from_gemma_config(base, **world)


def random_text_ids(generator: torch.Generator, n: int, vocab_size: int) -> torch.Tensor:
    return torch.randint(TEXT_ID_START, vocab_size, (n,), generator=generator)


def matmul_parameters(module: torch.nn.Module) -> int:
    """Weights and biases of linear and convolution layers: the parameters that cost 2 FLOPs per use.

    Norm scales and embedding tables are parameters too, but a lookup or a scale is not a matmul.
    """
    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    total = 0
    for sub in module.modules():
        if isinstance(sub, kinds):
            total += sub.weight.numel() + (sub.bias.numel() if sub.bias is not None else 0)
    return total


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    """Unique parameters (tied weights once); works on the meta device."""
    seen: set[int] = set()
    total = 0
    for param in module.parameters():
        if id(param) in seen or (trainable_only and not param.requires_grad):
            continue
        seen.add(id(param))
        total += param.numel()
    return total


# ------------------------------------------------------------------------------------------------
# timing


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], device: torch.device | str | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = q * (len(ordered) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


CLOCKS = ("cpu", "wall")


@dataclasses.dataclass
class PairedTiming:
    """A and B timed in alternating pairs, on two clocks; `ratio()` is the median of B/A over pairs.

    The "cpu" clock is the CPU time this process used (`time.process_time`): with one torch thread
    it is the compute a call needs, and it is far less disturbed than wall time when other jobs
    share the cores (time spent preempted is not counted). The "wall" clock is what a user waits.
    """

    wall_a: list[float]
    wall_b: list[float]
    cpu_a: list[float]
    cpu_b: list[float]
    clock: str = "cpu"

    def seconds(self, which: str, clock: str | None = None) -> list[float]:
        return getattr(self, f"{clock or self.clock}_{which}")

    def ratios(self, clock: str | None = None) -> list[float]:
        return [b / a for a, b in zip(self.seconds("a", clock), self.seconds("b", clock))]

    def ratio(self, clock: str | None = None) -> float:
        return statistics.median(self.ratios(clock))

    def ratio_iqr(self, clock: str | None = None) -> tuple[float, float]:
        ratios = self.ratios(clock)
        return quantile(ratios, 0.25), quantile(ratios, 0.75)

    def median(self, which: str, clock: str | None = None) -> float:
        return statistics.median(self.seconds(which, clock))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pairs": len(self.wall_a), "clock": self.clock}
        for clock in CLOCKS:
            lo, hi = self.ratio_iqr(clock)
            out[clock] = {
                "ratio_median": self.ratio(clock),
                "ratio_q25": lo,
                "ratio_q75": hi,
                "ratio_of_medians": self.median("b", clock) / self.median("a", clock),
                "median_s_a": self.median("a", clock),
                "median_s_b": self.median("b", clock),
            }
        return out

    def describe(self, label_a: str = "A", label_b: str = "B") -> str:
        """One line: the chosen clock's ratio, its IQR, the other clock's ratio, median times."""
        lo, hi = self.ratio_iqr()
        other = "wall" if self.clock == "cpu" else "cpu"
        return (
            f"ratio {self.ratio():.3f} = median of {len(self.wall_a)} interleaved pairs ({self.clock} time), "
            f"IQR {lo:.3f}-{hi:.3f}; "
            f"{other}-time ratio {self.ratio(other):.3f}; {label_a} {self.median('a') * 1e3:.0f} ms, "
            f"{label_b} {self.median('b') * 1e3:.0f} ms ({self.clock})"
        )


def paired_timing(
    fn_a: Callable[[], Any],
    fn_b: Callable[[], Any],
    pairs: int,
    warmup: int = 2,
    device: torch.device | str | None = None,
    clock: str | None = None,
) -> PairedTiming:
    """Time `fn_a` and `fn_b` `pairs` times each, alternating which goes first (A B, B A, ...).

    The clock defaults to CPU time on the CPU and wall time (synchronised) on a GPU.
    """
    if clock is None:
        clock = "wall" if device is not None and torch.device(device).type == "cuda" else "cpu"
    for _ in range(warmup):
        fn_a()
        fn_b()
    samples: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    for i in range(pairs):
        gc.collect()
        order = (("a", fn_a), ("b", fn_b)) if i % 2 == 0 else (("b", fn_b), ("a", fn_a))
        for which, fn in order:
            samples[which].append(time_call(fn, device))
    return PairedTiming(
        wall_a=[w for w, _ in samples["a"]],
        wall_b=[w for w, _ in samples["b"]],
        cpu_a=[c for _, c in samples["a"]],
        cpu_b=[c for _, c in samples["b"]],
        clock=clock,
    )


# ------------------------------------------------------------------------------------------------
# results


@dataclasses.dataclass
class Figure:
    """One reported figure: a ratio (or other number), its target and how it was produced."""

    name: str
    value: float
    target: str  # e.g. "<= 1.01"
    passed: bool | None
    command: str
    unit: str = "x"
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    note: str = ""

    def line(self) -> str:
        verdict = "n/a" if self.passed is None else ("PASS" if self.passed else "FAIL")
        return f"{self.name}: {self.value:.3f}{self.unit} (target {self.target}) {verdict}\n  command: {self.command}"


def check(value: float, op: str, bound: float) -> bool:
    return value <= bound if op == "<=" else value >= bound


def command_line(script: str | None = None, argv: list[str] | None = None) -> str:
    """The command that reproduces this run, as typed from the repository root."""
    script_path = Path(script or sys.argv[0]).resolve()
    try:
        shown = str(script_path.relative_to(REPO_ROOT))
    except ValueError:
        shown = str(script_path)
    args = sys.argv[1:] if argv is None else argv
    # --json is run_all's plumbing, not part of the measurement.
    cleaned: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--json":
            skip = True
            continue
        if arg.startswith("--json="):
            continue
        cleaned.append(arg)
    return " ".join([".venv/bin/python", shown, *map(shlex.quote, cleaned)])


def write_json(path: str | os.PathLike | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    def default(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return dataclasses.asdict(obj)
        return str(obj)
    Path(path).write_text(json.dumps(payload, indent=2, default=default), encoding="utf-8")


def machine_description() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal"):
                    mem_gib = round(int(line.split()[1]) / 2**20, 1)
                    break
    except OSError:
        pass
    import diffusers
    import transformers

    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": mem_gib,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "diffusers": diffusers.__version__,
        "os": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return info


DEFAULT_THREADS = 1


def setup_cpu_threads(threads: int | None = DEFAULT_THREADS) -> None:
    """Benchmarks use one torch thread by default.

    The development machines have 2 cores shared with other jobs: two torch threads then stall on
    each other whenever one is preempted (a forward took 5x longer and ratios scattered by 30%),
    while one thread measures the compute itself. `--threads 0` keeps torch's default.
    """
    if threads:
        torch.set_num_threads(threads)
