"""Procedural "forecast" clips: questions about what happens *after* the clip ends.

The synthetic world of `theworld.data.synthetic` asks about the motion seen in a clip; this
family asks about its continuation, which the clip itself does not show: will the ball bounce off
a wall, will two balls touch, through which side will the ball leave. A model answers them by
extrapolating the dynamics, which is what a world model's rollout is for. Every clip therefore
carries its *future* frames too: the world model is trained on observed + future frames of many
unlabelled clips, and its rollouts are judged against the true future.

Physics: balls move at constant velocity. In a walled scene (a grey border is drawn) they
reflect elastically off the border; in an open scene (no border) they leave the picture. Balls
do not interact (two balls may pass through each other). No bounce happens during the observed
frames: every event asked about lies in the future.

Families (two choices each, answers exactly balanced per split):

- `bounce`: one ball, walled. "Will the ball bounce off a wall in the next N frames?" yes / no.
- `collision`: two balls, walled, no bounce in the next N frames either. "Will the two balls
  touch in the next N frames?" yes / no.
- `exit`: one ball, open scene, moving mostly sideways and leaving within the next N frames.
  "Through which side will the ball leave the picture?" left / right.

Seeds: clip `i` of a task comes from its own stream `(seed, task, i)`; the held-out split uses
`theworld.data.synthetic.heldout_seed(seed)`. Scenes are redrawn until their answer is the planned
one (rejection sampling), so answers are balanced while scenes stay natural.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from theworld.errors import TheWorldUserError

FORECAST_TASKS: tuple[str, ...] = ("bounce", "collision", "exit")
_CHOICES = {"bounce": ("yes", "no"), "collision": ("yes", "no"), "exit": ("left", "right")}
_QUESTIONS = {
    "bounce": "Will the ball bounce off a wall in the next {n} frames?",
    "collision": "Will the two balls touch in the next {n} frames?",
    "exit": "Through which side will the ball leave the picture?",
}
_COLOURS = ((240, 200, 40), (60, 200, 90), (70, 200, 230), (230, 90, 200), (235, 235, 235), (245, 140, 40))
_WALL_COLOUR = (150, 150, 150)
_MAX_DRAWS = 5_000
_TASK_STREAM, _ORDER_STREAM = 3, 4  # distinct from synthetic.py's streams


@dataclass
class ForecastConfig:
    """How the forecast clips look. Defaults: 64 px, 9 observed frames (3 latent) + 8 future (2 latent)."""

    image_size: int = 64
    observed_frames: int = 9
    future_frames: int = 8
    tasks: tuple[str, ...] = FORECAST_TASKS
    background: tuple[int, int, int] = (32, 32, 32)
    wall: int = 3
    radius_range: tuple[float, float] = (4.0, 6.0)
    speed_range: tuple[float, float] = (1.5, 3.5)

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        if self.image_size < 32 or self.image_size % 16:
            raise TheWorldUserError(f"ForecastConfig.image_size must be a multiple of 16 and >= 32, got {self.image_size}")
        if self.observed_frames < 5 or (self.observed_frames - 1) % 4:
            raise TheWorldUserError(f"ForecastConfig.observed_frames must be 4k+1 >= 5, got {self.observed_frames}")
        if self.future_frames < 4 or self.future_frames % 4:
            raise TheWorldUserError(
                f"ForecastConfig.future_frames must be a positive multiple of 4 (K latent frames), got {self.future_frames}"
            )
        unknown = [t for t in self.tasks if t not in FORECAST_TASKS]
        if not self.tasks or unknown:
            raise TheWorldUserError(f"ForecastConfig.tasks must be from {', '.join(FORECAST_TASKS)}, got {self.tasks}")

    @property
    def total_frames(self) -> int:
        return self.observed_frames + self.future_frames


@dataclass
class ForecastClip:
    """A question about what follows `frames`; `future` holds the frames that do follow."""

    id: str
    question: str
    choices: list[str]
    answer: str
    category: str
    frames: list[Image.Image]
    future: list[Image.Image]
    events: dict[str, bool] = field(default_factory=dict)
    """What happens in the future frames: `bounce` (any ball reflects), `touch`, `exit`."""

    def to_qa(self, video: list[str]) -> dict[str, object]:
        """The labelled question in the `theworld.data.qa` JSONL format (the observed frames only)."""
        return {"id": self.id, "question": self.question, "choices": list(self.choices), "answer": self.answer,
                "video": list(video), "category": self.category}  # fmt: skip


# --- physics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ball:
    start: np.ndarray  # (2,) centre at frame 0, x right, y down
    velocity: np.ndarray  # (2,) pixels per frame
    radius: float
    colour: tuple[int, int, int]


def _track(ball: _Ball, frames: int, low: float | None, high: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Centres (frames, 2) and, per frame, whether a reflection happened since the previous frame.

    In a walled box the centre moves in [low, high] per axis and reflects at its ends (the
    'unfolded' coordinate folded back); in an open scene (low is None) it moves on freely."""
    t = np.arange(frames, dtype=float)[:, None]
    unfolded = ball.start[None, :] + t * ball.velocity[None, :]
    if low is None:
        return unfolded, np.zeros(frames, dtype=bool)
    span = high - low
    phase = (unfolded - low) % (2 * span)
    centres = low + span - np.abs(phase - span)
    segment = np.floor((unfolded - low) / span)  # changes when the ball reaches a wall
    bounced = np.zeros(frames, dtype=bool)
    bounced[1:] = np.any(segment[1:] != segment[:-1], axis=1)
    return centres, bounced


