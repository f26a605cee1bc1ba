"""Run TheWorld's CPU benchmarks and write BENCHMARKS.md (`make bench`).

Runs, each in its own process (so one benchmark's memory or threads never colour another's):

1. world_overhead.py - TheWorld(enable_world=False) vs Gemma 3 forward (target <= 1.01)
2. world_cost.py     - world tokens vs the same number of text tokens, forward and align step
                       (target <= 1.05), and the growth table
3. cache_vs_vae.py   - align step with cached latents vs the VAE in the loop (target >= 3x for
                       the full-size VAE at 512x512; `--no-full-vae` skips that slow part)
4. loss_memory.py    - loss peak memory, Gemma's full-sequence loss / supervised_lm_loss (>= 4x)
5. memory_estimate.py - `theworld estimate-memory` against measured training-step peaks (within
                       15%), and its figures for gemma-3-4b's four training configurations
6. serve_throughput.py - `theworld serve` requests/s, batching / one at a time, 8 clients (>= 2x)
7. choice_scoring.py - scoring two-choice items / forwards of the same prompts (target <= 1.3;
                       one full forward per choice, the old path, beside it), items/s of both
8. cache_throughput.py - `theworld cache-latents` images/s: batched VAE calls / one image per
                       call, and 2 processes / 1 (full-size VAE at 128x128, random weights)

plus `gpu_stage1.py --params-only` (parameter counts and the FLOP formula at gemma-3-4b's size;
the GPU measurement itself runs only with `--gpu` on a machine with CUDA; `gpu_benchmark.py`
records the whole GPU section, evaluation and training, in one budgeted run).

    .venv/bin/python benchmarks/run_all.py --output BENCHMARKS.md
    .venv/bin/python benchmarks/run_all.py --quick --output /tmp/B.md   # fewer repetitions
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# What a lent GPU measured (the GPU scripts' own --markdown/--json output), kept in the repository:
# this CPU-only run cannot remeasure it, and rewriting BENCHMARKS.md must not lose it.
GPU_RESULTS = HERE / "gpu_results"
sys.path.insert(0, str(HERE))

from common import REPO_ROOT, machine_description  # noqa: E402

PY = ".venv/bin/python"


def _script(name: str) -> str:
    return f"benchmarks/{name}"


# (key, script, normal args, quick args)
BENCHMARKS: list[tuple[str, str, list[str], list[str]]] = [
    ("world_overhead", "world_overhead.py", [], ["--pairs", "6", "--warmup", "1"]),
    ("world_cost", "world_cost.py", [],
     ["--forward-pairs", "4", "--train-pairs", "3", "--warmup", "1", "--sweep-tokens-per-frame", "64", "256",
      "--sweep-frames", "1", "5", "--sweep-forward-pairs", "1", "--sweep-train-pairs", "1"]),
    ("loss_memory", "loss_memory.py", [], []),
    ("memory_estimate", "memory_estimate.py", [], ["--cases", "align bf16 b4x384", "full bf16 checkpointing b2x384"]),
    ("serve_throughput", "serve_throughput.py", [], ["--rounds", "1", "--requests", "2"]),
    ("choice_scoring", "choice_scoring.py", [], ["--pairs", "2", "--old-pairs", "1"]),
    ("cache_throughput", "cache_throughput.py", [], ["--vae", "tiny", "--images", "6", "--size", "64", "--repeats", "1"]),
    ("rollout_cost", "rollout_cost.py", [], []),
]  # fmt: skip
# The figures' numbers in BENCHMARKS.md's table.
FIGURE_INDEX = {"world_overhead": 1, "world_cost": 2, "cache_vs_vae": 3, "loss_memory": 4, "memory_estimate": 5,
                "serve_throughput": 6, "choice_scoring": 7, "cache_throughput": 8}  # fmt: skip


def run_process(args: list[str], log_name: str) -> tuple[int, str, float]:
    """Run from the repository root, echo its output as it comes, return (code, output, seconds)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    print(f"\n=== {log_name}: {' '.join(args)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        # Progress bars and profiler chatter are noise in the make output.
        if not line.startswith(("USDT:", "Loading weights", "Writing model")) and "it/s]" not in line:
            print("  " + line.rstrip(), flush=True)
    code = proc.wait()
    return code, "".join(lines), time.perf_counter() - start


def run_benchmark(key: str, script: str, extra: list[str], workdir: Path) -> dict[str, Any]:
    out = workdir / f"{key}.json"
    args = [sys.executable, str(HERE / script), *extra, "--json", str(out)]
    code, output, seconds = run_process(args, key)
    result: dict[str, Any] = {"key": key, "seconds": seconds, "code": code,
                              "command": " ".join([PY, _script(script), *extra])}
    if code == 0 and out.exists():
        result.update(json.loads(out.read_text(encoding="utf-8")))
    else:
        result["error"] = output[-3000:]
    return result


CACHE_LINE = re.compile(r"^(?P<label>[^:\n]+): cached latents (?P<speedup>[\d.]+)x faster per align step \((?P<rest>.*)\)$",
                        re.MULTILINE)


def run_cache_vs_vae(full_vae: bool, quick: bool) -> dict[str, Any]:
    """Item 3 is another script's (benchmarks/cache_vs_vae.py): run it and read its report lines."""
    script = HERE / "cache_vs_vae.py"
    if not script.exists():
        return {"key": "cache_vs_vae", "missing": True}
    extra = ["--threads", "1"]
    if quick:
        extra += ["--steps", "3", "--warmup", "1"]
    if full_vae:
        extra += ["--full-vae"]
    code, output, seconds = run_process([sys.executable, str(script), *extra], "cache_vs_vae")
    figures = []
    for match in CACHE_LINE.finditer(output):
        label = match["label"].strip()
        speedup = float(match["speedup"])
        full = "full-size" in label
        figures.append({
            "name": f"align step, VAE in the loop / cached latents: {label}",
            "value": speedup,
            "unit": "x",
            "target": ">= 3" if full else "n/a (tiny VAE: only the full-size VAE has a target)",
            "passed": (speedup >= 3.0) if full else None,
            "command": " ".join([PY, _script("cache_vs_vae.py"), *extra]),
            "note": match["rest"],
        })  # fmt: skip
    return {"key": "cache_vs_vae", "seconds": seconds, "code": code, "figures": figures, "full_vae": full_vae,
            "command": " ".join([PY, _script("cache_vs_vae.py"), *extra]),
            **({"error": output[-3000:]} if code != 0 or not figures else {})}


# ------------------------------------------------------------------------------------------------
# BENCHMARKS.md


def _value(fig: dict[str, Any]) -> str:
    return f"{fig['value']:.3f}{fig.get('unit', 'x')}" if fig["value"] < 100 else f"{fig['value']:.0f}{fig.get('unit', 'x')}"


def _verdict(fig: dict[str, Any]) -> str:
    return {True: "PASS", False: "**FAIL**", None: "n/a"}[fig.get("passed")]


def _counts_section(stage1: dict[str, Any] | None) -> list[str]:
    if not stage1 or "parameter_counts" not in stage1:
        return ["(parameter counts not computed: `gpu_stage1.py --params-only` failed)"]
    c = stage1["parameter_counts"]
    lines = [
        f"- gemma-3-4b architecture: **{c['gemma3_4b_total']:,}** parameters (language model "
        f"{c['gemma3_4b_language_model']:,}, of which the embedding tied with the LM head "
        f"{c['gemma3_4b_embedding']:,}; SigLIP {c['gemma3_4b_vision_tower']:,}; image projector "
        f"{c['gemma3_4b_mm_projector']:,}).",
        f"- Cosmos-Predict2 / Wan 2.1 VAE: {c['vae_total']:,} parameters; the encoder half TheWorld keeps: "
        f"{c['vae_encoder_half']:,}.",
        f"- World projector, trainable parameters at hidden 2560 (512x512, `world_num_frames=17`, i.e. a "
        f"5-row temporal embedding); the default (mlp, 256 tokens per frame): **{c['projector_default']:,}**.",
        "",
        "| projector | tokens/frame | space-to-depth | input dim | trainable parameters |",
        "|---|---:|---:|---:|---:|",
    ]
    for p in c["projector"]:
        lines.append(f"| {p['type']} | {p['tokens_per_frame']} | {p['patch']}x{p['patch']} | {p['input_dim']} "
                     f"| {p['trainable']:,} |")
    est = stage1.get("estimated_step_flops")
    shape = stage1.get("estimated_step_shape")
    if est and shape:
        def tf(x: float) -> str:
            return f"{x / 1e12:.2f}"
        lines += [
            "",
            f"FLOP formula at gemma-3-4b's size, batch {shape['batch']}, {shape['image_size']}x{shape['image_size']}, "
            f"{shape['tokens_per_frame']} world tokens per image, {shape['seq_len']} tokens per sequence: "
            f"**{tf(est['total'])} TFLOP per align step** (TFLOP: LM forward {tf(est['lm_forward'])}, LM backward "
            f"{tf(est['lm_backward'])}, projector {est['projector'] / 1e9:.1f} GFLOP, SigLIP forward "
            f"{tf(est['siglip_forward'])}, VAE encoder {tf(est['vae_encoder'])}, the VAE's counted by "
            "FlopCounterMode on the meta device).",
        ]
    return lines


def write_markdown(path: Path, results: dict[str, dict[str, Any]], machine: dict[str, Any], total_s: float,
                   argv: list[str]) -> None:
    figures: list[tuple[int, dict[str, Any]]] = []
    for key, index in FIGURE_INDEX.items():
        for fig in results.get(key, {}).get("figures", []):
            figures.append((index, fig))

    cmd = " ".join([PY, "benchmarks/run_all.py", *argv])
    lines = [
        "# TheWorld benchmarks",
        "",
        f"Written by `{cmd}` (`make bench`) on {machine['date']}, in {total_s / 60:.1f} minutes.",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB RAM, "
        f"GPU: {machine['gpu'] or 'none'}; Python {machine['python']}, torch {machine['torch']}, "
        f"transformers {machine['transformers']}, diffusers {machine['diffusers']}; {machine['os']}.",
        "",
        "Time per benchmark: " + ", ".join(f"{k} {r['seconds']:.0f} s" for k, r in results.items() if "seconds" in r)
        + ".",
        "",
        "Every figure is a ratio measured within one run. Timings alternate the two variants in pairs "
        "(A B, B A, ...) and report the median of the per-pair ratios, on the CPU time of a process "
        "running one torch thread: these 2-core machines are shared with other jobs, which makes wall "
        "time (and two-thread runs, whose threads stall on each other) scatter by tens of percent. The "
        "wall-time ratio is given beside it. Random weights throughout (no Hub access): speed and "
        "memory do not depend on the values.",
        "",
        "| # | figure | value | target | result | command |",
        "|---|---|---:|---|---|---|",
    ]
    cache = results.get("cache_vs_vae")
    extra_rows: dict[int, list[str]] = {3: []}
    if cache is not None and cache.get("missing"):
        extra_rows[3].append("| 3 | cached latents vs VAE in the loop | - | >= 3 | not run | TODO: "
                             "`benchmarks/cache_vs_vae.py` (another developer's) does not exist yet |")
    elif cache is not None and not cache.get("figures"):
        extra_rows[3].append(f"| 3 | cached latents vs VAE in the loop | - | >= 3 | **error** | `{cache.get('command', '')}` |")
    if cache is not None and not cache.get("missing") and not cache.get("full_vae", True):
        extra_rows[3].append("| 3 | full-size VAE at 512x512 | - | >= 3 | skipped (`--no-full-vae`) "
                             "| `.venv/bin/python benchmarks/cache_vs_vae.py --threads 1 --full-vae` |")
    for index in sorted(set(FIGURE_INDEX.values())):
        for i, fig in figures:
            if i == index:
                lines.append(f"| {index} | {fig['name']} | {_value(fig)} | {fig['target']} | {_verdict(fig)} "
                             f"| `{fig['command']}` |")
        lines += extra_rows.get(index, [])
    lines.append("")

    lines += ["## Details", ""]
    for index, fig in figures:
        lines += [f"{index}. **{fig['name']}**: {fig.get('note', '')}", ""]
    for key, res in results.items():
        if res.get("error"):
            lines += [f"### {key} failed (exit code {res.get('code')})", "", "```", res["error"].strip()[-2000:],
                      "```", ""]

    cost = results.get("world_cost", {})
    if cost.get("sweep_table"):
        lines += [
            "### How the cost grows (world_cost.py)",
            "",
            "Same random model (hidden 512, 4 layers, 32k vocabulary), 64 text tokens before the world "
            "block and 32 after it (16 supervised). Forward and align-step CPU-time medians; ratio = "
            "world / text of the same length. Tokens per frame at 512x512 (64x64 latents): 64 = 8x8, "
            "256 = 4x4, 1024 = 2x2 space-to-depth; frames 1 / 5 / 9 / 17 = 1 / 2 / 3 / 5 latent frames. "
            "Few repetitions per row: read the ms columns for growth, the headline figures above for the "
            "overhead.",
            "",
            cost["sweep_table"],
            "",
        ]

    lines += [
        "### How loss memory is measured (loss_memory.py)",
        "",
        "Each variant runs in a fresh process, after one warm-up step, with the weights already in memory. "
        "The figure is the peak of the running sum of torch's CPU allocations and frees during one "
        "training step (forward, loss, backward), read from `torch.profiler` memory events "
        "(`profile_memory=True`): exact, repeatable, and blind to everything that is not a torch tensor. "
        "As a cross-check the same step runs without the profiler after the kernel's resident-memory "
        "high-water mark is reset (`echo 5 > /proc/self/clear_refs`); the rise of `VmHWM` over the "
        "resident size before the step is what the operating system saw. The two agree within a few "
        "percent (see the note of figure 4). `tracemalloc` would see none of it (torch allocates "
        "outside Python's allocator), and `ru_maxrss` alone cannot be reset, so a high-water mark from "
        "model construction would hide the step. On a GPU the script uses "
        "`torch.cuda.max_memory_allocated` instead (`--device cuda`).",
        "",
        "## gpu_stage1: align at gemma-3-4b's real size on a GPU",
        "",
    ]
    stage1 = results.get("gpu_stage1", {})
    if stage1.get("run"):
        run = stage1["run"]
        mfu = "n/a" if run["mfu"] is None else f"{100 * run['mfu']:.1f}%"
        lines += [
            f"Measured on {run['device']}: batch {run['batch']} x {run['seq_len']} tokens, "
            f"{run['tokens_per_s']:,.0f} tokens/s, step {run['step_s_median']:.3f} s, MFU "
            f"{mfu}, peak allocated "
            f"{run['peak_allocated_bytes'] / 2**30:.1f} GiB.",
            "",
        ]
    else:
        lines += [
            "**Not run on its own on a GPU yet** (`gpu_benchmark.py`, next section, runs its `align` step on "
            "a GPU). On any CUDA machine, from the repository root:",
            "",
            "```",
            "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_stage1.py --json gpu_stage1.json",
            "```",
            "",
            "It builds gemma-3-4b's architecture (config written out in the script, random weights) and "
            "the full-size VAE in bf16, runs `align` steps at batch 8 with 512x512 images (256 world tokens "
            "each, VAE in the loop, Gemma's SigLIP image path, only the projector training in fp32) and "
            "prints tokens/s, MFU (FLOP formula in the script's docstring, checked against "
            "`FlopCounterMode` on one step) and peak memory. `--peak-tflops` sets the peak for a GPU it "
            "does not know, `--gradient-checkpointing` trades time for memory. Its CPU dry run (a scaled-"
            "down model) is tested in `tests/benchmarks/test_benchmarks_smoke.py`.",
            "",
        ]
    lines += ["From the configs alone (meta device, no weights; `.venv/bin/python benchmarks/gpu_stage1.py "
              "--params-only`):", ""]
    lines += _counts_section(stage1)
    lines += [""]
    measured = GPU_RESULTS / "gpu_benchmark.md"
    lines += measured.read_text().rstrip("\n").splitlines() + [""] if measured.exists() else GPU_BENCHMARK_SECTION
    if "memory_estimate" in results:
        lines += memory_section(results["memory_estimate"])
    if "rollout_cost" in results:
        lines += rollout_cost_section(results["rollout_cost"])
    path.write_text("\n".join(lines), encoding="utf-8")


# gpu_benchmark.py writes this section itself, filled, on a GPU (--markdown); until then, how to.
GPU_BENCHMARK_SECTION = [
    "## GPU: evaluation and training at gemma-3-4b's size (gpu_benchmark.py)",
    "",
    "**Not run on a GPU yet.** One run with a time budget records the whole section on one CUDA GPU "
    "(about 5 minutes on an H100/H200; parts left when the budget is spent are marked skipped):",
    "",
    "```",
    "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_benchmark.py --budget-s 420 --json gpu.json --markdown gpu.md",
    "```",
    "",
    "At gemma-3-4b's architecture with random weights in bf16: evaluation of BLINK-sized two-choice items "
    "(~565 tokens: 256 image + 256 world tokens; each prompt prefilled once, its choices scored from the KV "
    "cache, beside the old full forward per choice): items/s, prompt tokens/s, MFU against the GPU's dense "
    "bf16 peak, peak memory, with `sdpa` and `eager` attention; then `align` training steps (batch 8, "
    "512x512, VAE in the loop): tokens/s, MFU, peak memory, without and with gradient checkpointing, `sdpa` "
    "and `eager`. `gpu.md` is this section, filled: paste it here. Its CPU dry run (`--dry-run`, tiny "
    "models) is tested in `tests/benchmarks/test_benchmarks_smoke.py`.",
    "",
]


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f}"


