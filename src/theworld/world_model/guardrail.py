"""The Cosmos guardrail, as `Cosmos2VideoToWorldPipeline` runs it for latent outputs. Never disabled.

Cosmos-Predict2 is released under the NVIDIA Open Model License, and diffusers refuses to run
its pipeline without a safety checker (`cosmos_guardrail.CosmosSafetyChecker`). What the pipeline
does with the checker when called with `output_type="latent"` (read from diffusers 0.42.1):

1. it refuses to run when the checker is missing;
2. it checks the *prompt* text with `check_text_safety` and raises if it is unsafe (the negative
   prompt is not checked);
3. it decodes no video, so `check_video_safety` never runs.

TheWorld's rollouts return latents only (no decoder is ever loaded), so they do exactly that:
setting up a world model requires a checker and checks its prompt. The prompt is fixed for the
life of the world model (its T5 embeddings are computed once), so that one check covers every
rollout it makes; the checker has nothing further to check and is not kept. Stored text
embeddings never skip the check: every set-up checks the prompt again.

Production takes the checker from `cosmos_guardrail` exactly as the pipeline does (the
pipeline module's own `CosmosSafetyChecker` name, built with its defaults). Tests and the demo
pass `theworld.testing.tiny_world_model.TinyTestSafetyChecker`, a test double that is refused for
any world model larger than `TEST_DOUBLE_MAX_PARAMETERS`.

Note: cosmos_guardrail 0.3.2's blocklist treats an *empty* prompt as unsafe ("Input is empty"),
so with the real checker the pipeline itself refuses `prompt=""`; give the world model a short
neutral description of the scene instead.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from torch import nn

from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install cosmos_guardrail (it downloads its guard models from the Hugging Face Hub on first use; "
    "it needs torchvision matching your torch)"
)
TEST_DOUBLE_MAX_PARAMETERS = 50_000_000
"""The test double is accepted only for world models (DiTs) at most this large: tiny test models."""


class SafetyChecker(Protocol):
    """What the pipeline calls on its `safety_checker` (cosmos_guardrail's interface)."""

    def check_text_safety(self, prompt: str) -> bool: ...


def load_cosmos_safety_checker() -> Any:
    """`CosmosSafetyChecker()` from `cosmos_guardrail`, the way `Cosmos2VideoToWorldPipeline` builds it."""
    from diffusers.pipelines.cosmos import pipeline_cosmos2_video2world as pipeline_module
    from diffusers.utils import is_cosmos_guardrail_available

    if not is_cosmos_guardrail_available():
        raise TheWorldUserError(
            "world-model rollouts need the Cosmos guardrail (the NVIDIA Open Model License requires it; "
            f"diffusers' Cosmos pipeline refuses to run without it): {INSTALL_HINT}"
        )
    # The pipeline module imports `CosmosSafetyChecker` from cosmos_guardrail when it is installed.
    return pipeline_module.CosmosSafetyChecker()


SAFETY_CHECKER_CHOICES = ("cosmos_guardrail", "tiny-test-double")
"""What the CLI's `--world-safety-checker` names: cosmos_guardrail's checker (the default), or the
test double of `theworld.testing`, which `check_world_model_prompt` refuses for any real-size DiT."""


def safety_checker_by_name(name: str) -> Any:
    """The checker a CLI flag names; None means cosmos_guardrail's, loaded where the world model is set up."""
    if name == "cosmos_guardrail":
        return None
    if name == "tiny-test-double":
        from theworld.testing.tiny_world_model import TinyTestSafetyChecker

        return TinyTestSafetyChecker()
    raise TheWorldUserError(f"--world-safety-checker: unknown checker {name!r} (valid: {', '.join(SAFETY_CHECKER_CHOICES)})")


def is_test_double(checker: Any) -> bool:
    from theworld.testing.tiny_world_model import TinyTestSafetyChecker

    return isinstance(checker, TinyTestSafetyChecker)


def check_world_model_prompt(checker: Any, prompt: str, transformer: nn.Module) -> str:
    """Run the pipeline's text check on the world model's prompt; returns the checker's name.

    Raises when there is no checker, when the test double is given a world model larger than a
    test model, or when the checker finds the prompt unsafe (as the pipeline raises).
    """
    if checker is None:
        raise TheWorldUserError(
            "a world model cannot be set up without the Cosmos safety checker (NVIDIA Open Model License); "
            "leave safety_checker unset to load cosmos_guardrail's"
        )
    if not callable(getattr(checker, "check_text_safety", None)):
        raise TheWorldUserError(
            f"safety_checker {type(checker).__name__} has no check_text_safety(prompt): give a "
            "cosmos_guardrail.CosmosSafetyChecker"
        )
    if is_test_double(checker):
        size = sum(p.numel() for p in transformer.parameters())
        if size > TEST_DOUBLE_MAX_PARAMETERS:
            raise TheWorldUserError(
                f"TinyTestSafetyChecker is a test double for tiny test world models; this DiT has {size:,} "
                f"parameters (> {TEST_DOUBLE_MAX_PARAMETERS:,}): use cosmos_guardrail ({INSTALL_HINT})"
            )
    if not checker.check_text_safety(prompt):
        hint = (
            " (cosmos_guardrail's blocklist rejects an empty prompt: set a short neutral description of the scene)"
            if not prompt
            else ""
        )
        raise TheWorldUserError(
            f"the Cosmos guardrail rejected the world model's prompt {prompt!r}{hint}; it must abide by the "
            "NVIDIA Open Model License"
        )
    name = f"{type(checker).__module__}.{type(checker).__qualname__}"
    logger.info("world-model prompt passed the guardrail (%s)", name)
    return name
