"""`theworld estimate-memory --model M --stage S --batch-size B --seq-len L`: what one training step needs.

Weights, gradients, AdamW states, activations (per layer, with or without gradient checkpointing),
the VAE encoder (or none with a latent cache), the world projector and the loss's logits, as a
table and a peak, from the model's config alone: nothing is downloaded or allocated. `--model`
is a local checkpoint folder (Gemma 3 or TheWorld) or a known id (google/gemma-3-4b-it).
The figures are torch tensor memory (what `torch.cuda.max_memory_allocated` reports); the CUDA
context and the allocator's fragmentation come on top (typically 1-3 GB on a GPU).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from theworld.errors import TheWorldUserError
from theworld.training.config import STAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local Gemma 3 / TheWorld folder, or google/gemma-3-4b-it")
    parser.add_argument("--stage", default="align", choices=STAGES)
    parser.add_argument("--batch-size", type=int, default=1, help="per-device batch size")
    parser.add_argument("--seq-len", type=int, default=1024,
                        help="tokens per sample, image and world blocks included (max_length)")
    parser.add_argument("--supervised-tokens", type=int, default=64, help="answer tokens per sample (get logits)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--lora", action="store_true", help="LoRA on the language model (stages finetune, full)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16",
                        help="bf16: `bf16: true` (frozen weights bf16, trainable fp32 masters, autocast)")
    parser.add_argument("--attn-implementation", choices=("sdpa", "eager"), default="sdpa")
    parser.add_argument("--images", type=int, choices=(0, 1), default=1, help="Gemma images per sample")
    parser.add_argument("--world-frames", type=int, default=1, help="frames per world clip (4k+1); 0: no world input")
    parser.add_argument("--world-image-size", type=int, default=None, help="VAE input side (default: the model's, 512)")
    parser.add_argument("--world-tokens", type=int, default=None,
                        help="world tokens per latent frame (default: the model's, 256)")
    parser.add_argument("--latent-cache", action="store_true",
                        help="latents come from `theworld cache-latents`: the VAE is neither loaded nor run")
    parser.add_argument("--cosmos", default=None,
                        help="VAE config: a local Cosmos / VAE folder (default: the Cosmos-Predict2 VAE)")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="whose kernels to model")
    parser.add_argument("--unit", choices=("GiB", "MiB"), default="GiB")
    parser.add_argument("--json", default=None, help="also write the estimate here as JSON")


def setup_from_args(args: argparse.Namespace):
    from theworld.memory.estimate import StepSetup

    return StepSetup(
        stage=args.stage, batch_size=args.batch_size, seq_len=args.seq_len, supervised_tokens=args.supervised_tokens,
        images=args.images, world_frames=args.world_frames, latent_cache=args.latent_cache, bf16=args.dtype == "bf16",
        gradient_checkpointing=args.gradient_checkpointing, lora=args.lora, lora_r=args.lora_r,
        attn_implementation=args.attn_implementation, gradient_accumulation_steps=args.gradient_accumulation_steps,
        device=args.device,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from theworld.memory.configs import load_model_config, load_vae_config
    from theworld.memory.estimate import estimate_memory

    try:
        config = load_model_config(args.model, world_image_size=args.world_image_size,
                                   world_tokens_per_frame=args.world_tokens)  # fmt: skip
    except ValueError as err:  # the config's own validation (e.g. world tokens that do not tile the latents)
        raise TheWorldUserError(f"--model {args.model}: {err}") from None
    if args.world_frames > config.world_num_frames:
        raise TheWorldUserError(
            f"--world-frames {args.world_frames}: the model takes clips of at most world_num_frames="
            f"{config.world_num_frames} frames"
        )
    vae = None if args.latent_cache else load_vae_config(args.cosmos)
    setup = setup_from_args(args)
    estimate = estimate_memory(config, setup, vae)
    layout = estimate.layout
    scale = 2**30 if args.unit == "GiB" else 2**20
    extras = [f"batch {setup.batch_size} x {setup.seq_len} tokens", args.dtype]
    extras += ["gradient checkpointing"] * setup.gradient_checkpointing + [f"LoRA r={setup.lora_r}"] * setup.lora
    extras += ["latent cache"] * setup.latent_cache
    print(f"TheWorld on {args.model}, stage {setup.stage}: {', '.join(extras)}")
    print(f"  per sample: {layout.image_tokens} image + {layout.world_tokens} world + {layout.text_tokens} text tokens "
          f"(+ BOS and block markers), {layout.supervised} supervised")  # fmt: skip
    print(f"  trainable parameters: {estimate.parameters['trainable']:,} of {estimate.parameters['total']:,}")
    print()
    print(estimate.table(args.unit))
    print()
    print(f"peak: {estimate.peak_bytes / scale:,.2f} {args.unit} of torch tensors ({estimate.peak_phase}); "
          "add the CUDA context and allocator slack (typically 1-3 GB) for nvidia-smi")  # fmt: skip
    if setup.gradient_checkpointing and setup.stage in ("align", "finetune") and args.device == "cuda":
        print(f"caution: measured on an H200 at gemma-3-4b (batch 8 x 1024), stage {setup.stage} with gradient "
              "checkpointing peaked about 21 GiB above this estimate, cause not yet found (BENCHMARKS.md)")  # fmt: skip
    if args.json:
        payload = {"model": args.model, "setup": asdict(setup), "layout": asdict(layout),
                   "peak_bytes": estimate.peak_bytes, "peak_phase": estimate.peak_phase,
                   "rows": [asdict(r) for r in estimate.rows], "parameters": estimate.parameters,
                   "per_layer": estimate.per_layer}  # fmt: skip
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return 0
