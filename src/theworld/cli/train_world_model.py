"""`theworld train-world-model --config FILE [--key value ...]`: post-train the Cosmos DiT on clips.

The config keys are `WorldModelTrainingArguments`: every `TrainingArguments` field plus the
world-model ones (cosmos_model_name, transformer_config, train_data, observed_frames,
rollout_frames, prompt, ...; see docs/rollout.md). `--key value` overrides the file.
Multi-process: `accelerate launch -m theworld train-world-model --config FILE`.
"""

from __future__ import annotations

import argparse

_REST = "_rest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML or JSON file of settings (keys: docs/rollout.md)")

    def parse_args(args=None, namespace=None):
        known, rest = parser.parse_known_args(args, namespace)
        setattr(known, _REST, rest)
        return known

    parser.parse_args = parse_args  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from theworld.world_model.training import read_arguments, train_world_model

    arguments = read_arguments(args.config, getattr(args, _REST, []))
    result = train_world_model(arguments)
    print(f"trained the world model for {result.global_step} steps; Cosmos repo in {result.output_dir}")
    return 0
