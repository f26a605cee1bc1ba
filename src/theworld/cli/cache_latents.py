"""`theworld cache-latents`: encode a training config's images once into its `latent_cache_dir`.

    theworld cache-latents --config train.yaml [--key value ...] [--rebuild] [--batch-size 8]

Reads the same config file as `theworld train` (any of its keys may be overridden with
`--key value`), loads `train_data` (and `eval_data`, if set) and encodes every unique image and
clip with the world encoder the model would load, at the model's `world_image_size`. Running it
again skips what is cached (an interrupted run resumes). A cache made for another VAE or size
is refused unless `--rebuild` is given, which clears it. Then train with the same config.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from pathlib import Path

import torch

from theworld.errors import TheWorldUserError

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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_keys(parser, "training config overrides (--key value, any key of `theworld train`)", "override__")


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    return {name.removeprefix("override__"): value for name, value in vars(args).items() if name.startswith("override__")}


def run(args: argparse.Namespace) -> int:
    from theworld.training.config import load_config
    from theworld.training.dataset import load_datasets
    from theworld.training.latent_cache import CacheSettings, LatentCache, fingerprint_encoder
    from theworld.training.preflight import check_dataset
    from theworld.training.sources import encoder_source, resolve_model
    from theworld.world_encoder.vae import CosmosWorldEncoder

    if args.batch_size < 1 or args.shard_size < 1:
        raise TheWorldUserError(f"--batch-size and --shard-size must be positive, got {args.batch_size}, {args.shard_size}")
    config = load_config(args.config, _overrides(args), check_paths=False)
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

    source = encoder_source(config)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = CosmosWorldEncoder.from_pretrained(source, dtype=_ENCODER_DTYPES[args.encoder_dtype], device=device)
    settings = CacheSettings.from_model_config(world, dtype=args.dtype)
    cache = LatentCache.open(
        config.latent_cache_dir,
        fingerprint_encoder(encoder, source=source),
        settings,
        on_stale="rebuild" if args.rebuild else "error",
    )
    logger.info(
        "caching world latents of %s at %dx%d into %s (%d already cached)",
        source, settings.world_image_size, settings.world_image_size, config.latent_cache_dir, len(cache),
    )  # fmt: skip
    stats = cache.build(
        itertools.chain(*datasets), encoder, batch_size=args.batch_size, shard_size=args.shard_size,
        progress=not args.no_progress, total=sum(map(len, datasets)),
    )  # fmt: skip
    print(f"latent cache {config.latent_cache_dir}: {stats.summary()}; {len(cache)} latents in all")
    print(f"train with the same config: theworld train --config {args.config}")
    return 0
