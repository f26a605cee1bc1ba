"""`theworld train --config FILE [--key value ...]`: train one stage (align / vision / finetune / full).

Every config key (`TrainConfig`: transformers' `TrainingArguments` plus TheWorld's own) can be given
or overridden on the command line as `--key value` (or `--key=value`; dashes and underscores are
interchangeable). Multi-process:
`accelerate launch --num_processes N [--config_file configs/accelerate/ddp.yaml] -m theworld train --config FILE`.
See docs/training.md.
"""

from __future__ import annotations

import argparse

from theworld.training.config import FIELD_NAMES, key_default, key_help, key_type, parse_override_args

_UNKNOWN = "_unknown_arguments"


def add_config_keys(parser: argparse.ArgumentParser, title: str, dest_prefix: str = "key__") -> None:
    """Every config key as `--key VALUE` (and `--dashed-key`), shown with its type, default and meaning."""
    group = parser.add_argument_group(title)
    taken = set(parser._option_string_actions)  # e.g. `--log-level`, the CLI's own flag (TrainingArguments has log_level)
    for name in FIELD_NAMES:
        kind = key_type(name)
        text = f"{key_help(name)} ({kind}; default: {key_default(name)})".replace("%", "%%")
        group.add_argument(
            f"--{name}", dest=dest_prefix + name, metavar=kind.split()[0].upper(), default=argparse.SUPPRESS, help=text
        )
        dashed = f"--{name.replace('_', '-')}"
        if "_" in name and dashed not in taken:  # the dashed spelling works too; listed once
            group.add_argument(dashed, dest=dest_prefix + name, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s [-h] [--config FILE] [--KEY VALUE ...]"
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of training settings (keys: below)")
    parser.allow_abbrev = False  # `--max_step` must not silently mean `--max_steps`
    add_config_keys(parser, "config keys (in the file, or here to override it; dashes or underscores)")

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
