"""A world rollout's time and memory on one CUDA GPU at the real Cosmos-Predict2-2B DiT's dimensions.

Random weights (speed and memory do not depend on the values), bf16. A rollout is what the
pipeline runs: one VAE encode of the padded clip (clip frames + 4K at 512x512), then `steps` DiT
forwards over (observed + K) latent frames, twice per step with guidance > 1. This times one VAE
encode and one DiT forward per K (median of timed repeats after warm-ups, CUDA-synchronised) and
composes the rollout from them; peak memory is `torch.cuda.max_memory_allocated` of the forward.

    python benchmarks/rollout_gpu.py --json rollout_gpu.json --markdown rollout_gpu.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from rollout_cost import TEXT_TOKENS, TRANSFORMER_2B, WAN_VAE, analytic_dit_flops  # noqa: E402


def timed(fn, warmup: int, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` runs after `warmup` runs, synchronised."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--rollout-frames", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    from diffusers import AutoencoderKLWan, CosmosTransformer3DModel

    device, dtype = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        dit = CosmosTransformer3DModel(**TRANSFORMER_2B).to(dtype).eval()
        vae = AutoencoderKLWan(**WAN_VAE).to(dtype).eval()
    weights_gib = torch.cuda.memory_allocated() / 2**30
    latent = args.image_size // 8
    text = torch.randn(1, TEXT_TOKENS, TRANSFORMER_2B["text_embed_dim"], device=device, dtype=dtype)
    rows = []
    warm = torch.randn(1, 16, 1 + max(args.rollout_frames), latent, latent, device=device, dtype=dtype)
    with torch.no_grad():  # the GPU's first forwards (clocks, kernel selection) time nothing
        for _ in range(3):
            dit(hidden_states=warm, timestep=torch.rand(1, 1, warm.shape[2], 1, 1, device=device, dtype=dtype),
                encoder_hidden_states=text, fps=16, condition_mask=torch.zeros_like(warm[:, :1]),
                padding_mask=torch.zeros(1, 1, args.image_size, args.image_size, device=device, dtype=dtype))  # fmt: skip
    for k in args.rollout_frames:
        frames = 1 + k  # one observed latent frame (an image) + K imagined
        hidden = torch.randn(1, 16, frames, latent, latent, device=device, dtype=dtype)
        timestep = torch.rand(1, 1, frames, 1, 1, device=device, dtype=dtype)
        condition = torch.zeros(1, 1, frames, latent, latent, device=device, dtype=dtype)
        condition[:, :, 0] = 1
        padding = torch.zeros(1, 1, args.image_size, args.image_size, device=device, dtype=dtype)
        pixels = torch.randn(1, 3, 1 + 4 * k, args.image_size, args.image_size, device=device, dtype=dtype)

        @torch.no_grad()
        def dit_forward() -> None:
            dit(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text, fps=16,
                condition_mask=condition, padding_mask=padding, return_dict=False)  # fmt: skip

        @torch.no_grad()
        def vae_encode() -> None:
            vae.encode(pixels)

        torch.cuda.reset_peak_memory_stats()
        dit_s = timed(dit_forward, 2, args.repeats)
        dit_peak = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
        vae_s = timed(vae_encode, 1, max(2, args.repeats // 2))
        vae_peak = torch.cuda.max_memory_allocated() / 2**30
        flops = analytic_dit_flops(TRANSFORMER_2B, frames, latent)
        rows.append({
            "K": k, "latent_frames": frames, "dit_forward_ms": dit_s * 1e3, "vae_encode_ms": vae_s * 1e3,
            "dit_tflops_per_s": flops / dit_s / 1e12,
            "rollout_no_guidance_s": args.steps * dit_s + vae_s, "rollout_guidance_s": 2 * args.steps * dit_s + vae_s,
            "dit_peak_gib": dit_peak, "vae_peak_gib": vae_peak,
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    name = torch.cuda.get_device_name()
    lines = [
        f"Measured on {name}, torch {torch.__version__}, bf16, random weights, {args.image_size}x{args.image_size}, "
        f"one observed frame, {args.steps} steps; weights (DiT + VAE) {weights_gib:.1f} GiB. "
        f"Command: `python benchmarks/rollout_gpu.py --json rollout_gpu.json --markdown rollout_gpu.md`.",
        "",
        "| K | latent frames | one DiT forward | DiT TFLOP/s (matmul count) | VAE encode (1+4K frames) | rollout, guidance 1.0 | rollout, guidance > 1 | peak memory (DiT / VAE) |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['K']} | {r['latent_frames']} | {r['dit_forward_ms']:.1f} ms | {r['dit_tflops_per_s']:.0f} | {r['vae_encode_ms']:.0f} ms "
            f"| {r['rollout_no_guidance_s']:.2f} s | {r['rollout_guidance_s']:.2f} s | {r['dit_peak_gib']:.1f} / {r['vae_peak_gib']:.1f} GiB |"
        )  # fmt: skip
    markdown = "\n".join(lines)
    print(markdown)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "rows": rows, "weights_gib": weights_gib}, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
