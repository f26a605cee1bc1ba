"""Every shipped training config logs only to what a plain install of theworld provides.

`report_to: tensorboard` in a config is an error at the first step when tensorboard is missing; it
used to be a dev extra only, so a user's `pip install theworld` could not run the shipped configs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "accelerate" not in p.parts)
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


def test_there_are_configs_including_the_recipe():
    assert any(p.parent.name == "recipe" for p in CONFIGS) and len(CONFIGS) >= 8


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_report_to_is_a_dependency_and_installed(path):
    from transformers.integrations import get_available_reporting_integrations

    report_to = yaml.safe_load(path.read_text()).get("report_to", "none")
    targets = [report_to] if isinstance(report_to, str) else list(report_to)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dependencies = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0] for d in project["dependencies"]}
    pinned = {line.split("==")[0] for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines() if "==" in line}
    for target in targets:
        if target == "none":
            continue
        package = PACKAGES[target]
        assert package in dependencies, f"{path}: report_to {target} needs {package} in [project] dependencies"
        assert package in pinned, f"{package} has no exact pin in requirements/constraints.txt"
        assert target in get_available_reporting_integrations(), f"{target} is not installed"
