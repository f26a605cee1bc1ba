"""Peak memory of a training step's loss: `supervised_lm_loss` vs Gemma 3's own full-sequence loss.

A small random Gemma 3 language model (hidden 256, 2 layers) with Gemma's real 262,208-token
vocabulary runs one training step on 1,000 tokens of which 50 are supervised (an answer after a
long prompt), two ways:

- gemma:      `model(input_ids, labels=labels).loss.backward()` - logits for all 1,000 positions,
              upcast to fp32, shifted, cross-entropy, and their gradient;
- supervised: `supervised_lm_loss(model, inputs, labels)[0].backward()` - hidden states of the 50
              supervised positions are selected before the LM head, so only those get logits.

The decoder layers train; the embedding (tied to the LM head) is frozen, as in TheWorld's stages
(`--train-embeddings` trains it too: its gradient then weighs the same in both). Both losses are
checked to agree.

How memory is measured (each variant in its own fresh subprocess, after one warm-up step):

1. torch allocator peak (the figure): the step runs under `torch.profiler` with
   `profile_memory=True`, which records every CPU tensor allocation and free with its size; the
   peak of the running sum is the most memory torch tensors held at once during the step, above
   what was held before it (the weights). Exact and deterministic, but sees torch tensors only.
2. process peak RSS (cross-check): the kernel's high-water mark of resident memory is reset
   (`echo 5 > /proc/self/clear_refs`), the step runs without the profiler, and the increase of
   `VmHWM` over the resident size before the step is read. This is what the operating system saw,
   allocator slack included; it needs Linux.
3. On a GPU (`--device cuda`): `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`.

    .venv/bin/python benchmarks/loss_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import (  # noqa: E402
    BOS_ID,
    DEFAULT_THREADS,
    Figure,
    LMSize,
    check,
    command_line,
    count_parameters,
    gemma_config,
    machine_description,
    random_text_ids,
    setup_cpu_threads,
    write_json,
)

TARGET = 4.0
IGNORE = -100
VARIANTS = ("gemma", "supervised")
GEMMA3_VOCAB = 262_208


def build(size: LMSize, seq_len: int, supervised: int, dtype: torch.dtype, device: str,
          train_embeddings: bool, seed: int = 0):
    from theworld import TheWorld

    from common import world_config

    config = world_config(gemma_config(size), enable_world=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = TheWorld(config).to(device=device, dtype=dtype)
    model.requires_grad_(False)
    model.model.language_model.layers.requires_grad_(True)
    model.model.language_model.norm.requires_grad_(True)
    if train_embeddings:
        model.get_input_embeddings().requires_grad_(True)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    ids = random_text_ids(generator, seq_len, size.vocab_size)[None]
    ids[:, 0] = BOS_ID
    labels = torch.full_like(ids, IGNORE)
    labels[:, -supervised:] = ids[:, -supervised:]
    return model, ids.to(device), labels.to(device)


def step_fn(variant: str, model, ids: torch.Tensor, labels: torch.Tensor):
    from theworld.training.loss import supervised_lm_loss

    def gemma_step() -> float:
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        return float(loss.detach())

    def supervised_step() -> float:
        model.zero_grad(set_to_none=True)
        loss, _ = supervised_lm_loss(model, {"input_ids": ids}, labels)
        loss.backward()
        return float(loss.detach())

    return {"gemma": gemma_step, "supervised": supervised_step}[variant]


def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def profiler_peak_bytes(fn) -> tuple[int, Any]:
    """Peak of the running sum of CPU tensor allocations during `fn` (profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    cpu = torch._C._autograd.DeviceType.CPU
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() == cpu]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for event in events:
        running += event.nbytes()
        peak = max(peak, running)
    return peak, result