def rollout_cost_section(result: dict[str, Any]) -> list[str]:
    """BENCHMARKS.md's section on what a world rollout costs (benchmarks/rollout_cost.py's results)."""
    sys.path.insert(0, str(HERE))
    import rollout_cost

    lines = ["## World rollouts: FLOPs at the Cosmos-Predict2-2B DiT's dimensions (rollout_cost.py)", ""]
    if result.get("error") or "rows" not in result:
        return lines + ["**error**: `benchmarks/rollout_cost.py` did not run; see its output above.", ""]
    size, steps = result["image_size"], result["steps"]
    lines += [
        f"One rollout of one {size}x{size} image (observed clip of {result['observed_frames']} frame(s)) by the 2B "
        f"Video2World DiT (28 layers, 2048 wide, T5 text of 512 tokens), {steps} sampler steps: the VAE encode of "
        "the padded clip plus one DiT forward per step, two with classifier-free guidance (`world_rollout_guidance` "
        "> 1). FLOPs are counted with `torch.utils.flop_counter` on the meta device (checked against a formula); "
        "GPU time and memory: below, when a GPU has measured them (`benchmarks/rollout_gpu.py`).",
        "",
        rollout_cost.table(result["rows"], steps),
        "",
        f"Command: `{result.get('command', '.venv/bin/python benchmarks/rollout_cost.py')}`. For scale: gemma-3-4b's "
        "forward over ~600 tokens is about 5 TFLOP, so one guided K = 1 rollout costs about as much as 100 such "
        "forwards; training reads rollouts from the rollout cache, never recomputes them.",
        "",
    ]
    measured = GPU_RESULTS / "rollout_gpu.md"
    if measured.exists():
        lines += ["### Time and memory on a GPU (rollout_gpu.py)", ""] + measured.read_text().rstrip("\n").splitlines() + [""]
    return lines


