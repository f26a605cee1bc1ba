"""Training memory: `theworld estimate-memory`'s figures for gemma-3-4b, and their check against measured peaks.

1. gemma-3-4b, the design's four training configurations (stages align, vision, finetune, full) at
   batch 8, 512x512 world frames (256 world tokens), one Gemma image (256 tokens) and 1024 tokens per
   sample, bf16, the VAE in the loop: the estimate with and without gradient checkpointing, next to
   the figures the design documents give. From the config alone (meta device), on any machine.
2. The estimate against the peak measured on the CPU for small random models
   (`theworld.memory.measure.VALIDATION_CASES`: TheWorldTrainer's own step, torch allocator peak
   from profiler memory events, one torch thread).
3. `--device cuda`: the four configurations measured at gemma-3-4b's real size on a GPU
   (`torch.cuda.max_memory_allocated` over one training step of random weights), beside the estimate.
   Configurations whose estimate exceeds the GPU's memory are skipped.

    .venv/bin/python benchmarks/memory_estimate.py                 # 1 and 2 (CPU, ~1 minute)
    .venv/bin/python benchmarks/memory_estimate.py --device cuda   # 1 and 3 (needs a GPU with ~80 GB)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, command_line, machine_description, write_json  # noqa: E402

TOLERANCE = 0.15
BATCH, SEQ_LEN, WORLD_IMAGE_SIZE, WORLD_TOKENS = 8, 1024, 512, 256
# (stage, configuration as the design documents name it, what trains, documented GPU memory)
CONFIGURATIONS = [
    ("align", "projection only (default)", "world projector + temporal embeddings", "~20-24 GB"),
    ("vision", "projection + vision", "+ SigLIP and Gemma's multi-modal projector", "~35-40 GB"),
    ("finetune", "projection + language", "+ the language model", "~56-60 GB with gradient checkpointing"),
    ("full", "full", "everything but the VAE", "~80 GB+"),
]


def gemma3_4b_estimates(device: str = "cuda", seq_len: int = SEQ_LEN, batch: int = BATCH) -> list[dict[str, Any]]:
    """The four configurations, with and without gradient checkpointing (estimates only)."""
    from theworld.memory.configs import load_model_config
    from theworld.memory.estimate import StepSetup, estimate_memory

    config = load_model_config("google/gemma-3-4b-it", world_image_size=WORLD_IMAGE_SIZE, world_tokens_per_frame=WORLD_TOKENS)
    rows = []
    for stage, name, trains, documented in CONFIGURATIONS:
        row: dict[str, Any] = {"stage": stage, "configuration": name, "trains": trains, "documented": documented}
        for checkpointing in (False, True):
            setup = StepSetup(stage=stage, batch_size=batch, seq_len=seq_len, gradient_checkpointing=checkpointing,
                              device=device)  # fmt: skip
            estimate = estimate_memory(config, setup)
            key = "checkpointing" if checkpointing else "plain"
            row[key] = {
                "peak_bytes": estimate.peak_bytes,
                "peak_phase": estimate.peak_phase,
                "rows": {r.component: r.at_peak for r in estimate.rows},
                "per_layer": estimate.per_layer,
            }
            row["trainable"] = estimate.parameters["trainable"]
        # checkpointed, with latents from the cache (the VAE neither loaded nor run)
        cached = StepSetup(stage=stage, batch_size=batch, seq_len=seq_len, gradient_checkpointing=True,
                           latent_cache=True, device=device)  # fmt: skip
        row["checkpointing_latent_cache"] = {"peak_bytes": estimate_memory(config, cached).peak_bytes}
        # the plain step at smaller batches, to see where the documented figures would fit
        row["plain_by_batch"] = {
            b: estimate_memory(config, StepSetup(stage=stage, batch_size=b, seq_len=seq_len, device=device)).peak_bytes
            for b in (1, 2, 4)
        }  # fmt: skip
        rows.append(row)
    return rows


def validate_on_cpu(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Estimate vs measured peak for the small-model validation cases."""
    from theworld.memory.estimate import estimate_memory
    from theworld.memory.measure import SMALL_VAE, VALIDATION_CASES, measure_step, validation_case

    results = []
    for name in names or list(VALIDATION_CASES):
        config, setup = validation_case(name)
        start = time.perf_counter()
        estimate = estimate_memory(config, setup, SMALL_VAE)
        measured = measure_step(config, setup, SMALL_VAE)
        results.append({
            "case": name, "estimate_bytes": estimate.peak_bytes, "measured_bytes": measured.peak_bytes,
            "weights_and_states_bytes": measured.start_bytes, "ratio": estimate.peak_bytes / measured.peak_bytes,
            "estimated_phase": estimate.peak_phase, "measured_op": measured.details.get("peak_op", ""),
            "seconds": time.perf_counter() - start,
        })  # fmt: skip
        print(f"  {name}: estimate {estimate.peak_bytes / 2**20:.2f} MiB, measured {measured.peak_bytes / 2**20:.2f} MiB, "
              f"ratio {results[-1]['ratio']:.3f}", flush=True)  # fmt: skip
    return results