def _render(balls: list[np.ndarray], radii: list[float], colours: list[tuple[int, int, int]], walled: bool,
            cfg: ForecastConfig) -> Image.Image:
    """One frame: background, the grey border of a walled scene, anti-aliased discs."""
    size = cfg.image_size
    canvas = np.empty((size, size, 3))
    canvas[:] = cfg.background
    if walled:
        w = cfg.wall
        canvas[:w], canvas[-w:], canvas[:, :w], canvas[:, -w:] = (_WALL_COLOUR,) * 4
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    for (cx, cy), radius, colour in zip(balls, radii, colours):
        alpha = np.clip(radius + 0.5 - np.hypot(xs - cx, ys - cy), 0.0, 1.0)[..., None]
        canvas = canvas * (1.0 - alpha) + np.asarray(colour, dtype=float) * alpha
    return Image.fromarray(np.rint(canvas).astype(np.uint8))


@dataclass
class _Scene:
    balls: list[_Ball]
    walled: bool
    centres: list[np.ndarray]  # per ball (frames, 2)
    bounced: np.ndarray  # (frames,) any ball reflected at that frame
    answer: str
    events: dict[str, bool]


def _random_ball(rng: np.random.Generator, cfg: ForecastConfig, low: float, high: float, colour_index: int) -> _Ball:
    radius = rng.uniform(*cfg.radius_range)
    angle = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(*cfg.speed_range)
    start = rng.uniform(low + radius, high - radius, size=2)
    return _Ball(start, np.array([speed * math.cos(angle), speed * math.sin(angle)]), radius, _COLOURS[colour_index])


def _walled(cfg: ForecastConfig, ball: _Ball) -> tuple[float, float]:
    """Range of a ball's centre inside the border."""
    return cfg.wall + ball.radius, cfg.image_size - cfg.wall - ball.radius


