"""Everything BENCHMARKS.md's GPU section needs, in one run with a time budget (a lent GPU's minutes are scarce).

At gemma-3-4b's architecture with random weights (speed and memory do not depend on the values),
bf16, on one CUDA GPU, in this order, each part skipped once the budget is spent:

1. evaluation (`choice_scoring.run`): BLINK-sized two-choice items (~565 tokens: 256 image +
   256 world tokens), each prompt prefilled once and its choices scored from the KV cache, beside
   the old full forward per choice: items/s, prompt tokens/s, MFU, peak memory; sdpa, then eager;
2. training (`gpu_stage1.run`): `align` steps at batch 8, 512x512, 256 world tokens, VAE in the
   loop: tokens/s, MFU, peak memory; without and with gradient checkpointing (sdpa), then eager.

An out-of-memory part is recorded as such and the next one runs. The result goes to `--json`
and, as the markdown section for BENCHMARKS.md, to `--markdown`.

    python benchmarks/gpu_benchmark.py --budget-s 420 --json gpu.json --markdown gpu.md   # a CUDA GPU
    python benchmarks/gpu_benchmark.py --dry-run            # tiny models on the CPU (the test's path)
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import command_line, machine_description, write_json  # noqa: E402

# (part, kind, settings); kind "eval" runs choice_scoring.run, "train" gpu_stage1.run.
PARTS: list[tuple[str, str, dict[str, Any]]] = [
    ("eval sdpa", "eval", {"attn_implementation": "sdpa"}),
    ("train sdpa", "train", {"attn_implementation": "sdpa", "gradient_checkpointing": False}),
    ("train sdpa, gradient checkpointing", "train", {"attn_implementation": "sdpa", "gradient_checkpointing": True}),
    ("eval eager", "eval", {"attn_implementation": "eager"}),
    ("train eager", "train", {"attn_implementation": "eager", "gradient_checkpointing": False}),
]


def run_part(kind: str, settings: dict[str, Any], dry_run: bool, peak_tflops: float | None, items: int) -> dict[str, Any]:
    import choice_scoring
    import gpu_stage1

    if kind == "eval":
        if dry_run:
            return choice_scoring.run(size="tiny", n_items=3, batch_size=4, pairs=1, old_pairs=1, warmup=0,
                                      attn_implementation=settings["attn_implementation"])  # fmt: skip
        return choice_scoring.run(size="gemma-3-4b", n_items=items, batch_size=2 * items, pairs=4, old_pairs=2,
                                  warmup=1, device="cuda", dtype="bfloat16", peak_tflops=peak_tflops,
                                  attn_implementation=settings["attn_implementation"])  # fmt: skip
    if dry_run:
        return gpu_stage1.run(dry_run=True, batch=1, image_size=64, tokens_per_frame=16, steps=1, warmup=1,
                              count_step_flops=False, **settings)  # fmt: skip
    return gpu_stage1.run(steps=6, warmup=2, peak_tflops=peak_tflops, count_step_flops=False, **settings)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.1f} GiB"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def markdown(results: list[dict[str, Any]], machine: dict[str, Any], command: str, budget_s: float, spent_s: float) -> str:
    """BENCHMARKS.md's GPU section from the parts' results."""
    lines = [
        "## GPU: evaluation and `align` training at gemma-3-4b's size",
        "",
        f"Measured by `{command}` ({spent_s:.0f} s of a {budget_s:.0f} s budget) on {machine.get('gpu') or 'no GPU'}; "
        f"torch {machine.get('torch')}, transformers {machine.get('transformers')}. Random weights, bf16.",
        "",
        "| part | tokens/s | items or images/s | MFU | peak allocated | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        name, status = r["part"], r["status"]
        if status != "ok":
            lines.append(f"| {name} | - | - | - | - | {status} |")
            continue
        res = r["result"]
        if r["kind"] == "eval":
            lines.append(
                f"| {name} | {res['prompt_tokens_per_s']:,.0f} (prompt) | {res['items_per_s_prefilled']:.2f} items/s "
                f"(old path {res['items_per_s_full_forwards']:.2f}) | {_pct(res['mfu'])} | {_gib(res['peak_allocated_bytes'])} "
                f"| {res['n_items']} two-choice items of ~{res['prompt_tokens_mean']:.0f} tokens; scoring / prompt "
                f"forwards {res['ratio_prefilled']:.3f} (old path {res['ratio_full_forwards']:.3f}); scores agree to "
                f"{res['max_score_difference']:.1e} |"
            )  # fmt: skip
        else:
            lines.append(
                f"| {name} | {res['tokens_per_s']:,.0f} | {res['images_per_s']:.2f} images/s | {_pct(res['mfu'])} "
                f"| {_gib(res['peak_allocated_bytes'])} | batch {res['batch']} x {res['seq_len']} tokens, step "
                f"{res['step_s_median']:.3f} s (median of {len(res['step_s'])}), VAE encode of the batch "
                f"{res['vae_encode_s_median']:.3f} s; MFU of LM + projector FLOPs {_pct(res['mfu_lm_and_projector'])} |"
            )  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting parts after this many seconds")
    parser.add_argument("--items", type=int, default=16, help="evaluation items per timed batch (default 16)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not known")
    parser.add_argument("--only", nargs="*", default=None, help=f"parts to run (default all): {[p for p, _, _ in PARTS]}")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU: checks the script")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_benchmark.py needs a CUDA GPU (torch.cuda.is_available() is False); --dry-run checks it on the CPU")

    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for part, kind, settings in PARTS:
        if args.only is not None and part not in args.only:
            continue
        record: dict[str, Any] = {"part": part, "kind": kind, "settings": settings}
        elapsed = time.perf_counter() - started
        if elapsed > args.budget_s:
            record["status"] = f"skipped: time budget spent ({elapsed:.0f} s of {args.budget_s:.0f} s)"
        else:
            t0 = time.perf_counter()
            try:
                record["result"] = run_part(kind, settings, args.dry_run, args.peak_tflops, args.items)
                record["status"] = "ok"
            except torch.cuda.OutOfMemoryError as error:
                record["status"] = f"out of GPU memory ({str(error).splitlines()[0][:120]})"
            record["seconds"] = time.perf_counter() - t0
            free_memory()
        print(f"{part}: {record['status']}" + (f" in {record['seconds']:.0f} s" if "seconds" in record else ""), flush=True)
        results.append(record)
        write_json(args.json, {"parts": results, "machine": machine_description()})  # what is done survives a kill

    machine = machine_description()
    text = markdown(results, machine, command_line(argv=argv), args.budget_s, time.perf_counter() - started)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    write_json(args.json, {"parts": results, "machine": machine})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
