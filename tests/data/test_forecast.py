"""Forecast clips: balanced questions about what happens after the clip, with the true future attached."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from theworld.data.forecast import ForecastConfig, _Ball, _track, generate_forecast
from theworld.errors import TheWorldUserError

CONFIG = ForecastConfig(image_size=32, observed_frames=5, future_frames=4, radius_range=(2.0, 3.0),
                        speed_range=(1.0, 2.0), wall=2)  # fmt: skip


def test_answers_are_balanced_and_clips_carry_their_future():
    clips = generate_forecast(24, seed=0, config=CONFIG)
    counts = collections.Counter((c.category, c.answer) for c in clips)
    assert set(counts.values()) == {4} and len(counts) == 6
    for clip in clips:
        assert len(clip.frames) == 5 and len(clip.future) == 4 and clip.frames[0].size == (32, 32)
        assert clip.answer in clip.choices
        if clip.category == "bounce":
            assert clip.events["bounce"] == (clip.answer == "yes")
        if clip.category == "collision":
            assert clip.events["touch"] == (clip.answer == "yes") and not clip.events["bounce"]


def test_same_seed_same_clips_other_split_other_clips():
    a, b = generate_forecast(6, seed=3, config=CONFIG), generate_forecast(6, seed=3, config=CONFIG)
    assert [c.id for c in a] == [c.id for c in b]
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for c, d in zip(a, b) for x, y in zip(c.frames, d.frames))
    other = generate_forecast(6, seed=4, config=CONFIG)
    assert not all(np.array_equal(np.asarray(c.frames[0]), np.asarray(d.frames[0])) for c, d in zip(a, other))


def test_walled_balls_reflect_and_stay_inside():
    ball = _Ball(np.array([8.0, 10.0]), np.array([-3.0, 0.5]), 2.0, (255, 255, 255))
    centres, bounced = _track(ball, 8, 4.0, 28.0)
    assert (centres >= 4.0).all() and (centres <= 28.0).all()
    steps = np.diff(centres[:, 0])
    assert steps[0] < 0 and steps[-1] > 0  # moving left, then right after the wall
    assert bounced.sum() == 1 and bounced[2]  # reaches x = 4 between frames 1 and 2 (8 -> 5 -> 6)


def test_exit_clips_leave_through_the_side_they_name():
    clips = [c for c in generate_forecast(12, seed=1, config=CONFIG) if c.category == "exit"]
    for clip in clips:
        first, last = np.asarray(clip.frames[0]).astype(int), np.asarray(clip.future[-1]).astype(int)
        background = np.array(CONFIG.background)
        assert (np.abs(first - background).sum(-1) > 30).any()  # the ball is in view at the start
        assert (np.abs(last - background).sum(-1) <= 30).all()  # and gone at the end


def test_bad_settings_are_clear_errors():
    with pytest.raises(TheWorldUserError, match="future_frames"):
        ForecastConfig(future_frames=6)
    with pytest.raises(TheWorldUserError, match="multiple of 6"):
        generate_forecast(10, config=CONFIG)
