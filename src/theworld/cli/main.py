"""`theworld` command line: one subcommand per module in `theworld.cli`.

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`. Modules are
imported only when their command runs, so `theworld --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from theworld.errors import TheWorldUserError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("theworld.cli.train", "train TheWorld in a named stage"),
    "cache-latents": ("theworld.cli.cache_latents", "encode training images once into a latent cache"),
    "train-world-model": ("theworld.cli.train_world_model", "post-train the Cosmos world model (DiT) on clips"),
    "eval": ("theworld.cli.eval", "evaluate on a spatial benchmark, with controls"),
    "compare": ("theworld.cli.compare", "compare evaluation runs with paired statistics"),
    "parity": ("theworld.cli.parity", "compare two models' logits and find where they diverge"),
    "make-data": ("theworld.cli.make_data", "generate the synthetic 'what happens next?' clips"),
    "demo": ("theworld.cli.demo", "the end-to-end demo: data, training, controls, report"),
    "make-tiny": ("theworld.cli.make_tiny", "write tiny random Gemma 3 / Cosmos VAE checkpoints"),
    "params": ("theworld.cli.params", "parameters per component: counts, trainable or frozen, share"),
    "estimate-memory": ("theworld.cli.estimate_memory", "peak memory of a training step, from the config alone"),
    "chat": ("theworld.cli.chat", "chat with a model in the terminal (images, clips, world on/off)"),
    "serve": ("theworld.cli.serve", "OpenAI-compatible server and web page for a model"),
}


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def add_common_arguments(parser: argparse.ArgumentParser, default: str | None = "INFO") -> None:
    """Flags accepted before and after the command (`theworld --log-level DEBUG train` or `theworld
    train ... --log-level DEBUG`); after the command the default is SUPPRESS, so it keeps the earlier value."""
    parser.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, metavar="LEVEL",
        default=default if default is not None else argparse.SUPPRESS, help=f"logging level: {', '.join(LOG_LEVELS)}",
    )  # fmt: skip


def version_line() -> str:
    """`theworld X (torch Y, transformers Z, diffusers W)`: what a bug report needs, without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    from theworld import __version__

    libraries = []
    for name in ("torch", "transformers", "diffusers"):
        try:
            libraries.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            libraries.append(f"{name} not installed")
    return f"theworld {__version__} ({', '.join(libraries)})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="theworld", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version_line())
    add_common_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    top, rest = parser.parse_known_args(argv)
    module_name, help_text = COMMANDS[top.command]
    module = importlib.import_module(module_name)
    cmd_parser = argparse.ArgumentParser(prog=f"theworld {top.command}", description=help_text)
    add_common_arguments(cmd_parser, default=None)  # first: a command's own flags make way for it
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(rest)
    level = getattr(args, "log_level", top.log_level)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(module.run(args) or 0)
    except TheWorldUserError as err:
        print(f"theworld {top.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
