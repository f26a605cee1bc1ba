"""Procedural "what happens next?" clips whose answer is in the motion, not in any one frame: the last
frame (all Gemma's image path sees) says nothing about the answer (docs/demo.md).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from theworld.errors import ConfigFieldError, TheWorldUserError

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("direction", "approach", "reach-wall")

# Added to the train seed for the held-out split; a prime above any seed a sweep would try.
HELDOUT_SEED_OFFSET = 1_000_003

_MAX_DRAWS = 2_000  # redraws before a configuration is declared impossible
_EDGE = 1.5  # centre-to-border margin beyond the radius: the anti-aliased rim stays off the border row
_MAX_TURN_DEG = 30.0  # how far motion may stray from the task's main axis
_CLEARANCE = 2.0  # approach: pixels between the ball and the square's corner circle, in every frame
_HIT_MARGIN = 2.0  # reach-wall: pixels by which a clip clearly does / does not reach the edge
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# Random streams, keyed so that no two uses of one seed share a stream.
_LABEL_STREAM, _SCENE_STREAM, _ORDER_STREAM = 0, 1, 2

_BALL_COLOURS: tuple[tuple[int, int, int], ...] = (
    (240, 200, 40), (60, 200, 90), (70, 200, 230), (230, 90, 200), (235, 235, 235), (245, 140, 40)
)
_RED = (225, 45, 45)
_BLUE = (50, 90, 230)


class SyntheticConfigError(ConfigFieldError):
    """A bad `SyntheticConfig` field."""

    prefix = "SyntheticConfig."


@dataclass
class SyntheticConfig:
    """How the clips look. Defaults suit the demo: 9 frames -> 3 latent frames, 64 px -> 8x8.
    `reach_horizon` (None: twice the clip's steps) must exceed `num_frames - 1` (docs/demo.md)."""

    image_size: int = 64
    num_frames: int = 9
    tasks: tuple[str, ...] = TASKS
    background: tuple[int, int, int] = (32, 32, 32)
    radius_range: tuple[float, float] = (4.0, 6.0)
    speed_range: tuple[float, float] = (1.0, 2.0)
    reach_horizon: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        self.background = tuple(self.background)  # type: ignore[assignment]
        self.radius_range = tuple(self.radius_range)  # type: ignore[assignment]
        self.speed_range = tuple(self.speed_range)  # type: ignore[assignment]
        if self.image_size < 16 or self.image_size % 8:
            raise SyntheticConfigError(
                "image_size", f"must be a multiple of 8 and >= 16 (the VAE downsamples 8x), got {self.image_size}"
            )
        if self.num_frames < 5 or (self.num_frames - 1) % 4:
            rule = "must be 4k+1 with k >= 1 (5, 9, 13, ...): the VAE compresses time 4x causally"
            raise SyntheticConfigError("num_frames", f"{rule}, got {self.num_frames}")
        unknown = [t for t in self.tasks if t not in _TASKS]
        if not self.tasks or unknown or len(set(self.tasks)) != len(self.tasks):
            raise SyntheticConfigError(
                "tasks", f"must be distinct names from {', '.join(TASKS)}, got {', '.join(self.tasks) or 'none'}"
            )
        if len(self.background) != 3 or not all(0 <= int(c) <= 255 for c in self.background):
            raise SyntheticConfigError("background", f"must be an RGB triple in 0..255, got {self.background}")
        _check_range("radius_range", self.radius_range, minimum=1.0)
        _check_range("speed_range", self.speed_range, minimum=1e-3)
        if self.reach_horizon is not None and self.reach_horizon <= self.num_frames - 1:
            raise SyntheticConfigError(
                "reach_horizon", f"must exceed num_frames - 1 = {self.num_frames - 1}, got {self.reach_horizon}"
            )
        if self.seed < 0:
            raise SyntheticConfigError("seed", f"must be >= 0, got {self.seed}")

    @property
    def horizon(self) -> int:
        """Frames ahead that `reach-wall` asks about."""
        return self.reach_horizon if self.reach_horizon is not None else 2 * (self.num_frames - 1)


def _check_range(name: str, bounds: tuple[float, float], minimum: float) -> None:
    """A (low, high) pair with minimum <= low <= high, or an error naming the field."""
    if len(bounds) != 2 or not minimum <= bounds[0] <= bounds[1]:
        raise SyntheticConfigError(name, f"must be (low, high) with {minimum:g} <= low <= high, got {bounds}")


@dataclass
class SyntheticClip:
    """One question about one clip; `frames` are in-memory RGB images, oldest first."""

    id: str
    question: str
    choices: list[str]
    answer: str
    category: str
    frames: list[Image.Image]

    def to_qa(self, video: list[str]) -> dict[str, object]:
        """The record in the `theworld.data.qa` JSONL format, the clip given as frame paths."""
        clip = {"id": self.id, "question": self.question, "choices": list(self.choices), "answer": self.answer}
        return {**clip, "video": list(video), "category": self.category}


# --- scenes -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Shape:
    """A filled disc (`size` = radius) or square (`size` = half its side) and its centre per frame."""

    kind: str
    colour: tuple[int, int, int]
    size: float
    centres: np.ndarray  # (num_frames, 2) x, y in pixels, y down


Scenes = dict[str, list[_Shape]]  # answer -> the shapes of the clip that has that answer


def _moving(kind: str, colour: tuple[int, int, int], size: float, last: np.ndarray,
            velocity: np.ndarray, num_frames: int) -> _Shape:
    """A shape at constant velocity that ends at `last`, so every answer shares the last frame."""
    steps = np.arange(num_frames, dtype=float) - (num_frames - 1)
    return _Shape(kind, colour, size, last[None, :] + steps[:, None] * velocity[None, :])


def _balls(colour: tuple[int, int, int], radius: float, last: np.ndarray, velocities: dict[str, np.ndarray],
           cfg: SyntheticConfig, *still: _Shape) -> Scenes:
    """For each answer, the `still` shapes and a ball moving by that answer's velocity into the same last frame."""
    return {answer: [*still, _moving("disc", colour, radius, last, v, cfg.num_frames)] for answer, v in velocities.items()}


def _inside(shape: _Shape, image_size: int) -> bool:
    """Whether the shape, anti-aliased rim included, stays off the border in every frame."""
    low = shape.size + _EDGE
    return bool(np.all(shape.centres >= low) and np.all(shape.centres <= image_size - low))


def _point(rng: np.random.Generator, margin: float, image_size: int) -> np.ndarray:
    """A centre uniform over the frame (less `margin`), drawn without regard to any answer."""
    return rng.uniform(margin, max(margin, image_size - margin), size=2)


def _heading(speed: float, angle: float) -> np.ndarray:
    """A velocity in pixels per frame (angle 0 = rightward, y down)."""
    return np.array([speed * math.cos(angle), speed * math.sin(angle)])


def _turn(rng: np.random.Generator) -> float:
    """A random stray from the main axis, so motion is not all perfectly axis-aligned."""
    return math.radians(rng.uniform(-_MAX_TURN_DEG, _MAX_TURN_DEG))


def _direction(rng: np.random.Generator, cfg: SyntheticConfig) -> Scenes | None:
    """One ball; the two answers are mirror-image horizontal velocities into the same last frame."""
    radius = rng.uniform(*cfg.radius_range)
    velocity = _heading(rng.uniform(*cfg.speed_range), _turn(rng))
    colour = _BALL_COLOURS[int(rng.integers(len(_BALL_COLOURS)))]
    last = _point(rng, radius + _EDGE, cfg.image_size)
    return _balls(colour, radius, last, {"left": velocity * np.array([-1.0, 1.0]), "right": velocity}, cfg)


def _approach(rng: np.random.Generator, cfg: SyntheticConfig) -> Scenes | None:
    """A still square and a ball whose velocity points at it (toward) or the opposite (away)."""
    radius = rng.uniform(*cfg.radius_range)
    half = rng.uniform(*cfg.radius_range)
    speed = rng.uniform(*cfg.speed_range)
    turn = _turn(rng)
    ball = _point(rng, radius + _EDGE, cfg.image_size)
    square_at = _point(rng, half + _EDGE, cfg.image_size)
    offset = square_at - ball
    if not np.any(offset):
        return None
    toward = _heading(speed, math.atan2(offset[1], offset[0]) + turn)
    square = _Shape("square", _BLUE, half, np.repeat(square_at[None, :], cfg.num_frames, axis=0))
    scenes = _balls(_RED, radius, ball, {"toward": toward, "away": -toward}, cfg, square)
    clearance = radius + half * math.sqrt(2.0) + _CLEARANCE
    for shapes in scenes.values():
        if np.min(np.hypot(*(shapes[1].centres - square_at).T)) < clearance:
            return None
    return scenes


def _reach_wall(rng: np.random.Generator, cfg: SyntheticConfig) -> Scenes | None:
    """A ball within reach of one side edge only; "yes" moves it toward that edge, "no" away."""
    radius = rng.uniform(*cfg.radius_range)
    speed = rng.uniform(*cfg.speed_range)
    colour = _BALL_COLOURS[int(rng.integers(len(_BALL_COLOURS)))]
    last = _point(rng, radius + _EDGE, cfg.image_size)
    reach = speed * cfg.horizon
    gap_left = last[0] - radius
    gap_right = cfg.image_size - last[0] - radius
    if gap_left <= reach - _HIT_MARGIN and gap_right >= reach + _HIT_MARGIN:
        near = -1.0
    elif gap_right <= reach - _HIT_MARGIN and gap_left >= reach + _HIT_MARGIN:
        near = 1.0
    else:
        return None
    velocity = np.array([near * speed, 0.0])
    return _balls(colour, radius, last, {"yes": velocity, "no": -velocity}, cfg)


@dataclass(frozen=True)
class _Task:
    question: str  # may use {horizon}
    choices: tuple[str, ...]
    sample: Callable[[np.random.Generator, SyntheticConfig], Scenes | None]


_TASKS: dict[str, _Task] = {
    "direction": _Task("Which way is the ball moving?", ("left", "right"), _direction),
    "approach": _Task("Is the red ball moving toward the blue square or away from it?", ("toward", "away"), _approach),
    "reach-wall": _Task(
        "If it keeps moving the same way, will the ball touch the edge of the picture within the next {horizon} frames?",
        ("yes", "no"),
        _reach_wall,
    ),
}


def _draw_scenes(task: str, rng: np.random.Generator, cfg: SyntheticConfig) -> Scenes:
    """Redraw until every answer's clip is valid, so being kept says nothing about the answer."""
    for _ in range(_MAX_DRAWS):
        scenes = _TASKS[task].sample(rng, cfg)
        if scenes is not None and all(_inside(s, cfg.image_size) for shapes in scenes.values() for s in shapes):
            return scenes
    raise TheWorldUserError(
        f"task {task!r}: no valid clip in {_MAX_DRAWS} draws; image_size={cfg.image_size} is too small "
        f"for radius_range={cfg.radius_range}, speed_range={cfg.speed_range} over num_frames={cfg.num_frames}"
    )


def _render(shapes: list[_Shape], t: int, cfg: SyntheticConfig) -> Image.Image:
    """Frame `t`, anti-aliased so sub-pixel motion shows; only each shape's bounding box is computed."""
    size = cfg.image_size
    canvas = np.empty((size, size, 3))
    canvas[:] = cfg.background
    for shape in shapes:
        cx, cy = shape.centres[t]
        reach = shape.size + 1.0
        x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 1, size)
        y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 1, size)
        ys, xs = np.ogrid[y0:y1, x0:x1]  # pixel rows and columns
        ys, xs = ys + 0.5, xs + 0.5  # their centres
        disc = shape.kind == "disc"
        distance = np.hypot(xs - cx, ys - cy) if disc else np.maximum(np.abs(xs - cx), np.abs(ys - cy))
        alpha = np.clip(shape.size + 0.5 - distance, 0.0, 1.0)[..., None]
        box = canvas[y0:y1, x0:x1]
        canvas[y0:y1, x0:x1] = box * (1.0 - alpha) + np.asarray(shape.colour, dtype=float) * alpha
    return Image.fromarray(np.rint(canvas).astype(np.uint8))


