"""`theworld cache-latents --config train.yaml [--key value ...]`: encode a training config's images
and clips once into its `latent_cache_dir`, at the model's `world_image_size`, so training never runs
the VAE. A rerun skips what is cached; a cache for another VAE or size is refused unless `--rebuild`.
Several processes share a build under `accelerate launch` (docs/training.md, "Latent cache").
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path

import torch

from theworld.errors import TheWorldUserError
from theworld.world_model.guardrail import SAFETY_CHECKER_CHOICES

logger = logging.getLogger(__name__)

_ENCODER_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from theworld.cli.train import add_config_keys

    parser.allow_abbrev = False  # `--world_image` must not silently mean `--world_image_size`
    parser.add_argument("--config", required=True, type=Path, help="the training config (YAML or JSON)")
    parser.add_argument("--rebuild", action="store_true", help="clear a cache built for another VAE or settings")
    parser.add_argument("--batch-size", type=int, default=8, help="visuals per VAE call (default 8)")
    parser.add_argument("--shard-size", type=int, default=256, help="latents per shard file (default 256)")
    parser.add_argument("--device", default=None, help="device for the VAE (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
        help="storage dtype of the latents (default float32; bfloat16 halves the disk)",
    )  # fmt: skip
    parser.add_argument(
        "--encoder-dtype", default="auto", choices=tuple(_ENCODER_DTYPES),
        help="dtype the VAE runs in (default auto: as its weights are stored)",
    )  # fmt: skip
    parser.add_argument("--no-eval-data", action="store_true", help="cache train_data only, not eval_data")
    parser.add_argument(
        "--world-safety-checker", default="cosmos_guardrail", choices=SAFETY_CHECKER_CHOICES,
        help="with world_rollout_frames > 0: the Cosmos guardrail that checks the world model's prompt "
        "(tiny-test-double: theworld.testing's tiny world models only)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_keys(parser, "training config overrides (--key value, any key of `theworld train`)", "override__")


def run(args: argparse.Namespace) -> int:
    from theworld.training.config import load_config
    from theworld.training.dataset import load_datasets
    from theworld.processes import Processes
    from theworld.training.latent_cache import BuildStats, CacheSettings, LatentCache, fingerprint_encoder
    from theworld.training.preflight import check_dataset
    from theworld.training.sources import encoder_source, resolve_model
    from theworld.world_encoder.vae import CosmosWorldEncoder
    from theworld.world_model.guardrail import safety_checker_by_name

    if args.batch_size < 1 or args.shard_size < 1:
        raise TheWorldUserError(f"--batch-size and --shard-size must be positive, got {args.batch_size}, {args.shard_size}")
    overrides = {name.removeprefix("override__"): value for name, value in vars(args).items() if name.startswith("override__")}
    config = load_config(args.config, overrides, check_paths=False)
    if not config.latent_cache_dir:
        raise TheWorldUserError(
            f"latent_cache_dir is not set in {args.config}: set it to the folder training will read latents from "
            "(or pass --latent_cache_dir)"
        )
    if not config.enable_world:
        raise TheWorldUserError("enable_world is false: a run without world tokens has no latents to cache")
    Path(config.latent_cache_dir).mkdir(parents=True, exist_ok=True)  # validation wants it to exist
    config.validate(check_paths=True)

    world = resolve_model(config).config
    # The samples training will use: what it skips (clip lengths the world path refuses) is not cached.
    datasets = [d for d in load_datasets(config, eval_data=not args.no_eval_data) if d is not None]
    for dataset in datasets:
        data = getattr(config, f"{dataset.name}_data")
        check_dataset(dataset, world, source=f"{dataset.name}_data {data}", max_skip_fraction=config.max_skip_fraction)

    processes = Processes.from_environment()
    source = encoder_source(config)
    device = args.device or (str(processes.device) if processes.device is not None else None)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = CosmosWorldEncoder.from_pretrained(source, dtype=_ENCODER_DTYPES[args.encoder_dtype], device=device)
    settings = CacheSettings.from_model_config(world, dtype=args.dtype)
    fingerprint = fingerprint_encoder(encoder, source=source)

    def open_cache(on_stale: str) -> LatentCache:
        return LatentCache.open(config.latent_cache_dir, fingerprint, settings, on_stale=on_stale)

    # The main process alone checks, clears (--rebuild) and writes the manifest; the others then open what it made.
    opened: list[LatentCache] = []
    processes.main_first(lambda: opened.append(open_cache("rebuild" if args.rebuild else "error")))
    cache = opened[0] if opened else open_cache("error")
    if processes.is_main:
        logger.info(
            "caching world latents of %s at %dx%d into %s (%d already cached, %d process(es))",
            source, settings.world_image_size, settings.world_image_size, config.latent_cache_dir, len(cache),
            processes.count,
        )  # fmt: skip
    started = time.perf_counter()
    stats = cache.build(
        itertools.chain(*datasets), encoder, batch_size=args.batch_size, shard_size=args.shard_size,
        progress=not args.no_progress and processes.is_main, total=sum(map(len, datasets)),
        share=(processes.index, processes.count),
    )  # fmt: skip
    parts = processes.gather({"stats": vars(stats), "wall": time.perf_counter() - started})
    processes.wait()  # every shard is on disk
    if not processes.is_main:
        return 0
    total = BuildStats.total(part["stats"] for part in parts)
    wall = max(part["wall"] for part in parts)
    cached = len(open_cache("error"))  # every process's shards
    print(f"latent cache {config.latent_cache_dir}: {total.summary()}; {cached} latents in all")
    if total.encoded:
        per_process = total.encoded / total.seconds_encoding if total.seconds_encoding else float("nan")
        print(
            f"throughput: {total.encoded / wall:.2f} images/s over {processes.count} process(es) "
            f"({total.encoded} in {wall:.1f} s; the VAE alone {per_process:.2f} images/s per process, "
            f"batches of {args.batch_size} on {device.split(':')[0]})"
        )
    if world.world_rollout_frames:
        safety_checker = safety_checker_by_name(args.world_safety_checker)
        cache = open_cache("error")
        build_rollout_cache(config, world, cache, encoder, datasets, safety_checker, args.batch_size, device)
    print(f"train with the same config: theworld train --config {args.config}")
    return 0


def build_rollout_cache(config, world, latent_cache, encoder, datasets, safety_checker, batch_size, device) -> int:
    """Roll every visual out once with the run's world model into `config.rollout_cache_path()`, keyed as
    training opens it, with the world model's text condition (T5 loads only when none stored fits the prompt)."""
    from theworld.training.sources import local_or_id
    from theworld.world_model import WorldModel
    from theworld.world_model.model import resolve_world_model_folder
    from theworld.world_model.rollout_cache import RolloutCache
    from theworld.world_model.text import WorldTextCondition, text_encoder_id

    settings = world.world_rollout_settings()
    folder = config.rollout_cache_path()
    cosmos = local_or_id(config.cosmos_model_name or world.cosmos_model_name)
    text = WorldTextCondition.find(folder, settings.prompt, settings.resolved_negative_prompt, settings.max_sequence_length)
    world_folder = resolve_world_model_folder(cosmos, need_text_encoder=text is None)
    if text is not None and (world_folder / "text_encoder").is_dir() and text.text_encoder != text_encoder_id(world_folder):
        text = None  # made by another T5: embed the prompt again
    param = next(encoder.parameters())
    world_model = WorldModel.from_pretrained(
        cosmos, settings, safety_checker=safety_checker, text_condition=text, encoder=encoder,
        dtype=param.dtype, device=device,
    )  # fmt: skip
    world_model.text.save_for_prompt(folder)
    rollouts = RolloutCache.for_world_model(folder, latent_cache.settings, world_model, pixel_key=latent_cache.key_for)
    visuals = [visual for dataset in datasets for sample in dataset.samples for visual in sample.visuals()]
    started = time.perf_counter()
    count = rollouts.build(world_model, visuals, batch_size=batch_size)
    print(
        f"rollout cache {folder}: {count} visuals rolled out (K={settings.frames}, {settings.steps} steps, guidance "
        f"{settings.guidance:g}, seed {settings.seed}) in {time.perf_counter() - started:.1f} s; {len(rollouts)} in all"
    )
    return count
