"""`theworld cache-latents` throughput in images/s: one image per VAE call, batched calls, and processes.

Runs the command as a user does (a training config, a fresh cache folder each time) and reads the
throughput line it prints, for: one process at `--batch-size 1`, one process at `--batch-size B`,
and `--processes P` processes at `--batch-size B` (`accelerate launch --multi_gpu`, gloo on a CPU).
Every process runs one torch thread (OMP_NUM_THREADS=1), so P processes use P cores. The three
variants run in rounds of alternating order (A B C, C B A, ...) and each reports its median. The VAE is
the full-size Wan 2.1 / Cosmos-Predict2 architecture with random weights (`--vae full`, speed
does not depend on the values) or the tiny test VAE (`--vae tiny`); the language model is the
tiny one (cache-latents never runs it).

    .venv/bin/python benchmarks/cache_throughput.py                       # full-size VAE, 128x128, CPU
    .venv/bin/python benchmarks/cache_throughput.py --size 512 --images 256 --batch-size 16 --processes 8   # GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, command_line, machine_description, write_json  # noqa: E402

THROUGHPUT = re.compile(r"throughput: (?P<rate>[\d.]+) images/s over (?P<procs>\d+) process\(es\) \((?P<n>\d+) in (?P<wall>[\d.]+) s; "
                        r"the VAE alone (?P<vae>[\d.na]+) images/s per process")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(workdir: Path, vae: str, images: int, size: int) -> Path:
    """A tiny Gemma, the VAE, `images` random pictures and a training config naming them; returns the config."""
    import numpy as np
    import torch
    from PIL import Image

    from theworld.testing.tiny import make_tiny_gemma, make_tiny_vae

    gemma = make_tiny_gemma(workdir / "gemma")
    if vae == "tiny":
        vae_dir = make_tiny_vae(workdir / "vae")
    else:
        from diffusers import AutoencoderKLWan

        torch.manual_seed(0)
        vae_dir = workdir / "vae"
        AutoencoderKLWan().save_pretrained(vae_dir)  # default config: the Cosmos-Predict2 / Wan 2.1 VAE
    records = []
    for i in range(images):
        pixels = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(workdir / f"img{i}.png")
        records.append({"id": str(i), "question": "What is there?", "answer": "a ball", "image": f"img{i}.png"})
    (workdir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = workdir / "train.yaml"
    config.write_text(
        f"model_name_or_path: {gemma}\ncosmos_model_name: {vae_dir}\ntrain_data: {workdir / 'train.jsonl'}\n"
        f"output_dir: {workdir / 'out'}\nworld_image_size: {size}\nworld_tokens_per_frame: 16\n"
    )
    return config


def run_cache_latents(config: Path, cache_dir: Path, batch_size: int, processes: int, device: str | None) -> dict[str, Any]:
    args = ["cache-latents", "--config", str(config), "--latent_cache_dir", str(cache_dir), "--batch-size", str(batch_size),
            "--no-progress", *(["--device", device] if device and processes == 1 else [])]  # fmt: skip
    if processes == 1:
        command = [sys.executable, "-m", "theworld", *args]
    else:
        command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(_free_port()), "-m", "theworld", *args]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    match = THROUGHPUT.search(result.stdout)
    if match is None:
        raise RuntimeError(f"no throughput line in:\n{result.stdout}")
    return {"images_per_s": float(match["rate"]), "vae_images_per_s_per_process": float(match["vae"]),
            "images": int(match["n"]), "build_s": float(match["wall"]), "command_s": time.perf_counter() - started,
            "batch_size": batch_size, "processes": processes, "line": match.group(0)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", default="full", choices=("full", "tiny"))
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=128, help="world_image_size (default 128; training uses 512)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the three variants, alternating order (default 2)")
    parser.add_argument("--device", default=None, help="one process's device (default: cuda if available)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="theworld_cache_tp_") as tmp:
        workdir = Path(tmp)
        config = prepare(workdir, args.vae, args.images, args.size)
        variants = [(1, 1), (args.batch_size, 1), (args.batch_size, args.processes)]
        measured: dict[int, list[dict[str, Any]]] = {k: [] for k in range(len(variants))}
        for round_ in range(args.repeats):  # A B C, C B A, ...: a load change hits every variant alike
            order = range(len(variants)) if round_ % 2 == 0 else reversed(range(len(variants)))
            for k in order:
                batch, procs = variants[k]
                run = run_cache_latents(config, workdir / f"cache{k}-{round_}", batch, procs, args.device)
                print(f"batch {batch}, {procs} process(es): {run['line']}", flush=True)
                measured[k].append(run)
    runs = []
    for k in range(len(variants)):  # the run of median throughput of each variant
        ordered = sorted(measured[k], key=lambda r: r["images_per_s"])
        runs.append({**ordered[(len(ordered) - 1) // 2], "all_images_per_s": [r["images_per_s"] for r in measured[k]]})
    label = f"{args.vae}-size VAE, {args.size}x{args.size}, {args.images} images"
    batched = runs[1]["images_per_s"] / runs[0]["images_per_s"]
    scaled = runs[2]["images_per_s"] / runs[1]["images_per_s"]
    command = command_line(argv=argv)
    details = {"runs": runs, "vae": args.vae, "size": args.size}
    figures = [
        Figure(f"cache-latents images/s, batch {args.batch_size} / batch 1 ({label})", batched, "n/a", None, command,
               details=details, note=f"{runs[1]['images_per_s']:.2f} vs {runs[0]['images_per_s']:.2f} images/s (median of {args.repeats}), one process"),
        Figure(f"cache-latents images/s, {args.processes} processes / 1 ({label}, batch {args.batch_size})", scaled,
               f"n/a (ideal {args.processes})", None, command, details=details,
               note=f"{runs[2]['images_per_s']:.2f} vs {runs[1]['images_per_s']:.2f} images/s (median of {args.repeats}), one torch thread per process"),
    ]  # fmt: skip
    for figure in figures:
        print(figure.line() + f"\n  {figure.note}")
    write_json(args.json, {"figures": figures, "machine": machine_description()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
