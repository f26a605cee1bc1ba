"""`theworld eval --model M --benchmark B --data D --control C --output-dir OUT`: score a model on a
spatial benchmark under one control; a rerun resumes. The items are loaded (and checked) before the
model, so a bad data path fails in seconds. Output files and multi-process runs: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from theworld.errors import TheWorldUserError
from theworld.evaluation.controls import CONTROLS
from theworld.world_model.guardrail import SAFETY_CHECKER_CHOICES

logger = logging.getLogger(__name__)

JUDGE_KEY_ENV = "THEWORLD_JUDGE_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from theworld.evaluation.benchmarks import BENCHMARKS
    from theworld.evaluation.loading import DTYPES

    parser.add_argument("--model", required=True, help="Gemma 3 checkpoint, TheWorld folder or adapter folder (path or Hub id)")
    parser.add_argument("--benchmark", required=True, help=f"one of: {', '.join(sorted(BENCHMARKS))}")
    parser.add_argument("--data", required=True, help="data file, local snapshot folder, or Hub dataset id")
    parser.add_argument("--image-folder", help="folder that relative image paths are resolved against")
    parser.add_argument("--split", help="split to read (benchmark default when omitted)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N items")
    parser.add_argument("--control", default="none", help=f"one of: {', '.join(CONTROLS)} (default none)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per forward: one per choice, or per prompt (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="greedy tokens for free-form answers (default 64)")
    parser.add_argument("--padding-side", default="left", choices=("left", "right"), help="batch padding (default left)")
    parser.add_argument("--seed", type=int, default=0, help="shuffled-world donors and bootstrap seed (default 0)")
    parser.add_argument("--cosmos-model-name", help="Cosmos-Predict2 repo or VAE folder, if the model does not name one")
    parser.add_argument("--judge-url", help="OpenAI-compatible API root for judging free-form answers (e.g. http://host:8000/v1)")
    parser.add_argument("--judge-model", help="model name the judge server serves")
    parser.add_argument("--dtype", default="auto", help=f"one of: {', '.join(DTYPES)} (auto: bfloat16 on GPU, float32 on CPU)")
    parser.add_argument("--device", default="auto", help="cuda, cuda:1, cpu, ... (default: cuda if available)")
    parser.add_argument("--output-dir", required=True, type=Path, help="run folder (created; an existing run resumes)")
    parser.add_argument(
        "--world-safety-checker", default="cosmos_guardrail", choices=SAFETY_CHECKER_CHOICES,
        help="a rollout model's Cosmos guardrail (tiny-test-double: theworld.testing's tiny world models only)",
    )  # fmt: skip


def _validate(args: argparse.Namespace) -> None:
    from theworld.evaluation.benchmarks import BENCHMARKS
    from theworld.evaluation.controls import check_control
    from theworld.evaluation.loading import DTYPES

    if args.benchmark not in BENCHMARKS:
        raise TheWorldUserError(f"--benchmark: unknown benchmark {args.benchmark!r}; known: {', '.join(sorted(BENCHMARKS))}")
    check_control(args.control)
    if args.dtype not in DTYPES:
        raise TheWorldUserError(f"--dtype: unknown dtype {args.dtype!r}; known: {', '.join(DTYPES)}")
    for flag, value, minimum in (("--batch-size", args.batch_size, 1), ("--max-new-tokens", args.max_new_tokens, 1)):
        if value < minimum:
            raise TheWorldUserError(f"{flag}: must be >= {minimum}, got {value}")
    if args.limit is not None and args.limit < 1:
        raise TheWorldUserError(f"--limit: must be >= 1, got {args.limit}")
    if bool(args.judge_url) != bool(args.judge_model):
        raise TheWorldUserError("--judge-url and --judge-model go together")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise TheWorldUserError(f"--output-dir: {args.output_dir} exists and is not a folder")


def run(args: argparse.Namespace) -> int:
    _validate(args)
    from theworld.evaluation.benchmarks import load_benchmark
    from theworld.evaluation.harness import EvalSettings, evaluate
    from theworld.evaluation.judge import OpenAIJudge
    from theworld.evaluation.loading import load_model
    from theworld.processes import Processes
    from theworld.world_model.guardrail import safety_checker_by_name

    items = load_benchmark(args.benchmark, args.data, image_folder=args.image_folder, split=args.split, limit=args.limit)
    if not items:
        raise TheWorldUserError(f"--data: {args.data} holds no items for benchmark {args.benchmark!r}")
    settings = EvalSettings(
        control=args.control, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, padding_side=args.padding_side,
        seed=args.seed,
    )  # fmt: skip
    processes = Processes.from_environment()
    device = args.device
    if processes.device is not None and device in (None, "", "auto"):
        device = str(processes.device)  # each process on the device its launcher gave it

    model, processor = load_model(
        args.model, args.control, cosmos_model_name=args.cosmos_model_name, dtype=args.dtype, device=device,
        safety_checker=safety_checker_by_name(args.world_safety_checker),
    )  # fmt: skip
    judge = OpenAIJudge(args.judge_url, args.judge_model, api_key=os.environ.get(JUDGE_KEY_ENV)) if args.judge_url else None
    info = {key: getattr(args, key) for key in ("model", "benchmark", "data", "split", "image_folder", "cosmos_model_name")}
    info.update(dtype=str(model.dtype).removeprefix("torch."), judge_model=args.judge_model)
    metrics = evaluate(items, model, processor, args.output_dir, settings, judge=judge, info=info, processes=processes)
    if not processes.is_main:
        return 0
    accuracy = "n/a" if metrics["accuracy"] is None else f"{100 * metrics['accuracy']:.1f}%"
    ci = metrics["ci95"]
    ci_text = "" if ci is None else f" (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f})"
    print(
        f"{args.benchmark} [{args.control}]: accuracy {accuracy}{ci_text} over n={metrics['n']}, "
        f"{metrics['unjudged']} unjudged, {metrics['world_tokens_seen']} world tokens"
        f"{'' if processes.count == 1 else f', {processes.count} processes'} -> {args.output_dir}"
    )
    return 0
