"""`RolloutSettings`: everything that decides a rollout besides the world model and the clip.

The names mirror `Cosmos2VideoToWorldPipeline.__call__` (frames = K imagined latent frames, i.e.
`num_frames` = clip frames + 4K; steps = `num_inference_steps`; guidance = `guidance_scale`;
seed -> `generator=torch.Generator().manual_seed(seed)`), with the pipeline's defaults where it
has one. The integration into TheWorld's config maps `world_rollout_*` fields onto these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from theworld.errors import TheWorldUserError

PIPELINE_MAX_SEQUENCE_LENGTH = 512  # Cosmos2VideoToWorldPipeline.__call__'s default
PIPELINE_FPS = 16  # idem: the DiT's rotary time positions are scaled by fps


@dataclass(frozen=True)
class RolloutSettings:
    """How a clip is rolled out. Frozen: a world model is set up for one text condition."""

    frames: int = 1
    """K: imagined latent frames (each stands for 4 video frames)."""
    steps: int = 35
    """Sampler steps (one DiT forward each, two with guidance)."""
    guidance: float = 7.0
    """Classifier-free guidance scale; 1.0 = none (half the cost)."""
    seed: int = 0
    """Each clip's rollout uses its own `torch.Generator().manual_seed(seed)`."""
    prompt: str = ""
    """The fixed text condition (embedded once by T5, then T5 is released)."""
    negative_prompt: str | None = None
    """Used with guidance > 1; None = the pipeline's DEFAULT_NEGATIVE_PROMPT."""
    max_sequence_length: int = PIPELINE_MAX_SEQUENCE_LENGTH
    """T5 tokens of the text condition (padded with zeros); pass the same to the pipeline."""
    fps: int = PIPELINE_FPS

    def __post_init__(self) -> None:
        checks = (
            ("frames", self.frames >= 1, "must be >= 1 (0 turns rollouts off before a world model is built)"),
            ("steps", self.steps >= 2, "must be >= 2 (the sampler's last sigma repeats the one before it)"),
            ("guidance", self.guidance >= 1.0, "must be >= 1.0 (1.0 = no classifier-free guidance)"),
            ("seed", self.seed >= 0, "must be >= 0"),
            ("max_sequence_length", self.max_sequence_length >= 1, "must be >= 1"),
            ("fps", self.fps >= 1, "must be >= 1"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise TheWorldUserError(f"rollout setting {name}={getattr(self, name)!r} {rule}")
        if not isinstance(self.prompt, str):
            raise TheWorldUserError(f"rollout setting prompt must be a string, got {type(self.prompt).__name__}")

    @property
    def uses_guidance(self) -> bool:
        """As the pipeline decides it: `guidance_scale > 1`."""
        return self.guidance > 1.0

    @property
    def resolved_negative_prompt(self) -> str:
        from diffusers.pipelines.cosmos.pipeline_cosmos2_video2world import DEFAULT_NEGATIVE_PROMPT

        return DEFAULT_NEGATIVE_PROMPT if self.negative_prompt is None else self.negative_prompt

    def dit_forwards(self) -> int:
        """DiT forward passes per rollout (per clip)."""
        return self.steps * (2 if self.uses_guidance else 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
