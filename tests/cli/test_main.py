"""The `theworld` command table: every listed command runs, the top-level flags work anywhere."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import theworld
from theworld.cli.main import COMMANDS, main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_listed_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: theworld {command}")


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


def test_version_names_the_package_and_its_libraries():
    result = subprocess.run(
        [sys.executable, "-m", "theworld", "--version"], capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"theworld {theworld.__version__} (")
    for library in ("torch", "transformers", "diffusers"):
        assert f"{library} " in result.stdout


@pytest.mark.parametrize("position", ["before", "after"])
def test_log_level_before_or_after_the_command(position, tmp_path, monkeypatch):
    seen = {}

    def fake_run(args):
        seen["level"] = logging.getLogger().getEffectiveLevel()
        return 0

    monkeypatch.setattr("theworld.cli.compare.run", fake_run)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # basicConfig acts only without handlers
    flags = ["--log-level", "warning"]
    command = ["compare", "a", "b", "--output", "x.md"]
    argv = flags + command if position == "before" else command + flags
    assert main(argv) == 0
    assert seen["level"] == logging.WARNING


@pytest.mark.parametrize("position", ["before", "after"])
def test_unknown_log_level_is_refused_naming_the_flag(position, capsys):
    command, flags = ["compare", "a", "b", "--output", "x.md"], ["--log-level", "LOUD"]
    with pytest.raises(SystemExit) as exit_info:
        main(flags + command if position == "before" else command + flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--log-level" in err and "LOUD" in err
