"""A rollout is, by definition, the official pipeline's latent output on that clip alone.

`WorldModel.imagine` must equal the last K latent frames of `Cosmos2VideoToWorldPipeline(...,
output_type="latent")` called on the same clip with num_frames = clip frames + 4K, the same prompt,
steps, guidance and `generator=torch.Generator().manual_seed(seed)`, divided by the pipeline's
sigma_data (fp32, tiny random components, 1e-4 relative). Each clip of a batch is compared with
its own pipeline call, so this also pins that a clip's rollout does not depend on its batch.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import Cosmos2VideoToWorldPipeline

from theworld.testing.tiny_world_model import TinyTestSafetyChecker

from .conftest import SEQ, SIZE, pixels_of, random_clip, set_up, settings


@pytest.fixture(scope="module")
def pipeline(tiny_world_dir):
    pipe = Cosmos2VideoToWorldPipeline.from_pretrained(tiny_world_dir, safety_checker=TinyTestSafetyChecker())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def official(pipe, clip, rollout, prompt: str, negative_prompt: str | None) -> torch.Tensor:
    """The pipeline's last K latent frames for one clip, in the world encoder's normalisation."""
    inputs = dict(image=clip[0]) if len(clip) == 1 else dict(video=clip)
    out = pipe(
        **inputs,
        prompt=prompt,
        negative_prompt=negative_prompt,
        height=SIZE,
        width=SIZE,
        num_frames=len(clip) + 4 * rollout.frames,
        num_inference_steps=rollout.steps,
        guidance_scale=rollout.guidance,
        generator=torch.Generator().manual_seed(rollout.seed),
        output_type="latent",
        max_sequence_length=SEQ,
    ).frames
    return out[:, :, -rollout.frames :] / pipe.scheduler.config.sigma_data


def assert_relative_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    error = (actual - expected).norm() / expected.norm()
    assert error < rel, f"relative error {error:.2e}"


@pytest.mark.parametrize(
    "case",
    [
        dict(frames=5, guidance=1.0, seed=0, K=2),  # no guidance: one DiT pass per step
        dict(frames=5, guidance=3.0, seed=7, K=1, prompt="a ball moves"),  # guidance: default negative prompt
        dict(frames=9, guidance=2.0, seed=3, K=1, negative_prompt="static scene"),  # configured negative prompt
        dict(frames=1, guidance=1.0, seed=5, K=3),  # an image, given to the pipeline as `image=`
    ],
    ids=["clip-no-cfg", "clip-cfg-default-negative", "long-clip-cfg-negative", "image"],
)
def test_imagine_equals_pipeline_per_clip(tiny_world_dir, pipeline, case):
    prompt, negative = case.get("prompt", ""), case.get("negative_prompt")
    rollout = settings(frames=case["K"], guidance=case["guidance"], seed=case["seed"], prompt=prompt,
                       negative_prompt=negative)  # fmt: skip
    checker = TinyTestSafetyChecker()
    world = set_up(tiny_world_dir, rollout, checker)
    clips = [random_clip(10 + i, case["frames"]) for i in range(2)]
    imagined = world.imagine(pixels_of(clips))
    assert imagined.shape == (2, 16, case["K"], SIZE // 8, SIZE // 8)
    for i, clip in enumerate(clips):
        expected = official(pipeline, clip, rollout, prompt, negative)
        assert_relative_close(imagined[i : i + 1], expected)
    assert checker.checked_texts == [prompt] and checker.checked_videos == 0


def test_pipeline_default_negative_prompt_is_ours(tiny_world_dir, pipeline):
    """With guidance > 1 and no negative prompt configured, both sides use DEFAULT_NEGATIVE_PROMPT."""
    from diffusers.pipelines.cosmos.pipeline_cosmos2_video2world import DEFAULT_NEGATIVE_PROMPT

    world = set_up(tiny_world_dir, settings(guidance=2.0))
    assert world.text.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    _, negative = pipeline.encode_prompt("", do_classifier_free_guidance=True, max_sequence_length=SEQ)
    torch.testing.assert_close(world.text.negative_prompt_embeds, negative)  # two T5 instances: float-close
