"""`theworld make-tiny --output-dir DIR`: the tiny random Gemma 3 and Cosmos-style VAE of the tests
(`theworld.testing.tiny`) under the Hub ids the README and `configs/` name, so that their commands
run offline from DIR. Random weights: for trying the tools, not for judging a model.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)

GEMMA_ID = "google/gemma-3-4b-it"
COSMOS_ID = "nvidia/Cosmos-Predict2-2B-Video2World"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True, type=Path, help=f"folder to hold {GEMMA_ID}/ and {COSMOS_ID}/")
    parser.add_argument("--gemma-name", default=GEMMA_ID, help=f"subfolder for the tiny Gemma 3 (default {GEMMA_ID})")
    parser.add_argument("--cosmos-name", default=COSMOS_ID, help=f"subfolder for the tiny VAE (default {COSMOS_ID})")
    parser.add_argument("--seed", type=int, default=0, help="seed of both models' random weights (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace checkpoints already in those folders")


def _target(root: Path, name: str, flag: str, overwrite: bool) -> Path:
    """`root/name`, checked: a relative name that stays inside root, and no checkpoint there unless --overwrite."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise TheWorldUserError(f"{flag}: give a relative folder name inside --output-dir, got {name!r}")
    path = root / name
    if path.exists() and not path.is_dir():
        raise TheWorldUserError(f"{flag}: {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise TheWorldUserError(f"{flag}: {path} is not empty (pass --overwrite to replace what is there)")
    return path


def run(args: argparse.Namespace) -> int:
    from theworld.testing.tiny import TINY_WORLD_SETTINGS, TinyGemmaSpec, TinyVAESpec, make_tiny_gemma, make_tiny_vae

    root: Path = args.output_dir
    if root.exists() and not root.is_dir():
        raise TheWorldUserError(f"--output-dir: {root} exists and is not a folder")
    if args.seed < 0:
        raise TheWorldUserError(f"--seed: must be >= 0, got {args.seed}")
    gemma = _target(root, args.gemma_name, "--gemma-name", args.overwrite)
    cosmos = _target(root, args.cosmos_name, "--cosmos-name", args.overwrite)
    if gemma.resolve() == cosmos.resolve():
        raise TheWorldUserError("--gemma-name and --cosmos-name must name different folders")
    make_tiny_gemma(gemma, TinyGemmaSpec(seed=args.seed))
    make_tiny_vae(cosmos, TinyVAESpec(seed=args.seed))
    world = " ".join(f"--{key} {value}" for key, value in TINY_WORLD_SETTINGS.items())
    print(f"tiny Gemma 3: {gemma}\ntiny Cosmos-style VAE: {cosmos / 'vae'}")
    print(f"from {root}, commands naming {args.gemma_name} / {args.cosmos_name} load them; tiny world settings: {world}")
    return 0
