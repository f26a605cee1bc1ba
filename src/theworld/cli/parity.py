"""`theworld parity`: do two models that should agree give the same logits, and if not, where do
they part ways? Usage and the report are described in docs/parity.md.

Exit status: 0 when the logits agree within --atol (and, with --audit-buffers, no buffer has an
error), 1 when they do not, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.allow_abbrev = False
    parser.add_argument("--model", required=True, help="model A: checkpoint dir or hub id (TheWorld; 'gemma:' prefix = plain Gemma 3)")
    parser.add_argument("--reference", required=True, help="model B, as --model; 'gemma': plain Gemma 3 from A's base")
    inputs_help = "text (default), image, world (a clip; both models world-enabled), or a JSON file of chat messages"
    parser.add_argument("--inputs", default="text", help=inputs_help)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="dtype both models load in")
    parser.add_argument("--attn-implementation", default="eager", choices=("eager", "sdpa"), help="attention kernels (default eager)")
    parser.add_argument("--atol", type=float, default=0.0, help="largest |logit difference| that still passes (default 0)")
    parser.add_argument("--cosmos-model-name", default=None, help="world model (VAE) for TheWorld models that have none saved")
    parser.add_argument("--no-divergence", action="store_true", help="do not search for the first divergent module")
    parser.add_argument("--audit-buffers", action="store_true", help="audit both models' buffers against their initialisation")
    parser.add_argument("--output", type=Path, default=None, help="also write the Markdown report to this file")


def run(args: argparse.Namespace) -> int:
    import torch

    from theworld.parity.cli_support import DTYPES, build_inputs, load_model, parse_model_spec, run_parity

    if args.atol < 0 or args.atol != args.atol:
        raise TheWorldUserError(f"--atol must be a non-negative number, got {args.atol}")
    if args.output is not None and not args.output.parent.is_dir():
        raise TheWorldUserError(f"--output {args.output}: folder {args.output.parent} does not exist")
    spec_a = parse_model_spec(args.model)
    if args.reference.strip() != "gemma":  # a bad path fails before any model loads
        parse_model_spec(args.reference)
    dtype = DTYPES[args.dtype]
    load = dict(dtype=dtype, attn_implementation=args.attn_implementation, cosmos_model_name=args.cosmos_model_name)

    logger.info("Loading model A: %s", spec_a.label)
    model_a = load_model(spec_a, **load)
    spec_b = parse_model_spec(args.reference, model_a=(spec_a, model_a))
    logger.info("Loading model B: %s", spec_b.label)
    model_b = load_model(spec_b, **load)
    inputs, described = build_inputs(args.inputs, spec_a, model_a, model_b, dtype=dtype)

    torch.manual_seed(0)
    result = run_parity(
        model_a, model_b, inputs, atol=args.atol, divergence=not args.no_divergence, audit=args.audit_buffers,
        labels=("model A", "model B"),
    )  # fmt: skip
    settings = f"{described}; {args.dtype}, {args.attn_implementation} attention"
    report = result.render(labels=(spec_a.label, spec_b.label), inputs=settings)
    print(report, end="")
    if args.output is not None:
        args.output.write_text(report, encoding="utf-8")
        logger.info("Wrote %s", args.output)
    return 0 if result.passed else 1
