"""The synthetic "what happens next?" clips: shape, balance, determinism, and above all that the
last frame alone is at chance while the motion gives the answer away (the demo's premise)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from theworld.cli.main import main
from theworld.data.synthetic import (
    TASKS,
    SyntheticClip,
    SyntheticConfig,
    _draw_scenes,
    _render,
    count_multiple,
    generate,
    heldout_seed,
    write_split,
)
from theworld.errors import TheWorldUserError

PER_TASK = 400  # clips per task in each split for the classifier tests
CONFIG = SyntheticConfig()


@pytest.fixture(scope="module")
def train() -> list[SyntheticClip]:
    return generate(PER_TASK * len(TASKS), seed=7, config=CONFIG)


@pytest.fixture(scope="module")
def heldout() -> list[SyntheticClip]:
    return generate(PER_TASK * len(TASKS), seed=heldout_seed(7), config=CONFIG, split="heldout")


def _pixels(clip: SyntheticClip, t: int) -> np.ndarray:
    return np.asarray(clip.frames[t], dtype=float)


def _clip_hash(clip: SyntheticClip) -> str:
    return hashlib.sha256(b"".join(frame.tobytes() for frame in clip.frames)).hexdigest()


# --- a tiny classifier, and what it may look at -----------------------------------------------


def _centroid(mask: np.ndarray) -> list[float]:
    """Centre and area of a shape found by colour: positions are what a leak would hide in."""
    ys, xs = np.nonzero(mask)
    return [xs.mean(), ys.mean(), float(mask.sum())]


def _features(frame: np.ndarray, task: str) -> list[float]:
    if task == "approach":
        ball = _centroid(frame[..., 0] > frame[..., 2] + 60)
        square = _centroid(frame[..., 2] > frame[..., 0] + 60)
        return [*ball, *square, float(np.hypot(ball[0] - square[0], ball[1] - square[1]))]
    return _centroid(np.abs(frame - np.asarray(CONFIG.background)).sum(-1) > 60)


def _quadratic(x: np.ndarray) -> np.ndarray:
    """Features and their pairwise products, so a leak through e.g. distance-to-edge is reachable."""
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    rows, cols = np.triu_indices(x.shape[1])
    return np.concatenate([x, x[:, rows] * x[:, cols]], axis=1)


def _logistic_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Held-out accuracy of an L2 logistic regression fit by gradient descent."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    a, b = (x_train - mean) / std, (x_test - mean) / std
    weights, bias = np.zeros(a.shape[1]), 0.0
    for _ in range(400):
        error = 1.0 / (1.0 + np.exp(-(a @ weights + bias))) - y_train
        weights -= 0.5 * (a.T @ error / len(a) + 1e-3 * weights)
        bias -= 0.5 * error.mean()
    return float((((b @ weights + bias) > 0) == y_test.astype(bool)).mean())


def _dataset(clips: list[SyntheticClip], task: str, view: str) -> tuple[np.ndarray, np.ndarray]:
    """`last`: what the image path sees. `motion`: the last frame plus its change since the first."""
    chosen = [c for c in clips if c.category == task]
    labels = np.array([c.choices.index(c.answer) for c in chosen], dtype=float)
    if view == "pixels":  # 16x16 average-pooled last frame
        size = CONFIG.image_size
        rows = [_pixels(c, -1).reshape(16, size // 16, 16, size // 16, 3).mean((1, 3)).ravel() for c in chosen]
        return np.array(rows), labels
    last = np.array([_features(_pixels(c, -1), task) for c in chosen])
    if view == "last":
        return _quadratic(last), labels
    first = np.array([_features(_pixels(c, 0), task) for c in chosen])
    return _quadratic(np.concatenate([last, last - first], axis=1)), labels


# --- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_last_frame_is_at_chance_but_motion_gives_the_answer(train, heldout, task) -> None:
    for view in ("last", "pixels"):
        accuracy = _logistic_accuracy(*_dataset(train, task, view), *_dataset(heldout, task, view))
        assert accuracy <= 0.62, f"{task}: the last frame ({view}) predicts the answer: {accuracy:.3f}"
    accuracy = _logistic_accuracy(*_dataset(train, task, "motion"), *_dataset(heldout, task, "motion"))
    assert accuracy >= 0.9, f"{task}: the motion should give the answer away: {accuracy:.3f}"


def test_last_frame_classifier_would_catch_a_position_leak(train) -> None:
    # Keep only clips whose answer matches the side of the frame the ball ends on: the leak a
    # naive generator has. The chance test above is only meaningful if it would see this.
    x, y = _dataset(train, "direction", "last")
    centre_x = np.array([_features(_pixels(c, -1), "direction")[0] for c in train if c.category == "direction"])
    leaky = (centre_x > np.median(centre_x)) == (y == 1)
    x, y = x[leaky], y[leaky]
    half = len(y) // 2
    assert _logistic_accuracy(x[:half], y[:half], x[half:], y[half:]) >= 0.9


def test_every_answer_shares_the_last_frame() -> None:
    for task in TASKS:
        for i in range(20):
            scenes = _draw_scenes(task, np.random.default_rng([3, i]), CONFIG)
            last = {_render(shapes, CONFIG.num_frames - 1, CONFIG).tobytes() for shapes in scenes.values()}
            first = {_render(shapes, 0, CONFIG).tobytes() for shapes in scenes.values()}
            assert len(last) == 1 and len(first) == len(scenes), task


def test_answers_exactly_balanced_per_task(train) -> None:
    choices = {c.category: c.choices for c in train}
    counts = Counter((c.category, c.answer) for c in train)
    assert counts == {(task, answer): PER_TASK // 2 for task in TASKS for answer in choices[task]}
    assert [c.category for c in train[:12]] != sorted(c.category for c in train[:12])  # tasks are mixed


def test_unbalanceable_count_is_refused() -> None:
    assert count_multiple(CONFIG) == 2 * len(TASKS)
    with pytest.raises(TheWorldUserError, match="n must be"):
        generate(7, seed=0)


@pytest.mark.parametrize(("image_size", "num_frames"), [(64, 9), (48, 5), (64, 13)])
def test_frames_count_and_size(image_size, num_frames) -> None:
    config = SyntheticConfig(image_size=image_size, num_frames=num_frames)
    for clip in generate(6, seed=1, config=config):
        assert len(clip.frames) == num_frames
        assert all(f.size == (image_size, image_size) and f.mode == "RGB" for f in clip.frames)


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_frames", 8), ("num_frames", 1), ("image_size", 60), ("tasks", ("direction", "bounce")), ("seed", -1)],
)
def test_bad_config_names_the_field(field, value) -> None:
    with pytest.raises(TheWorldUserError, match=field):
        SyntheticConfig(**{field: value})


def test_objects_stay_inside_the_frame(train) -> None:
    for clip in train:
        for t in range(len(clip.frames)):
            frame = _pixels(clip, t)
            border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
            assert (border == CONFIG.background).all(), f"{clip.id} frame {t} touches the border"


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    def written(seed: int, folder: str) -> dict[str, bytes]:
        out = tmp_path / folder
        write_split(generate(6, seed=seed), out, "train")
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    first, again, other = written(5, "a"), written(5, "b"), written(6, "c")
    assert first == again
    assert first["train.jsonl"] != other["train.jsonl"]
    assert {k: v for k, v in first.items() if k.endswith(".png")} != {
        k: v for k, v in other.items() if k.endswith(".png")
    }


def test_heldout_shares_no_ids_or_clips_with_train(train, heldout) -> None:
    assert heldout_seed(7) != 7
    assert not {c.id for c in train} & {c.id for c in heldout}
    assert not {_clip_hash(c) for c in train} & {_clip_hash(c) for c in heldout}
    assert len({_clip_hash(c) for c in train}) == len(train)


def test_cli_writes_qa_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "data"
    argv = ["make-data", "--output-dir", str(out), "--train", "12", "--heldout", "8", "--seed", "3",
            "--num-frames", "5", "--tasks", "direction,approach"]
    assert main(argv) == 0
    for split, n in (("train", 12), ("heldout", 8)):
        records = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        assert len(records) == n
        for record in records:
            assert set(record) == {"id", "question", "choices", "answer", "video", "category"}
            assert record["id"].startswith(f"{split}-{record['category']}-")
            assert record["category"] in ("direction", "approach")
            assert record["answer"] in record["choices"] and len(record["choices"]) == 2
            assert len(record["video"]) == 5
            assert all((out / path).is_file() for path in record["video"])


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--num-frames", "8"), ("--image-size", "60"), ("--tasks", "direction,bounce"), ("--train", "5"),
     ("--heldout", "-6"), ("--seed", "-1")],
)
def test_cli_bad_value_names_the_flag(tmp_path: Path, capsys, flag, value) -> None:
    assert main(["make-data", "--output-dir", str(tmp_path), flag, value]) == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "train.jsonl").exists()