def rss_peak_bytes(fn) -> tuple[int | None, Any]:
    """Increase of the process's resident high-water mark over its resident size before `fn`."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
            handle.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        return None, fn()
    before = _proc_status("VmRSS")
    result = fn()
    after = _proc_status("VmHWM")
    if before is None or after is None:
        return None, result
    return after - before, result


def cuda_peak_bytes(fn) -> tuple[int, Any]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before, result


def worker(variant: str, size: LMSize, seq_len: int, supervised: int, dtype: torch.dtype, device: str,
           train_embeddings: bool) -> dict[str, Any]:
    """One variant, measured in this (fresh) process."""
    model, ids, labels = build(size, seq_len, supervised, dtype, device, train_embeddings)
    fn = step_fn(variant, model, ids, labels)
    fn()  # warm-up: one-time kernel and allocator set-up is not the loss's memory
    model.zero_grad(set_to_none=True)
    out: dict[str, Any] = {
        "variant": variant,
        "trainable_parameters": count_parameters(model, trainable_only=True),
        "parameters": count_parameters(model),
    }
    if device.startswith("cuda"):
        out["cuda_peak_bytes"], out["loss"] = cuda_peak_bytes(fn)
    else:
        out["rss_peak_bytes"], _ = rss_peak_bytes(fn)
        model.zero_grad(set_to_none=True)
        out["allocator_peak_bytes"], out["loss"] = profiler_peak_bytes(fn)
    return out


def run(
    size: LMSize | None = None,
    seq_len: int = 1000,
    supervised: int = 50,
    dtype: str = "bfloat16",
    device: str = "cpu",
    train_embeddings: bool = False,
    threads: int | None = DEFAULT_THREADS,
    subprocesses: bool = True,
) -> dict[str, Any]:
    """Measure both variants (each in a fresh subprocess unless `subprocesses=False`)."""
    size = size or LMSize(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=64, intermediate_size=1024, vocab_size=GEMMA3_VOCAB, sliding_window=512)
    results: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        if subprocesses:
            spec = json.dumps({"variant": variant, "size": vars(size), "seq_len": seq_len, "supervised": supervised,
                               "dtype": dtype, "device": device, "train_embeddings": train_embeddings,
                               "threads": threads})
            env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
            proc = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"loss_memory worker {variant} failed:\n{proc.stderr[-4000:]}")
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
            results[variant] = json.loads(line)
        else:
            results[variant] = worker(variant, size, seq_len, supervised, getattr(torch, dtype), device,
                                      train_embeddings)
    key = "cuda_peak_bytes" if device.startswith("cuda") else "allocator_peak_bytes"
    gemma, ours = results["gemma"], results["supervised"]
    out = {
        "method": key,
        "ratio": gemma[key] / ours[key],
        "variants": results,
        "seq_len": seq_len,
        "supervised": supervised,
        "vocab_size": size.vocab_size,
        "dtype": dtype,
        "device": device,
        "train_embeddings": train_embeddings,
        "losses_agree": abs(gemma["loss"] - ours["loss"]) <= 2e-2 * max(1.0, abs(gemma["loss"])),
        "full_logits_fp32_bytes": seq_len * size.vocab_size * 4,
        "supervised_logits_fp32_bytes": supervised * size.vocab_size * 4,
    }
    if gemma.get("rss_peak_bytes") and ours.get("rss_peak_bytes"):
        out["rss_ratio"] = gemma["rss_peak_bytes"] / ours["rss_peak_bytes"]
    return out


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=1000)
    parser.add_argument("--supervised", type=int, default=50, help="supervised (answer) tokens at the end")
    parser.add_argument("--vocab", type=int, default=GEMMA3_VOCAB)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-embeddings", action="store_true", help="also train the (tied) embedding")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads (0: torch's default)")
    parser.add_argument("--json", default=None, help="write the results here (used by run_all.py)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        setup_cpu_threads(spec["threads"])
        result = worker(spec["variant"], LMSize(**spec["size"]), spec["seq_len"], spec["supervised"],
                        getattr(torch, spec["dtype"]), spec["device"], spec["train_embeddings"])
        print(json.dumps(result))
        return 0

    setup_cpu_threads(args.threads)
    size = LMSize(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64, intermediate_size=4 * args.hidden, vocab_size=args.vocab,
                  sliding_window=512)
    result = run(size, seq_len=args.seq_len, supervised=args.supervised, dtype=args.dtype, device=args.device,
                 train_embeddings=args.train_embeddings, threads=args.threads)
    g, s = result["variants"]["gemma"], result["variants"]["supervised"]
    key = result["method"]
    method = {"allocator_peak_bytes": "torch allocator peak (profiler memory events)",
              "cuda_peak_bytes": "torch.cuda.max_memory_allocated"}[key]
    note = (f"{method}: Gemma loss {_mib(g[key])}, supervised_lm_loss {_mib(s[key])} above the weights; "
            f"{args.seq_len} tokens, {args.supervised} supervised, vocab {args.vocab}, {args.dtype}, "
            f"{'embedding + ' if args.train_embeddings else ''}decoder layers trainable; full fp32 logits alone are "
            f"{_mib(result['full_logits_fp32_bytes'])}; losses agree: {result['losses_agree']} "
            f"({g['loss']:.4f} vs {s['loss']:.4f})")
    if "rss_ratio" in result:
        note += (f"; cross-check, process peak RSS increase: {_mib(g['rss_peak_bytes'])} vs "
                 f"{_mib(s['rss_peak_bytes'])} = {result['rss_ratio']:.1f}x")
    figure = Figure(
        name=f"loss peak memory, Gemma full-sequence / supervised_lm_loss ({args.seq_len} tokens, {args.vocab} vocab)",
        value=result["ratio"],
        target=f">= {TARGET:g}",
        passed=check(result["ratio"], ">=", TARGET) and result["losses_agree"],
        command=command_line(argv=argv),
        details=result,
        note=note,
    )
    print(figure.line())
    print("  " + figure.note)
    write_json(args.json, {"figures": [figure], "machine": machine_description()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
