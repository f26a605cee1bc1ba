"""`theworld compare OUT_A OUT_B ... --output report.md`: paired comparison of evaluation runs.

Writes a markdown table (accuracy, 95% CI, n per run; difference, paired-bootstrap CI and
McNemar p per pair, on the items both runs answered) and an accuracy plot next to it (.png).
"""

from __future__ import annotations

import argparse

from theworld.evaluation.compare import compare_runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="OUT", help="run folders with predictions.jsonl and metrics.json")
    parser.add_argument("--output", required=True, help="markdown report to write (the plot goes next to it)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def run(args: argparse.Namespace) -> int:
    compare_runs(args.runs, args.output, n_boot=args.n_boot, seed=args.seed)
    return 0
