"""The Cosmos guardrail runs at every set-up, as the pipeline runs it for latent outputs; never bypassed."""

from __future__ import annotations

import pytest

import theworld.world_model.guardrail as guardrail
from theworld.errors import TheWorldUserError
from theworld.testing.tiny_world_model import TinyTestSafetyChecker
from theworld.world_model import WorldModel

from .conftest import set_up, settings


class RecordingChecker:
    """Stands in for cosmos_guardrail.CosmosSafetyChecker where the pipeline module would find it."""

    built = 0

    def __init__(self) -> None:
        type(self).built += 1
        self.texts: list[str] = []

    def check_text_safety(self, prompt: str) -> bool:
        self.texts.append(prompt)
        return True


def test_without_cosmos_guardrail_set_up_says_how_to_install_it(tiny_world_dir, monkeypatch):
    import diffusers.utils

    monkeypatch.setattr(diffusers.utils, "is_cosmos_guardrail_available", lambda: False)
    with pytest.raises(TheWorldUserError, match="pip install cosmos_guardrail"):
        WorldModel.from_pretrained(tiny_world_dir, settings())  # no checker given: production path


def test_production_checker_is_the_pipelines_cosmos_safety_checker(tiny_world_dir, monkeypatch):
    import diffusers.utils
    from diffusers.pipelines.cosmos import pipeline_cosmos2_video2world as pipeline_module

    monkeypatch.setattr(diffusers.utils, "is_cosmos_guardrail_available", lambda: True)
    monkeypatch.setattr(pipeline_module, "CosmosSafetyChecker", RecordingChecker)
    RecordingChecker.built = 0
    world = WorldModel.from_pretrained(tiny_world_dir, settings(prompt="a red ball"))
    assert RecordingChecker.built == 1
    assert world.guardrail.endswith("RecordingChecker")


def test_every_set_up_checks_the_prompt_and_no_video(tiny_world_dir, world):
    checker = TinyTestSafetyChecker()
    set_up(tiny_world_dir, settings(prompt="a ball bounces"), checker, text_condition=None)
    stored = world.text
    checker_again = TinyTestSafetyChecker()
    set_up(tiny_world_dir, settings(), checker_again, text_condition=stored)  # stored embeddings: still checked
    assert checker.checked_texts == ["a ball bounces"] and checker_again.checked_texts == [""]
    assert checker.checked_videos == checker_again.checked_videos == 0  # latents only: nothing decoded


def test_an_unsafe_prompt_stops_set_up(tiny_world_dir):
    with pytest.raises(TheWorldUserError, match="rejected the world model's prompt 'forbidden'"):
        set_up(tiny_world_dir, settings(prompt="forbidden"), TinyTestSafetyChecker(blocked=("forbidden",)))
    with pytest.raises(TheWorldUserError, match="rejects an empty prompt"):
        set_up(tiny_world_dir, settings(), TinyTestSafetyChecker(blocked=("",)))


def test_the_test_double_is_refused_for_a_real_size_world_model(tiny_world_dir, monkeypatch):
    monkeypatch.setattr(guardrail, "TEST_DOUBLE_MAX_PARAMETERS", 1000)  # the tiny DiT now counts as "real"
    with pytest.raises(TheWorldUserError, match="TinyTestSafetyChecker is a test double"):
        set_up(tiny_world_dir, settings())


def test_a_checker_is_required(tiny_world_dir):
    with pytest.raises(TheWorldUserError, match="no check_text_safety"):
        WorldModel.from_pretrained(tiny_world_dir, settings(), safety_checker=object())
