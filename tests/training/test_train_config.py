"""`theworld train` config: every user mistake is exit code 2 with a message naming the key or file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from theworld.cli.main import main
from theworld.errors import TheWorldUserError
from theworld.training.config import FIELD_NAMES, STAGES, TrainConfig, load_config

REPO = Path(__file__).resolve().parents[2]


def _cli_error(capsys, argv: list[str]) -> str:
    code = main(["train", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


def test_unknown_key_in_file_suggests_the_close_match(capsys, train_config_values, write_config):
    path = write_config({**train_config_values, "max_stpes": 3})
    err = _cli_error(capsys, ["--config", path])
    assert "unknown config key 'max_stpes'" in err and "did you mean 'max_steps'?" in err
    assert path in err


def test_unknown_key_on_command_line_suggests_the_close_match(capsys, train_config_values, write_config):
    path = write_config(train_config_values)
    err = _cli_error(capsys, ["--config", path, "--learning_rat", "1e-3"])
    assert "unknown config key 'learning_rat' in the command line; did you mean 'learning_rate'?" in err
    # an abbreviation is not silently taken for the full key
    err = _cli_error(capsys, ["--config", path, "--max_step", "3"])
    assert "did you mean 'max_steps'?" in err


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("max_steps", "ten", "max_steps: expected an integer, got 'ten'"),
        ("bf16", "maybe", "bf16: expected true or false"),
        ("learning_rate", [1], "learning_rate: expected a number"),
        ("lora_target_modules", 5, "lora_target_modules: expected a list of strings"),
    ],
)
def test_wrong_type_names_the_key(capsys, train_config_values, write_config, key, value, message):
    err = _cli_error(capsys, ["--config", write_config({**train_config_values, key: value})])
    assert message in err


def test_missing_files_are_named(capsys, train_config_values, write_config, tmp_path):
    missing_config = str(tmp_path / "nope.yaml")
    assert f"config file {missing_config} does not exist" in _cli_error(capsys, ["--config", missing_config])
    missing_data = str(tmp_path / "absent.json")
    path = write_config({**train_config_values, "train_data": missing_data})
    assert f"train_data: data file {missing_data} does not exist" in _cli_error(capsys, ["--config", path])
    path = write_config({**train_config_values, "resume_from_checkpoint": str(tmp_path / "checkpoint-9")})
    assert "resume_from_checkpoint: checkpoint folder" in _cli_error(capsys, ["--config", path])


def test_bad_stage_and_incompatible_choices(capsys, train_config_values, write_config):
    err = _cli_error(capsys, ["--config", write_config({**train_config_values, "stage": "alignn"})])
    assert "stage: unknown value 'alignn'; did you mean 'align'?" in err
    err = _cli_error(capsys, ["--config", write_config({**train_config_values, "enable_world": False})])
    assert "stage=align trains only the world projector" in err
    err = _cli_error(capsys, ["--config", write_config({**train_config_values, "use_lora": True})])
    assert "use_lora=true needs stage=finetune or full" in err
    err = _cli_error(capsys, ["--config", write_config({**train_config_values, "stage": "vision", "use_lora": True})])
    assert "use_lora=true needs stage=finetune or full: stage vision trains no language model" in err
    err = _cli_error(capsys, ["--config", write_config({**train_config_values, "on_truncated": "cut"})])
    assert "on_truncated: unknown value 'cut'" in err


def test_values_are_coerced_from_yaml_and_command_line(train_config_values, write_config):
    path = write_config({**train_config_values, "learning_rate": "1e-4"})  # PyYAML reads 1e-4 as a string
    config = load_config(
        path,
        {
            "bf16": "true",
            "max_steps": "7",
            "lora_target_modules": "q_proj,v_proj",
            "save_total_limit": "null",
            "report_to": "tensorboard",
            "num_train_epochs": "2",
        },
    )
    assert config.learning_rate == 1e-4 and config.bf16 is True and config.max_steps == 7
    assert config.lora_target_modules == ["q_proj", "v_proj"] and config.save_total_limit is None
    assert config.report_to == ["tensorboard"] and config.num_train_epochs == 2.0
    # the stage's default learning rate when none is set
    del train_config_values["learning_rate"]
    assert load_config(write_config(train_config_values)).effective_learning_rate() == 1e-3
    vision = load_config(write_config({**train_config_values, "stage": "vision"}))
    assert vision.effective_learning_rate() == 2e-5  # SigLIP is pretrained: a fine-tuning rate, as in full


def test_every_key_is_a_cli_flag(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for name in FIELD_NAMES:
        assert f"--{name}" in out


def test_help_shows_each_keys_type_default_and_meaning(capsys):
    import dataclasses

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    squeezed = "".join(capsys.readouterr().out.split())  # argparse wraps lines at spaces and hyphens
    expected = {
        "max_steps": ("INT", "int; default: -1", "optimizer steps"),
        "learning_rate": ("FLOAT", "float or null; default: null", "the stage's default"),
        "stage": ("STR", "str; default: align", ", ".join(STAGES)),
        "bf16": ("BOOL", "bool; default: false", "trainable weights stay fp32"),
        "report_to": ("LIST", "list of str; default: none", "comma-separated"),
        "cosmos_model_name": ("STR", "default: nvidia/Cosmos-Predict2-2B-Video2World", "world model"),
    }
    for name, parts in expected.items():
        for part in parts:
            assert "".join(part.split()) in squeezed, (name, part)
    for spec in dataclasses.fields(TrainConfig):  # every key explains itself, from the dataclass
        assert spec.metadata.get("help"), spec.name
        assert "".join(f"--{spec.name}".split()) in squeezed
        assert "".join(spec.metadata["help"].split()) in squeezed, spec.name


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    config = load_config(path, check_paths=False)
    assert isinstance(config, TrainConfig)
    assert config.model_name_or_path.startswith("google/gemma-3") or config.stage != "align"


def test_python_dash_m_reports_user_errors_without_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "theworld", "train", "--config", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "theworld train: error: config file" in proc.stderr and "Traceback" not in proc.stderr


def test_config_errors_are_user_errors(train_config_values):
    from theworld.training.config import build_config

    with pytest.raises(TheWorldUserError, match="output_dir is required"):
        build_config({k: v for k, v in train_config_values.items() if k != "output_dir"})


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))  # accelerate's own reader rejects unknown keys
    assert config.mixed_precision == "bf16"
    assert path.stem.split("_")[0] in str(config.distributed_type).lower() or path.stem == "ddp"


def test_mistyped_relative_model_folder_is_named(capsys, train_config_values, write_config, tmp_path, monkeypatch):
    """'runs/gemmma' with ./runs present is a missing folder, not a Hub repo to try (and fail to reach)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    path = write_config({**train_config_values, "model_name_or_path": "runs/gemmma"})
    assert "model_name_or_path: runs/gemmma does not exist" in _cli_error(capsys, ["--config", path])


@pytest.mark.parametrize("name, text", [("bad.yaml", "stage: [align\n"), ("bad.json", "{\"stage\": "), ("bad.yaml", b"\xff\xfe stage")])
def test_unparsable_config_files_are_user_errors_naming_the_file(tmp_path, name, text):
    from theworld.training.config import read_config_file

    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(TheWorldUserError, match=f"config file {path} could not be parsed"):
        read_config_file(path)