# --- public API -------------------------------------------------------------------------------


def heldout_seed(seed: int) -> int:
    """The held-out split's seed for a train seed: another stream, so no clip is in both splits."""
    return seed + HELDOUT_SEED_OFFSET


def count_multiple(config: SyntheticConfig) -> int:
    """Split sizes must be a multiple of this, so every task's answers are exactly balanced."""
    return len(config.tasks) * math.lcm(*(len(_TASKS[t].choices) for t in config.tasks))


def iter_clips(n: int, seed: int | None = None, config: SyntheticConfig | None = None,
               split: str = "train") -> Iterator[SyntheticClip]:
    """Yield `n` clips lazily, tasks mixed in a seeded order: same arguments, same clips."""
    cfg = config if config is not None else SyntheticConfig()
    seed = cfg.seed if seed is None else seed
    if seed < 0:
        raise TheWorldUserError(f"seed must be >= 0, got {seed}")
    if not _SPLIT_NAME.match(split):
        raise TheWorldUserError(f"split must be letters, digits, '.', '_' or '-' (it names files), got {split!r}")
    multiple = count_multiple(cfg)
    if n <= 0 or n % multiple:
        raise TheWorldUserError(
            f"n must be a positive multiple of {multiple} ({len(cfg.tasks)} task(s) x their choices) "
            f"so each task's answers are exactly balanced, got {n}"
        )
    per_task = n // len(cfg.tasks)
    plan: list[tuple[str, int, str]] = []
    for name in cfg.tasks:
        choices = _TASKS[name].choices
        answers = [choices[j % len(choices)] for j in range(per_task)]
        order = np.random.default_rng([seed, _LABEL_STREAM, TASKS.index(name)]).permutation(per_task)
        plan.extend((name, i, answers[j]) for i, j in enumerate(order))
    for index in np.random.default_rng([seed, _ORDER_STREAM]).permutation(len(plan)):
        name, i, answer = plan[index]
        task = _TASKS[name]
        # The scene's stream knows the task and index but not the answer: see the module docstring.
        scenes = _draw_scenes(name, np.random.default_rng([seed, _SCENE_STREAM, TASKS.index(name), i]), cfg)
        frames = [_render(scenes[answer], t, cfg) for t in range(cfg.num_frames)]
        question = task.question.format(horizon=cfg.horizon)
        yield SyntheticClip(f"{split}-{name}-{i:05d}", question, list(task.choices), answer, name, frames)


