"""`theworld params MODEL [--stage STAGE [--use-lora]]`: TheWorld's parameters per component, trainable
or frozen, and their share. The model is built on the meta device from its configs alone (a 4B model
counts in seconds); `--stage` counts what that stage trains, through the same `apply_stage` as training.
"""

from __future__ import annotations

import argparse
import json

import torch

from theworld.errors import TheWorldUserError
from theworld.training.config import STAGES

GEOMETRY_FLAGS = ("world_image_size", "world_tokens_per_frame", "world_num_frames")  # of WORLD_SETTINGS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="Gemma 3 checkpoint, TheWorld folder or adapter folder (path or Hub id)")
    parser.add_argument("--cosmos-model-name", help="Cosmos-Predict2 repo or VAE folder (default: the one the model names)")
    parser.add_argument("--stage", choices=STAGES, help="count what this training stage trains")
    parser.add_argument("--use-lora", action="store_true", help="with --stage finetune/full: LoRA on the language model")
    parser.add_argument("--world-image-size", type=int, help="world frame side in pixels (default: the model's)")
    parser.add_argument("--world-tokens-per-frame", type=int, help="world tokens per latent frame (default: the model's)")
    parser.add_argument("--world-num-frames", type=int, help="longest clip in frames, 4k+1 (default: the model's)")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON instead of a table")


def build_skeleton(model: str, cosmos_model_name: str | None = None, **world_settings: int | None):
    """TheWorld as `from_pretrained(model)` would build it, on the meta device, with its world encoder if one is named."""
    from theworld.model.checkpoints import resolve
    from theworld.model.modeling import TheWorld
    from theworld.world_encoder.vae import CosmosWorldEncoder

    settings = {k: v for k, v in world_settings.items() if v is not None}
    if cosmos_model_name:
        settings["cosmos_model_name"] = cosmos_model_name
    resolved = resolve(model, **settings)
    with torch.device("meta"):
        skeleton = TheWorld(resolved.config)
    if resolved.encoder_source is not None:
        skeleton.attach_world_encoder(CosmosWorldEncoder.skeleton(resolved.encoder_source))
    return skeleton, resolved.encoder_source


def run(args: argparse.Namespace) -> int:
    from theworld.training.stages import LoraSettings, apply_stage

    if args.use_lora and args.stage not in ("finetune", "full"):
        raise TheWorldUserError("--use-lora needs --stage finetune or --stage full")
    world_settings = {k: getattr(args, k) for k in GEOMETRY_FLAGS}
    model, encoder_source = build_skeleton(args.model, args.cosmos_model_name, **world_settings)
    if args.stage:
        apply_stage(model, args.stage, use_lora=args.use_lora, lora=LoraSettings())
        what = f"stage {args.stage}{' + LoRA' if args.use_lora else ''}"
    else:
        model.apply_freezing()
        what = "as from_pretrained loads it (the config's freeze flags)"
    breakdown = model.parameter_breakdown()
    if args.json:
        print(json.dumps({"model": args.model, "world_encoder": encoder_source, "trains": what, **breakdown.to_dict()}, indent=2))
        return 0
    print(f"TheWorld from {args.model}; trainable {what}")
    if model.world_projector is not None and encoder_source is None:
        print("(no world encoder named: pass --cosmos-model-name to count the VAE encoder)")
    print(breakdown.table())
    return 0
