"""`theworld train --config FILE [--key value ...]`: train one stage (align / vision / finetune / full).

Every config key can be given or overridden on the command line as `--key value` (or
`--key=value`; dashes and underscores are interchangeable). Multi-process:
`accelerate launch --num_processes N [--config_file configs/accelerate/ddp.yaml] -m theworld train --config FILE`.
See docs/training.md.
"""

from __future__ import annotations

import argparse

from theworld.training.config import FIELD_NAMES, key_default, key_help, key_type, parse_override_args

_UNKNOWN = "_unknown_arguments"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s [-h] [--config FILE] [--KEY VALUE ...]"
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of training settings (keys: below)")
    parser.allow_abbrev = False  # `--max_step` must not silently mean `--max_steps`
    group = parser.add_argument_group("config keys (in the file, or here to override it; dashes or underscores)")
    for name in FIELD_NAMES:
        kind = key_type(name)
        group.add_argument(
            f"--{name}", dest=f"key__{name}", metavar=kind.split()[0].upper(), default=argparse.SUPPRESS,
            help=f"{key_help(name)} ({kind}; default: {key_default(name)})",
        )  # fmt: skip
        if "_" in name:  # the dashed spelling works too; listed once
            group.add_argument(f"--{name.replace('_', '-')}", dest=f"key__{name}", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    # Unknown `--keys` are reported by `run` (as a user error that suggests the closest key)
    # instead of argparse's bare "unrecognized arguments".
    def parse_args(args=None, namespace=None):
        known, extras = parser.parse_known_args(args, namespace)
        setattr(known, _UNKNOWN, extras)
        return known

    parser.parse_args = parse_args  # type: ignore[method-assign]


def overrides_from_args(args: argparse.Namespace) -> dict[str, str]:
    overrides = {key[len("key__") :]: value for key, value in vars(args).items() if key.startswith("key__")}
    extras = getattr(args, _UNKNOWN, [])
    if extras:
        overrides.update(parse_override_args(extras))  # unknown names are rejected with a suggestion
    return overrides


def run(args: argparse.Namespace) -> int:
    from theworld.training.config import load_config
    from theworld.training.run import train

    config = load_config(args.config, overrides=overrides_from_args(args))
    result = train(config)
    print(f"trained stage {config.stage} for {result.global_step} steps; model in {result.output_dir}")
    return 0
