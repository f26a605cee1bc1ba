"""What a world rollout costs at the real Cosmos-Predict2-2B Video2World DiT's dimensions.

FLOPs are counted, not estimated: the real architecture (diffusers' `CosmosTransformer3DModel`
and `AutoencoderKLWan` encoder with the 2B Video2World configuration) is built on the meta
device, so no memory is allocated, and one forward is run under `torch.utils.flop_counter`
(matmuls, convolutions and attention: what dominates). A rollout is what the pipeline runs:

- one VAE encode of the padded clip (clip frames + 4K, the pipeline encodes the padding too);
- `steps` DiT forwards over (observed + K) latent frames, twice with guidance > 1
  (the negative-prompt pass); the T5 text condition is embedded once, not per rollout.

The 2B DiT (`TRANSFORMER_2B`, from diffusers' `scripts/convert_cosmos_to_diffusers.py`,
"Cosmos-2.0-Diffusion-2B-Video2World"): 16 heads x 128 = 2048 wide, 28 layers, MLP ratio 4,
T5-11B text embeddings of dim 1024 (512 tokens), AdaLN-LoRA 256, (1, 2, 2) patches, rotary
positions only. Its `concat_padding_mask=True` adds one input channel (the torchvision-resized
padding mask), counted here as 18 patch-embedding input channels instead of 17 by setting
`in_channels=18` with the mask off: the same FLOPs, without torchvision.

    .venv/bin/python benchmarks/rollout_cost.py            # 512x512, K = 1, 2, 4, with and without guidance
    .venv/bin/python benchmarks/rollout_cost.py --observed-frames 9
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import command_line, machine_description, write_json  # noqa: E402

TRANSFORMER_2B: dict[str, Any] = dict(
    in_channels=16 + 1,
    out_channels=16,
    num_attention_heads=16,
    attention_head_dim=128,
    num_layers=28,
    mlp_ratio=4.0,
    text_embed_dim=1024,
    adaln_lora_dim=256,
    max_size=(128, 240, 240),
    patch_size=(1, 2, 2),
    rope_scale=(1.0, 3.0, 3.0),
    concat_padding_mask=True,
    extra_pos_embed_type=None,
)
WAN_VAE: dict[str, Any] = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2)  # Wan 2.1 (Cosmos-Predict2)
TEXT_TOKENS = 512  # the pipeline's max_sequence_length


def _countable(config: dict[str, Any]) -> dict[str, Any]:
    """The config with the padding-mask channel folded into in_channels (no torchvision needed)."""
    config = dict(config)
    if config.get("concat_padding_mask"):
        config["in_channels"] += 1
        config["concat_padding_mask"] = False
    return config


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def dit_forward_flops(config: dict[str, Any], latent_frames: int, latent_size: int, text_tokens: int = TEXT_TOKENS) -> int:
    """FLOPs of one DiT forward on one clip (batch 1), counted on the meta device."""
    from diffusers import CosmosTransformer3DModel

    config = _countable(config)
    with torch.device("meta"):
        model = CosmosTransformer3DModel(**config)
        hidden = torch.empty(1, config["in_channels"] - 1, latent_frames, latent_size, latent_size)
        timestep = torch.empty(1, 1, latent_frames, 1, 1)
        text = torch.empty(1, text_tokens, config["text_embed_dim"])
        mask = torch.empty(1, 1, latent_frames, latent_size, latent_size)

    def run() -> None:
        with torch.no_grad():
            model(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text, fps=16, condition_mask=mask,
                  return_dict=False)  # fmt: skip

    return count_flops(run)


def vae_encode_flops(config: dict[str, Any], frames: int, image_size: int) -> int:
    """FLOPs of the VAE encoder (what `vae.encode` runs) on one clip, counted on the meta device."""
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        vae = AutoencoderKLWan(**config)
        pixels = torch.empty(1, 3, frames, image_size, image_size)

    def run() -> None:
        with torch.no_grad():
            vae._encode(pixels)

    return count_flops(run)


def analytic_dit_flops(config: dict[str, Any], latent_frames: int, latent_size: int, text_tokens: int = TEXT_TOKENS) -> int:
    """The same count by formula (matmuls and attention only): a check on what the counter sees."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    p_t, p_h, p_w = config["patch_size"]
    n = (latent_frames // p_t) * (latent_size // p_h) * (latent_size // p_w)  # tokens
    r, m, e, s = config["adaln_lora_dim"], int(config["mlp_ratio"] * d), config["text_embed_dim"], text_tokens
    in_ch = _countable(config)["in_channels"]
    per_layer = (
        2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d  # self-attention: qkv, scores + values, out
        + 2 * n * d * d + 2 * s * e * 2 * d + 2 * 2 * n * s * d + 2 * n * d * d  # cross-attention
        + 2 * 2 * n * d * m  # MLP
        + 3 * 2 * n * (d * r + r * 3 * d)  # three AdaLN-LoRA modulations, per token
    )  # fmt: skip
    patch_in = 2 * n * in_ch * p_t * p_h * p_w * d
    final = 2 * n * (d * r + r * 2 * d) + 2 * n * d * p_t * p_h * p_w * config["out_channels"]
    time_embed = 2 * latent_frames * (d * d + d * 3 * d)  # the timestep MLP, once per frame (tiny)
    return config["num_layers"] * per_layer + patch_in + final + time_embed


def rollout_costs(
    config: dict[str, Any] = TRANSFORMER_2B,
    vae_config: dict[str, Any] = WAN_VAE,
    image_size: int = 512,
    observed_frames: int = 1,
    rollout_frames: tuple[int, ...] = (1, 2, 4),
    steps: int = 35,
    text_tokens: int = TEXT_TOKENS,
) -> list[dict[str, Any]]:
    """One row per K: FLOPs of a rollout with guidance (2 DiT passes per step) and without (1)."""
    latent_size = image_size // 8
    observed_latent = 1 + (observed_frames - 1) // 4
    rows = []
    for k in rollout_frames:
        frames = observed_latent + k
        dit = dit_forward_flops(config, frames, latent_size, text_tokens)
        vae = vae_encode_flops(vae_config, observed_frames + 4 * k, image_size)
        rows.append({
            "K": k,
            "latent_frames": frames,
            "tokens": frames * (latent_size // config["patch_size"][1]) * (latent_size // config["patch_size"][2]),
            "dit_forward_tflops": dit / 1e12,
            "dit_forward_analytic_tflops": analytic_dit_flops(config, frames, latent_size, text_tokens) / 1e12,
            "vae_encode_tflops": vae / 1e12,
            "rollout_no_guidance_tflops": (steps * dit + vae) / 1e12,
            "rollout_guidance_tflops": (2 * steps * dit + vae) / 1e12,
        })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]], steps: int) -> str:
    lines = [
        f"| K | latent frames | DiT tokens | one DiT forward (TFLOP) | VAE encode (TFLOP) | rollout, guidance 1.0 ({steps} passes) | rollout, guidance > 1 ({2 * steps} passes) |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['K']} | {r['latent_frames']} | {r['tokens']} | {r['dit_forward_tflops']:.2f} | {r['vae_encode_tflops']:.2f} "
            f"| {r['rollout_no_guidance_tflops']:.1f} TFLOP | {r['rollout_guidance_tflops']:.1f} TFLOP |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--observed-frames", type=int, default=1, help="frames of the observed clip (1 = an image)")
    parser.add_argument("--rollout-frames", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = rollout_costs(image_size=args.image_size, observed_frames=args.observed_frames,
                         rollout_frames=tuple(args.rollout_frames), steps=args.steps)  # fmt: skip
    print(f"Rollout cost at Cosmos-Predict2-2B Video2World's dimensions, {args.image_size}x{args.image_size}, "
          f"observed clip of {args.observed_frames} frame(s), {args.steps} steps (FLOPs counted on the meta device)")  # fmt: skip
    print(table(rows, args.steps))
    for r in rows:
        print(f"K={r['K']}: counted {r['dit_forward_tflops']:.3f} vs formula {r['dit_forward_analytic_tflops']:.3f} TFLOP per DiT forward")
    print(f"command: {command_line()}")
    write_json(args.json, {"rows": rows, "steps": args.steps, "image_size": args.image_size,
                           "observed_frames": args.observed_frames, "machine": machine_description()})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