def validate_vae_on_cpu(size: int = 128, frames: tuple[int, ...] = (1, 5)) -> list[dict[str, Any]]:
    """The frozen VAE encoder's working memory: the full-size Wan VAE architecture (random weights, fp32,
    batch 1), estimate vs the profiler's peak during `encode` (no gradients)."""
    import torch
    from diffusers import AutoencoderKLWan
    from torch.profiler import ProfilerActivity, profile

    from theworld.memory.estimate import vae_encode_peak
    from theworld.memory.measure import profiler_peak
    from theworld.world_encoder.vae import CosmosWorldEncoder

    vae = AutoencoderKLWan()
    vae.decoder = None
    vae.post_quant_conv = None
    encoder = CosmosWorldEncoder(vae.eval().requires_grad_(False))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = []
    try:
        for n in frames:
            pixels = torch.rand(1, 3, n, size, size) * 2 - 1
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, torch.no_grad():
                encoder(pixels)
            measured = profiler_peak(prof.profiler.kineto_results.events())
            estimate = vae_encode_peak({}, 1, n, size, 4)
            results.append({"case": f"full-size VAE encoder, {size} px, {n} frame(s), fp32", "estimate_bytes": estimate,
                            "measured_bytes": measured, "ratio": estimate / measured})  # fmt: skip
            print(f"  {results[-1]['case']}: estimate {estimate / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB, "
                  f"ratio {results[-1]['ratio']:.3f}", flush=True)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return results


def validate_on_gpu() -> list[dict[str, Any]]:
    """gemma-3-4b at real size on CUDA: one measured training step per configuration that fits."""
    import torch

    from theworld.memory.configs import load_model_config
    from theworld.memory.estimate import StepSetup, estimate_memory
    from theworld.memory.measure import measure_step

    config = load_model_config("google/gemma-3-4b-it", world_image_size=WORLD_IMAGE_SIZE, world_tokens_per_frame=WORLD_TOKENS)
    capacity = torch.cuda.get_device_properties(0).total_memory
    results = []
    for stage, name, _, _ in CONFIGURATIONS:
        for checkpointing in (True, False):
            setup = StepSetup(stage=stage, batch_size=BATCH, seq_len=SEQ_LEN, gradient_checkpointing=checkpointing)
            estimate = estimate_memory(config, setup)
            entry = {"case": f"{name} ({stage}){' + checkpointing' if checkpointing else ''}",
                     "estimate_bytes": estimate.peak_bytes}  # fmt: skip
            if estimate.peak_bytes > 0.9 * capacity:
                entry["skipped"] = f"estimate {estimate.peak_bytes / 2**30:.0f} GiB > 90% of the GPU's {capacity / 2**30:.0f} GiB"
            else:
                measured = measure_step(config, setup, {}, device="cuda")
                entry.update(measured_bytes=measured.peak_bytes, ratio=estimate.peak_bytes / measured.peak_bytes)
                torch.cuda.empty_cache()
            results.append(entry)
            print(f"  {entry}", flush=True)
    return results


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: validate on small models; cuda: measure gemma-3-4b on the GPU")
    parser.add_argument("--cases", nargs="*", default=None, help="validation cases to run (default: all)")
    parser.add_argument("--json", default=None, help="write the results here (used by run_all.py)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)

    print("gemma-3-4b, batch 8, 512 px, 256 world tokens, 1024 tokens per sample (GiB, torch tensors):")
    gemma = gemma3_4b_estimates()
    for row in gemma:
        print(f"  {row['configuration']:28s} stage {row['stage']:8s}: {_gib(row['plain']['peak_bytes']):>6s} without, "
              f"{_gib(row['checkpointing']['peak_bytes']):>5s} with gradient checkpointing; documented {row['documented']}")
    payload: dict[str, Any] = {"gemma3_4b": gemma, "machine": machine_description(), "figures": []}
    if args.device == "cuda":
        payload["gpu"] = validate_on_gpu()
    else:
        print("estimate vs measured peak, small random models on the CPU:")
        results = validate_on_cpu(args.cases)
        worst = max(abs(r["ratio"] - 1) for r in results)
        payload["validation"] = results
        payload["vae"] = validate_vae_on_cpu()
        payload["figures"] = [Figure(
            name=f"training-step peak memory, estimate / measured: worst of {len(results)} small-model cases",
            value=max(results, key=lambda r: abs(r["ratio"] - 1))["ratio"], target=f"within 1 +- {TOLERANCE:g}",
            passed=worst <= TOLERANCE, command=command_line(argv=argv),
            note="ratios " + ", ".join(f"{r['ratio']:.3f}" for r in results) + "; see 'Training memory' below",
        )]  # fmt: skip
        print(payload["figures"][0].line())
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
