"""`theworld demo`: the end-to-end demo (what `make demo` runs)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from theworld.errors import TheWorldUserError


# DemoConfig field -> the flag that sets it, so an error names what the user typed.
_FLAGS = {
    "output_dir": "--output-dir", "seed": "--seed", "model_name_or_path": "--model",
    "cosmos_model_name": "--cosmos-model-name", "world_image_size": "--world-image-size",
    "image_size": "--world-image-size", "world_tokens_per_frame": "--world-tokens-per-frame",
    "n_train": "--n-train", "n_heldout": "--n-heldout", "total_steps": "--total-steps",
    "align_fraction": "--align-fraction", "batch_size": "--batch-size", "learning_rate": "--learning-rate",
    "tasks": "--tasks", "threads": "--threads",
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="runs/demo", help="where everything is written (must be empty)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="a Gemma 3 id or folder (default: a tiny offline model)")
    parser.add_argument("--cosmos-model-name", default=None, help="a Cosmos-Predict2 id or VAE folder (with --model)")
    parser.add_argument("--world-image-size", type=int, default=None, help="default: 64 (tiny) or 512 (real models)")
    parser.add_argument("--world-tokens-per-frame", type=int, default=None, help="default: 16 (tiny) or 256 (real)")
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-heldout", type=int, default=256)
    parser.add_argument("--total-steps", type=int, default=1200, help="optimizer steps per system (same for both)")
    parser.add_argument("--align-fraction", type=float, default=0.25, help="share of the steps spent in stage align")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: 1e-3 (tiny) or 2e-5 (real)")
    parser.add_argument("--tasks", default="direction,approach", help="comma-separated synthetic task families")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 for tiny models)")
    parser.add_argument(
        "--forecast", action="store_true",
        help="run the forecast task alone (world rollouts: theworld, theworld_rollout, theworld_oracle_future; "
        "tiny models only; see docs/rollout.md)",
    )  # fmt: skip
    parser.add_argument("--skip-forecast", action="store_true",
                        help="run the direction/approach task alone (what --model does: the forecast task runs on tiny models only)")  # fmt: skip
    parser.add_argument("--forecast-config", default=None,
                        help="a JSON file of forecast-task settings (ForecastDemoConfig fields) over its defaults")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2,
                        help="processes running the two tasks side by side, one torch thread each (1: one after the other)")  # fmt: skip


def _config(args: argparse.Namespace):
    from theworld.demo.pipeline import DemoConfig

    real = args.model is not None

    def given(value, default):
        return value if value is not None else default

    return DemoConfig(
        output_dir=args.output_dir,
        seed=args.seed,
        model_name_or_path=args.model,
        cosmos_model_name=args.cosmos_model_name,
        world_image_size=given(args.world_image_size, 512 if real else 64),
        world_tokens_per_frame=given(args.world_tokens_per_frame, 256 if real else 16),
        image_size=given(args.world_image_size, 512 if real else 64),
        n_train=args.n_train,
        n_heldout=args.n_heldout,
        total_steps=args.total_steps,
        align_fraction=args.align_fraction,
        batch_size=args.batch_size,
        learning_rate=given(args.learning_rate, 2e-5 if real else 1e-3),
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
        bf16=args.bf16,
        threads=given(args.threads, None if real else 1),
    )


def _forecast_config(args: argparse.Namespace):
    from theworld.demo.both import load_forecast_config

    if args.model is not None:
        raise TheWorldUserError("--forecast runs on the tiny offline models only (its world model is trained here); "
                                "with --model pass --skip-forecast")  # fmt: skip
    return load_forecast_config(args.forecast_config, seed=args.seed, threads=args.threads or 1)


def print_forecast(results: dict, output_dir: str) -> None:
    table = Table(title=f"forecast task, held-out accuracy ({output_dir}, {results['wall_time_s']} s)")
    for column in ("system", "accuracy %", "95% CI", "n"):
        table.add_column(column)
    for name, m in results["systems"].items():
        table.add_row(name, f"{100 * m['accuracy']:.1f}", f"[{100 * m['ci95'][0]:.1f}, {100 * m['ci95'][1]:.1f}]", str(m["n"]))
    console = Console()
    console.print(table)
    for name, pair in results["paired"].items():
        console.print(f"{name}: {100 * pair['diff']:+.1f} points (paired 95% CI [{100 * pair['ci95'][0]:+.1f}, "
                      f"{100 * pair['ci95'][1]:+.1f}], McNemar p {pair['p_mcnemar']:.3g})")  # fmt: skip
    console.print(f"report: {output_dir}/report.md")


def print_motion(results: dict, output_dir: str) -> None:
    from theworld.demo.report import summary_rows

    table = Table(title=f"held-out accuracy ({output_dir}, {results['wall_time_s']} s)")
    for column in ("system", "accuracy %", "95% CI", "n"):
        table.add_column(column)
    for row in summary_rows(results):
        table.add_row(*row)
    console = Console()
    console.print(table)
    for name, pair in results["paired"].items():
        console.print(f"{name}: {100 * pair['diff']:+.1f} points "
                      f"(paired 95% CI [{100 * pair['ci95'][0]:+.1f}, {100 * pair['ci95'][1]:+.1f}]), "
                      f"target >= +{100 * pair['target']:.0f}: {'met' if pair['met'] else 'NOT met'}")  # fmt: skip
    console.print(f"report: {output_dir}/report.md")


def run(args: argparse.Namespace) -> int:
    from theworld.demo.both import FORECAST_TASK, MOTION_TASK, run_both_tasks
    from theworld.demo.forecast import run_forecast_demo
    from theworld.demo.pipeline import DemoConfigError, run_demo

    if args.forecast and args.skip_forecast:
        raise TheWorldUserError("--forecast runs the forecast task alone and --skip-forecast the other one: give one")
    if args.workers < 1:
        raise TheWorldUserError(f"--workers: must be positive, got {args.workers}")
    if args.forecast:
        forecast = _forecast_config(args)
        forecast.output_dir = args.output_dir
        print_forecast(run_forecast_demo(forecast), args.output_dir)
        return 0
    try:  # the configs check every value, and the runs the output folder, before anything is written
        config = _config(args)
    except DemoConfigError as err:
        raise err.for_flags(_FLAGS) from None
    if args.skip_forecast or args.model is not None:  # the forecast task trains its own tiny world model
        print_motion(run_demo(config), args.output_dir)
        return 0
    results = run_both_tasks(config, _forecast_config(args), workers=args.workers)
    print_motion(results[MOTION_TASK], args.output_dir)
    print_forecast(results[FORECAST_TASK], f"{args.output_dir}/forecast")
    timing = results["timings"]
    Console().print(f"both tasks: {timing['wall_time_s']} s wall with {timing['workers']} worker processes ("
                    + ", ".join(f"{name} {t['wall_s']} s wall, {t['cpu_s']} s CPU" for name, t in timing["tasks"].items())
                    + ")")  # fmt: skip
    return 0