def _simulate(task: str, rng: np.random.Generator, cfg: ForecastConfig) -> _Scene | None:
    total, seen = cfg.total_frames, cfg.observed_frames
    colours = rng.choice(len(_COLOURS), size=2, replace=False)
    if task == "exit":
        ball = _random_ball(rng, cfg, 0.0, float(cfg.image_size), int(colours[0]))
        side = rng.choice([-1.0, 1.0])
        angle = math.radians(rng.uniform(-30, 30)) + (math.pi if side < 0 else 0.0)
        speed = float(np.hypot(*ball.velocity))
        ball = _Ball(ball.start, np.array([speed * math.cos(angle), speed * math.sin(angle)]), ball.radius, ball.colour)
        centres, bounced = _track(ball, total, None, None)
        r = ball.radius
        inside = lambda c: (c >= r).all() and (c <= cfg.image_size - r).all()  # noqa: E731
        if not all(inside(c) for c in centres[:seen]):
            return None  # fully in view while observed
        gone = [not ((c[0] > -r) and (c[0] < cfg.image_size + r)) for c in centres[seen:]]
        if not any(gone) or (centres[seen:, 1] < r).any() or (centres[seen:, 1] > cfg.image_size - r).any():
            return None  # leaves within the window, and through a side (not the top or bottom)
        answer = "left" if side < 0 else "right"
        return _Scene([ball], False, [centres], bounced, answer, {"bounce": False, "touch": False, "exit": True})
    count = 2 if task == "collision" else 1
    balls, tracks, bounces = [], [], np.zeros(total, dtype=bool)
    for i in range(count):
        probe = _random_ball(rng, cfg, 0.0, float(cfg.image_size), int(colours[i]))
        low, high = _walled(cfg, probe)
        ball = _Ball(rng.uniform(low, high, size=2), probe.velocity, probe.radius, probe.colour)
        centres, bounced = _track(ball, total, low, high)
        balls.append(ball)
        tracks.append(centres)
        bounces |= bounced
    if bounces[1:seen].any():
        return None  # every event is in the future
    future_bounce = bool(bounces[seen:].any())
    touch = False
    if count == 2:
        gap = np.hypot(*(tracks[0] - tracks[1]).T) - balls[0].radius - balls[1].radius
        if (gap[:seen] <= 1.0).any():
            return None  # apart while observed
        touch = bool((gap[seen:] <= 0.0).any())
        if future_bounce:
            return None  # collision questions are about the balls, not the walls
        answer = "yes" if touch else "no"
    else:
        answer = "yes" if future_bounce else "no"
    return _Scene(balls, True, tracks, bounces, answer, {"bounce": future_bounce, "touch": touch, "exit": False})


def _draw(task: str, answer: str, rng: np.random.Generator, cfg: ForecastConfig) -> _Scene:
    for _ in range(_MAX_DRAWS):
        scene = _simulate(task, rng, cfg)
        if scene is not None and scene.answer == answer:
            return scene
    raise TheWorldUserError(f"forecast task {task!r}: no clip with answer {answer!r} in {_MAX_DRAWS} draws")


def iter_forecast_clips(n: int, seed: int = 0, config: ForecastConfig | None = None,
                        split: str = "train") -> Iterator[ForecastClip]:
    """`n` clips (a multiple of 2 x tasks), tasks and answers balanced, in a seeded order."""
    cfg = config or ForecastConfig()
    multiple = 2 * len(cfg.tasks)
    if n <= 0 or n % multiple:
        raise TheWorldUserError(f"n must be a positive multiple of {multiple} (tasks x 2 answers), got {n}")
    per_task = n // len(cfg.tasks)
    plan = [(task, i, _CHOICES[task][i % 2]) for task in cfg.tasks for i in range(per_task)]
    for index in np.random.default_rng([seed, _ORDER_STREAM]).permutation(len(plan)):
        task, i, answer = plan[index]
        rng = np.random.default_rng([seed, _TASK_STREAM, FORECAST_TASKS.index(task), i])
        scene = _draw(task, answer, rng, cfg)
        radii = [b.radius for b in scene.balls]
        colours = [b.colour for b in scene.balls]
        frames = [_render([c[t] for c in scene.centres], radii, colours, scene.walled, cfg) for t in range(cfg.total_frames)]
        yield ForecastClip(
            id=f"{split}-{task}-{i:05d}",
            question=_QUESTIONS[task].format(n=cfg.future_frames),
            choices=list(_CHOICES[task]),
            answer=answer,
            category=task,
            frames=frames[: cfg.observed_frames],
            future=frames[cfg.observed_frames :],
            events=scene.events,
        )


def generate_forecast(n: int, seed: int = 0, config: ForecastConfig | None = None, split: str = "train") -> list[ForecastClip]:
    return list(iter_forecast_clips(n, seed, config, split))