def memory_section(result: dict[str, Any]) -> list[str]:
    """BENCHMARKS.md's section on training memory (benchmarks/memory_estimate.py's results)."""
    lines = ["## Training memory: gemma-3-4b's four configurations (memory_estimate.py)", ""]
    if result.get("error") or "gemma3_4b" not in result:
        return lines + ["**error**: `benchmarks/memory_estimate.py` did not run; see its output above.", ""]
    rows = {r["stage"]: r for r in result["gemma3_4b"]}
    lines += [
        "`theworld estimate-memory` for gemma-3-4b (config written out in `theworld.memory.configs`, counted on the "
        "meta device): batch 8, one Gemma image (256 tokens) and one 512x512 world frame (256 world tokens) per "
        "sample, 1024 tokens per sample (507 of text, 64 supervised), `bf16: true` (frozen weights bf16; trainable "
        "weights fp32 with fp32 gradients and AdamW states; bf16 autocast), sdpa attention, the VAE in the loop, "
        "CUDA kernels. GiB of torch tensors (`torch.cuda.max_memory_allocated`); the CUDA context and allocator "
        "slack add 1-3 GB in `nvidia-smi`. Command: `theworld estimate-memory --model google/gemma-3-4b-it "
        "--stage STAGE --batch-size 8 --seq-len 1024 [--gradient-checkpointing]`.",
        "",
        "| configuration | stage | trains | trainable parameters | documented | estimate | with gradient checkpointing |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for stage in ("align", "vision", "finetune", "full"):
        r = rows[stage]
        lines.append(f"| {r['configuration']} | `{stage}` | {r['trains']} | {r['trainable']:,} | {r['documented']} "
                     f"| {_gib(r['plain']['peak_bytes'])} GiB | {_gib(r['checkpointing']['peak_bytes'])} GiB |")
    lines += ["", "What is alive at each peak (GiB):", "",
              "| configuration | checkpointing | weights | gradients | AdamW | bf16 weight copies | activations "
              "| other | peak | at |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for stage in ("align", "vision", "finetune", "full"):
        for key, label in (("plain", "no"), ("checkpointing", "yes")):
            e = rows[stage][key]
            at = e["rows"]
            weights = sum(v for k, v in at.items() if k.startswith("weights:")) + at.get("buffers", 0)
            activations = sum(v for k, v in at.items() if k.startswith("activations:"))
            named = weights + at.get("gradients", 0) + at.get("optimizer states", 0) + at.get(
                "autocast weight copies", 0) + activations  # fmt: skip
            lines.append(f"| {rows[stage]['configuration']} | {label} | {_gib(weights)} | {_gib(at.get('gradients', 0))} "
                         f"| {_gib(at.get('optimizer states', 0))} | {_gib(at.get('autocast weight copies', 0))} "
                         f"| {_gib(activations)} | {_gib(e['peak_bytes'] - named)} | {_gib(e['peak_bytes'])} "
                         f"| {e['peak_phase']} |")
    a, v, f, u = (rows[s] for s in ("align", "vision", "finetune", "full"))
    layer = a["plain"]["per_layer"]
    lines += [
        "",
        "Where the estimates and the documented figures differ, and why:",
        "",
        f"- **projection + language** (documented ~56-60 GB with checkpointing; estimate "
        f"{_gib(f['checkpointing']['peak_bytes'])} GiB): agrees. {f['trainable'] / 1e9:.2f}B trainable parameters "
        "at 16 bytes each (fp32 weight, fp32 gradient, two fp32 AdamW states) are already "
        f"{_gib(16 * f['trainable'])} GiB; checkpointed activations and the frozen vision side add the rest.",
        f"- **full** (documented ~80 GB+; estimate {_gib(u['checkpointing']['peak_bytes'])} GiB with checkpointing, "
        f"{_gib(u['plain']['peak_bytes'])} GiB without): the fixed part alone, {u['trainable'] / 1e9:.2f}B x 16 bytes "
        f"= {_gib(16 * u['trainable'])} GiB plus the bf16 weight copies autocast keeps for backward, is about the "
        "documented figure; that figure holds with gradient checkpointing. Without it the language model's and "
        "SigLIP's activations come on top (no 80 GB GPU holds it at batch 8).",
        f"- **projection only** (documented ~20-24 GB; estimate {_gib(a['plain']['peak_bytes'])} GiB without "
        f"checkpointing, {_gib(a['checkpointing']['peak_bytes'])} GiB with): the weights are 8 GiB and the "
        "optimizer is negligible, but the frozen language model still keeps activations: the world tokens enter "
        "at the bottom, so the loss's gradient goes back through all 34 layers, and every layer keeps what its "
        f"input gradient needs ({layer['saved'] / 2**20:,.0f} MiB per layer at 8 x 1024 tokens: Gemma's RMSNorms "
        "keep fp32 copies of their inputs, the MLP keeps three 10240-wide activations). The documented figure fits "
        f"neither variant at batch 8: without checkpointing the step needs {_gib(a['plain_by_batch']['2'])} GiB at "
        f"batch 2 and {_gib(a['plain_by_batch']['4'])} GiB at batch 4; with checkpointing batch 8 needs far less "
        "than documented.",
        f"- **projection + vision** (documented ~35-40 GB; estimate {_gib(v['plain']['peak_bytes'])} GiB without "
        f"checkpointing, {_gib(v['checkpointing']['peak_bytes'])} GiB with): training SigLIP keeps its activations "
        "for 8 images x 4096 patches x 27 layers (about 40 GiB), on top of the frozen language model's, kept for "
        "the same reason as above. The documented figure is between the two variants (without checkpointing: "
        f"{_gib(v['plain_by_batch']['2'])} GiB at batch 2, {_gib(v['plain_by_batch']['4'])} GiB at batch 4).",
        "- With gradient checkpointing the `align` and `vision` peaks are the frozen VAE encoding the batch's 8 "
        "frames at 512x512 (about 5 GiB of working memory, before the language model runs); with a latent cache "
        "(`theworld cache-latents`, as `configs/align.yaml` does) they drop to "
        f"{_gib(a['checkpointing_latent_cache']['peak_bytes'])} and {_gib(v['checkpointing_latent_cache']['peak_bytes'])} "
        "GiB. The VAE's working memory is the least certain figure here: its convolutions' scratch memory (cuDNN "
        "workspaces) is not modelled; on the CPU the estimate is within 3% of the measured encode for single "
        "frames of the full-size VAE, 11% low for 5-frame clips.",
        "",
    ]
    validation = result.get("validation")
    if validation:
        lines += [
            "The estimate against measured peaks, small random models on this CPU: `TheWorldTrainer`'s own training "
            "step (fused AdamW, autocast, gradient clipping, `supervised_lm_loss`), the second of two steps, peak "
            "of the running sum of torch's allocations and frees (profiler memory events, one torch thread: the "
            "bytes do not depend on the thread count or on the CPU's instruction set) plus the weights and "
            "optimizer states held when the step starts. Per block the estimate's saved activations equal what "
            "autograd saves exactly (`tests/memory/test_memory_estimate.py`).",
            "",
            f"Measured on {result.get('machine', {}).get('cpu', 'this machine')}, "
            f"{result.get('machine', {}).get('date', '')}, `.venv/bin/python benchmarks/memory_estimate.py`:",
            "",
            "| case | estimate (MiB) | measured (MiB) | estimate / measured | estimated peak at | measured peak in |",
            "|---|---:|---:|---:|---|---|",
        ]
        for r in validation:
            lines.append(f"| {r['case']} | {r['estimate_bytes'] / 2**20:.2f} | {r['measured_bytes'] / 2**20:.2f} "
                         f"| {r['ratio']:.3f} | {r['estimated_phase']} | `{r['measured_op']}` |")
        for r in result.get("vae", []):
            lines.append(f"| {r['case']} (working memory, no gradient) | {r['estimate_bytes'] / 2**20:.2f} "
                         f"| {r['measured_bytes'] / 2**20:.2f} | {r['ratio']:.3f} | | |")
        lines.append("")
    command = "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/memory_estimate.py --device cuda --json memory_gpu.json"
    saved = GPU_RESULTS / "memory_gpu.json"
    if not result.get("gpu") and saved.exists():
        result = dict(result, **json.loads(saved.read_text()))
    if result.get("gpu"):
        where = f" on {result['device']}, {result['date']}" if "device" in result else ""
        lines += [f"Measured on the GPU{where} (`{command}`): one training step of random weights per configuration, "
                  "`torch.cuda.max_memory_allocated`." + (f" {result['note']}." if "note" in result else ""), "",
                  "| case | estimate (GiB) | measured (GiB) | estimate / measured |", "|---|---:|---:|---:|"]  # fmt: skip
        for r in result["gpu"]:
            measured = _gib(r["measured_bytes"]) if "measured_bytes" in r else r.get("skipped", "-")
            ratio = f"{r['ratio']:.3f}" if "ratio" in r else "-"
            lines.append(f"| {r['case']} | {_gib(r['estimate_bytes'])} | {measured} | {ratio} |")
        lines.append("")
    else:
        lines += [
            "**Not measured on a GPU yet** (none was available). On a CUDA machine with 80 GB or more, this measures "
            "the four configurations at gemma-3-4b's real size (random weights, one training step each, "
            "`torch.cuda.max_memory_allocated`) beside the estimate, skipping those that do not fit:",
            "", "```", command, "```", "",
        ]  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true", help="few repetitions (checks the pipeline, noisy figures)")
    parser.add_argument("--no-full-vae", action="store_true",
                        help="skip cache_vs_vae's full-size VAE at 512x512 (the slow part, minutes on a CPU)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these (world_overhead world_cost cache_vs_vae loss_memory memory_estimate "
                        "serve_throughput choice_scoring cache_throughput gpu_stage1)")
    parser.add_argument("--gpu", action="store_true", help="also run gpu_stage1.py's GPU measurement (needs CUDA)")
    args = parser.parse_args(argv)
    shown_argv = sys.argv[1:] if argv is None else argv

    def wanted(key: str) -> bool:
        return args.only is None or key in args.only

    start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="theworld_bench_") as tmp:
        workdir = Path(tmp)
        for key, script, normal, quick in BENCHMARKS[:2]:
            if wanted(key):
                results[key] = run_benchmark(key, script, quick if args.quick else normal, workdir)
        if wanted("cache_vs_vae"):
            results["cache_vs_vae"] = run_cache_vs_vae(full_vae=not args.no_full_vae, quick=args.quick)
        for key, script, normal, quick in BENCHMARKS[2:]:
            if wanted(key):
                results[key] = run_benchmark(key, script, quick if args.quick else normal, workdir)
        if wanted("gpu_stage1"):
            extra = [] if args.gpu else ["--params-only"]
            results["gpu_stage1"] = run_benchmark("gpu_stage1", "gpu_stage1.py", extra, workdir)
    total = time.perf_counter() - start
    output = Path(args.output)
    if not output.is_absolute():
        output = Path.cwd() / output
    write_markdown(output, results, machine_description(), total, shown_argv)
    print(f"\nwrote {output} in {total / 60:.1f} min")
    failed = [k for k, r in results.items() if r.get("error")]
    if failed:
        print(f"benchmarks that failed to run: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