def generate(n: int, seed: int | None = None, config: SyntheticConfig | None = None,
             split: str = "train") -> list[SyntheticClip]:
    """`n` clips (a multiple of `count_multiple(config)`), in memory; see `iter_clips`."""
    return list(iter_clips(n, seed, config, split))


def write_split(records: Iterable[SyntheticClip], out_dir: str | Path, split_name: str) -> Path:
    """Write `out_dir/<split>.jsonl` (`qa` format) and its frames as PNGs, paths relative to `out_dir`."""
    if not _SPLIT_NAME.match(split_name):
        raise TheWorldUserError(f"split name must be letters, digits, '.', '_' or '-', got {split_name!r}")
    out = Path(out_dir)
    frames_dir = out / split_name / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out / f"{split_name}.jsonl"
    count = 0
    with jsonl.open("w", encoding="utf-8", newline="\n") as handle:
        for clip in records:
            video = [f"{split_name}/frames/{clip.id}_{t}.png" for t in range(len(clip.frames))]
            for frame, relative in zip(clip.frames, video):
                frame.save(out / relative, format="PNG")
            handle.write(json.dumps(clip.to_qa(video), ensure_ascii=False) + "\n")
            count += 1
    logger.info("wrote %d clips to %s (frames in %s)", count, jsonl, frames_dir)
    return jsonl
