"""The demo's outputs: results.json, report.md, a PNG, and a short summary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from theworld.evaluation.compare import compare_pair, load_run

# (system, reference): the comparisons the demo's targets are about
COMPARISONS = (("theworld", "gemma_control"), ("theworld", "theworld_zero_world"))
TARGETS = {"gemma_control": 0.20, "theworld_zero_world": 0.10}


def paired_differences(eval_dir: Path, n_boot: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Paired bootstrap CI and McNemar p for theworld vs each control, on the same held-out items."""
    out: dict[str, dict[str, Any]] = {}
    for system, reference in COMPARISONS:
        pair = compare_pair(load_run(eval_dir / system), load_run(eval_dir / reference), n_boot=n_boot, seed=seed)
        if pair is None:
            continue
        out[f"{system}_vs_{reference}"] = {
            "n": pair.n, "diff": pair.diff, "ci95": [pair.lo, pair.hi], "p_mcnemar": pair.p_mcnemar,
            "target": TARGETS[reference], "met": pair.diff >= TARGETS[reference],
        }  # fmt: skip
    return out


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(system, accuracy, 95% CI, n) rows in percent."""
    rows = []
    for name, m in results["systems"].items():
        lo, hi = m["ci95"]
        rows.append((name, f"{100 * m['accuracy']:.1f}", f"[{100 * lo:.1f}, {100 * hi:.1f}]", str(m["n"])))
    return rows


def render_markdown(results: dict[str, Any], image_name: str) -> str:
    cfg = results["config"]
    lines = [
        "# TheWorld demo: what happens next?",
        "",
        f"Held-out clips: {cfg['n_heldout']} ({', '.join(cfg['tasks'])}), {cfg['num_frames']} frames each. "
        "Gemma's image path sees the last frame only; the world path sees the clip. Answers are balanced: "
        "chance is 50%.",
        "",
        "| system | accuracy (%) | 95% CI | n |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(results)]
    lines += ["", "| comparison | difference (points) | paired 95% CI | McNemar p | target | met |", "|---|---|---|---|---|---|"]
    for name, p in results["paired"].items():
        pvalue = "n/a" if p["p_mcnemar"] is None else f"{p['p_mcnemar']:.2g}"
        lines.append(
            f"| {name} | {100 * p['diff']:+.1f} | [{100 * p['ci95'][0]:+.1f}, {100 * p['ci95'][1]:+.1f}] | {pvalue} "
            f"| >= +{100 * p['target']:.0f} | {'yes' if p['met'] else 'no'} |"
        )
    lines += [
        "",
        f"![loss curves and accuracies]({image_name})",
        "",
        "## Systems",
        "- `gemma_control`: TheWorld with the world off (= Gemma 3), stage `finetune` for all "
        f"{cfg['total_steps']} steps.",
        f"- `theworld`: world on, stage `align` for {round(cfg['total_steps'] * cfg['align_fraction'])} steps, then "
        "`finetune` for the rest; same data, batch size and learning rate.",
        "- `theworld_zero_world`: the trained `theworld` evaluated with its world tokens zeroed.",
        "",
        "## Per task",
        "",
        "| system | " + " | ".join(sorted(next(iter(results["systems"].values()))["per_category"])) + " |",
        "|---|" + "---|" * len(next(iter(results["systems"].values()))["per_category"]),
    ]
    for name, m in results["systems"].items():
        cells = [f"{100 * v['accuracy']:.1f}" for _, v in sorted(m["per_category"].items())]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Run", "", f"Wall time {results['wall_time_s']} s: "
              + ", ".join(f"{k} {v} s" for k, v in results["timings_s"].items()) + ".", "",
              "```json", json.dumps(cfg, indent=2), "```", ""]  # fmt: skip
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Training loss per step (both systems) and held-out accuracy with 95% intervals."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(figure)
    loss_ax, acc_ax = figure.subplots(1, 2)
    for system, stages in results["training"].items():
        for stage in stages:
            loss_ax.plot(stage["steps"], stage["loss"], label=f"{system} ({stage['stage']})")
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_ylabel("training loss (answer tokens)")
    loss_ax.set_yscale("log")
    loss_ax.legend(fontsize=8)
    loss_ax.set_title("training loss")
    names = list(results["systems"])
    accs = [100 * results["systems"][n]["accuracy"] for n in names]
    errs = [[a - 100 * results["systems"][n]["ci95"][0] for a, n in zip(accs, names)],
            [100 * results["systems"][n]["ci95"][1] - a for a, n in zip(accs, names)]]  # fmt: skip
    acc_ax.bar(range(len(names)), accs, yerr=errs, capsize=6, color=["#888888", "#2a7ab9", "#9ecae1"][: len(names)])
    acc_ax.axhline(50, color="black", linestyle="--", linewidth=1, label="chance")
    acc_ax.set_xticks(range(len(names)), names, fontsize=8)
    acc_ax.set_ylim(0, 100)
    acc_ax.set_ylabel("held-out accuracy (%)")
    acc_ax.set_title("held-out accuracy, 95% bootstrap CI")
    acc_ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_report(results: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "demo.png")
    (out / "report.md").write_text(render_markdown(results, "demo.png"))
