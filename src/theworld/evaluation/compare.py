"""Compare evaluation runs (`theworld eval` folders): accuracies with intervals, and paired tests.

A few points on ~130 items are noise, so every difference comes with a paired-bootstrap interval and
McNemar's p on the common items; a run whose metrics.json disagrees with its predictions is rejected.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from theworld.errors import TheWorldUserError
from theworld.evaluation.stats import bootstrap_ci, mcnemar, paired_bootstrap

logger = logging.getLogger(__name__)

_TOLERANCE = 1e-6


@dataclass
class Run:
    """One evaluation run: its headline numbers and per-item scores (id -> 0..1)."""

    name: str
    path: Path
    model: str
    control: str
    accuracy: float
    n: int
    ci95: tuple[float, float]
    scores: dict[str, float]


@dataclass
class Pair:
    """Two runs compared on their common items."""

    a: str
    b: str
    n: int
    acc_a: float
    acc_b: float
    diff: float
    lo: float
    hi: float
    p_mcnemar: float | None  # None when scores are not right/wrong


def _read_predictions(path: Path) -> dict[str, float]:
    """id -> score in [0, 1] ('correct' true/false, or a number) of every line of predictions.jsonl."""
    if not path.is_file():
        raise TheWorldUserError(f"{path}: missing (expected one JSON line per evaluated item)")
    scores: dict[str, float] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path}:{lineno}"
        record = _json(line, where) if line.strip() else None
        if record is None:
            continue
        if not isinstance(record, dict) or "id" not in record or "correct" not in record:
            raise TheWorldUserError(f"{where}: each line needs 'id' and 'correct'")
        value, item_id = record["correct"], str(record["id"])
        if not isinstance(value, (bool, int, float)) or not 0.0 <= value <= 1.0:
            raise TheWorldUserError(f"{where}: 'correct' must be true/false or a number in [0, 1], got {value!r}")
        if item_id in scores:
            raise TheWorldUserError(f"{where}: duplicate id {item_id!r}")
        scores[item_id] = float(value)
    if not scores:
        raise TheWorldUserError(f"{path}: no predictions")
    return scores


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TheWorldUserError(f"{where}: not valid JSON ({err})") from err


def load_run(path: str | Path, n_boot: int = 2000, seed: int = 0) -> Run:
    """Read and cross-check one run folder; a missing ci95 is recomputed by bootstrap."""
    folder = Path(path)
    if not folder.is_dir():
        raise TheWorldUserError(f"{folder}: not a run folder")
    scores = _read_predictions(folder / "predictions.jsonl")
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        raise TheWorldUserError(f"{metrics_file}: missing (expected accuracy, n, ci95, control, model)")
    metrics = _json(metrics_file.read_text(encoding="utf-8"), str(metrics_file))
    if not isinstance(metrics, dict):
        raise TheWorldUserError(f"{metrics_file}: expected a JSON object")
    mean = sum(scores.values()) / len(scores)
    accuracy = float(metrics.get("accuracy", mean))
    n = int(metrics.get("n", len(scores)))
    if n != len(scores) or not math.isclose(accuracy, mean, rel_tol=0.0, abs_tol=_TOLERANCE):
        raise TheWorldUserError(
            f"{folder}: metrics.json says accuracy {accuracy:.4f} over n={n}, but predictions.jsonl "
            f"gives {mean:.4f} over {len(scores)} items (stale or truncated run?)"
        )
    ci = metrics.get("ci95")
    valid = isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)
    ci95 = (float(ci[0]), float(ci[1])) if valid else bootstrap_ci(list(scores.values()), n_boot=n_boot, seed=seed)
    model, control = str(metrics.get("model") or "?"), str(metrics.get("control") or "none")
    return Run(folder.name, folder, model, control, accuracy, n, ci95, scores)


def compare_pair(a: Run, b: Run, n_boot: int = 2000, seed: int = 0) -> Pair | None:
    """Paired statistics of a vs b on their common items; None when they share no item."""
    common = sorted(a.scores.keys() & b.scores.keys())
    if not common:
        return None
    xa = [a.scores[i] for i in common]
    xb = [b.scores[i] for i in common]
    diff = paired_bootstrap(xa, xb, n_boot=n_boot, seed=seed)
    p_mcnemar = mcnemar(xa, xb) if all(v in (0.0, 1.0) for v in xa + xb) else None
    return Pair(a.name, b.name, len(common), sum(xa) / len(xa), sum(xb) / len(xb), *diff, p_mcnemar)


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}"


def render_markdown(runs: Sequence[Run], pairs: Sequence[tuple[Run, Run, Pair | None]], image_name: str) -> str:
    """The report: one row per run, then one row per pair of runs (percentage points)."""
    header = ["| system | model | control | accuracy (%) | 95% CI | n |", "|---|---|---|---|---|---|"]
    lines = ["# Evaluation comparison", "", *header]
    for run in runs:
        ci = f"[{_pct(run.ci95[0])}, {_pct(run.ci95[1])}]"
        lines.append(f"| {run.name} | {run.model} | {run.control} | {_pct(run.accuracy)} | {ci} | {run.n} |")
    if pairs:
        lines += [
            "",
            "## Paired comparisons (items common to both runs)",
            "",
            "| A | B | n common | A (%) | B (%) | A - B (pts) | 95% CI (paired bootstrap) | McNemar p |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for a, b, pair in pairs:
            if pair is None:
                lines.append(f"| {a.name} | {b.name} | 0 | - | - | - | - | - |")
                continue
            p = "n/a" if pair.p_mcnemar is None else f"{pair.p_mcnemar:.3g}"
            ci = f"[{100 * pair.lo:+.1f}, {100 * pair.hi:+.1f}]"
            lines.append(
                f"| {a.name} | {b.name} | {pair.n} | {_pct(pair.acc_a)} | {_pct(pair.acc_b)} "
                f"| {100 * pair.diff:+.1f} | {ci} | {p} |"
            )
    lines += ["", f"![accuracy with 95% CI]({image_name})", ""]
    return "\n".join(lines)


def plot_accuracies(runs: Sequence[Run], path: Path) -> None:
    """Bar chart of accuracies with 95% CI error bars (Agg canvas: no display, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.0, 1.2 * len(runs) + 2.0), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(runs)))
    below = [max(0.0, 100.0 * (r.accuracy - r.ci95[0])) for r in runs]
    above = [max(0.0, 100.0 * (r.ci95[1] - r.accuracy)) for r in runs]
    ax.bar(xs, [100.0 * r.accuracy for r in runs], yerr=[below, above], capsize=6, color="#4c72b0")
    ax.set_xticks(xs, [r.name for r in runs], rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy with 95% CI")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def compare_runs(out_dirs: Sequence[str | Path], output: str | Path, n_boot: int = 2000, seed: int = 0) -> Path:
    """Write the markdown report to `output` and the accuracy plot next to it (same stem, .png)."""
    if not out_dirs:
        raise TheWorldUserError("compare needs at least one run folder")
    if n_boot < 1:
        raise TheWorldUserError(f"n_boot must be >= 1, got {n_boot}")
    runs = [load_run(d, n_boot=n_boot, seed=seed) for d in out_dirs]
    names = [r.name for r in runs]
    for run in runs:  # folders with the same basename (a/out, b/out) are told apart by their full path
        if names.count(run.name) > 1:
            run.name = str(run.path)
    pairs = []
    for a, b in combinations(runs, 2):
        pair = compare_pair(a, b, n_boot=n_boot, seed=seed)
        if pair is None:
            logger.warning("%s and %s share no item ids; no paired comparison", a.name, b.name)
        elif pair.n < min(a.n, b.n):
            logger.warning("%s vs %s: only %d items in common", a.name, b.name, pair.n)
        pairs.append((a, b, pair))
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    image = out.with_suffix(".png")
    plot_accuracies(runs, image)
    out.write_text(render_markdown(runs, pairs, image.name), encoding="utf-8")
    logger.info("wrote %s and %s", out, image)
    return out
