"""`theworld make-data`: write the synthetic "what happens next?" train and held-out splits
(`<dir>/<split>.jsonl` in the qa format, frames under `<dir>/<split>/frames/`); the held-out split
comes from `heldout_seed(--seed)`, so the splits never share a clip.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tqdm import tqdm

from theworld.data.synthetic import (
    TASKS,
    SyntheticConfig,
    SyntheticConfigError,
    count_multiple,
    heldout_seed,
    iter_clips,
    write_split,
)
from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)

# SyntheticConfig field -> the flag that sets it, so an error names what the user typed.
_FLAGS = {"image_size": "--image-size", "num_frames": "--num-frames", "tasks": "--tasks", "seed": "--seed"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True, type=Path, help="folder for the JSONL files and frames")
    parser.add_argument("--train", type=int, default=1200, help="training clips, 2 x tasks divides it (default 1200)")
    parser.add_argument("--heldout", type=int, default=300, help="held-out clips, 0 skips them (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="train seed; held-out uses seed + 1_000_003 (default 0)")
    parser.add_argument("--image-size", type=int, default=64, help="frame width and height in pixels (default 64)")
    parser.add_argument("--num-frames", type=int, default=9, help="frames per clip, 4k+1 (default 9)")
    parser.add_argument(
        "--tasks", default=",".join(TASKS), help=f"comma-separated task families (default {','.join(TASKS)})"
    )


def _config(args: argparse.Namespace) -> SyntheticConfig:
    """The config from the flags; a bad field is reported as the flag that set it."""
    tasks = tuple(name.strip() for name in args.tasks.split(",") if name.strip())
    try:
        return SyntheticConfig(image_size=args.image_size, num_frames=args.num_frames, tasks=tasks, seed=args.seed)
    except SyntheticConfigError as err:
        raise err.for_flags(_FLAGS) from None


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    multiple = count_multiple(config)
    for flag, count, minimum in (("--train", args.train, 1), ("--heldout", args.heldout, 0)):
        if count < minimum or count % multiple:
            raise TheWorldUserError(
                f"{flag}: must be a multiple of {multiple} ({len(config.tasks)} task(s) x 2 answers, so "
                f"answers are exactly balanced){' and positive' if minimum else ''}, got {count}"
            )
    out: Path = args.output_dir
    if out.exists() and not out.is_dir():
        raise TheWorldUserError(f"--output-dir: {out} exists and is not a folder")
    splits = (("train", args.train, config.seed), ("heldout", args.heldout, heldout_seed(config.seed)))
    for split, count, seed in splits:
        if count == 0:
            continue
        clips = tqdm(iter_clips(count, seed, config, split), total=count, desc=f"{split} clips", unit="clip")
        write_split(clips, out, split)
        logger.info("%s split: seed %d", split, seed)
    logger.info("synthetic data in %s: point training / evaluation at its .jsonl files", out.resolve())
    return 0
