"""Quantity and clock parsing: the unit conventions SpatialRGPT-Bench answers need."""

from __future__ import annotations

import math

import pytest

from theworld.errors import TheWorldUserError
from theworld.evaluation.parsing import clock_distance, parse_clock, parse_quantity, score_clock, score_numeric


@pytest.mark.parametrize(
    ("text", "meters"),
    [
        ("1.5 m", 1.5),
        ("150 cm", 1.5),
        ("1,200 mm", 1.2),
        ("0.5km", 500.0),
        ("5 feet", 5 * 0.3048),
        ("5'10\"", 5 * 0.3048 + 10 * 0.0254),
        ("5 feet 10 inches", 5 * 0.3048 + 10 * 0.0254),
        ("It is 7 inches wide.", 7 * 0.0254),
        ("2-3 meters", 2.5),
        ("2 to 3 m", 2.5),
        ("about 3 yards", 3 * 0.9144),
        ("between 1 and 2 km", 1500.0),
        ("six feet", 6 * 0.3048),
        ("twenty-five centimeters", 0.25),
        ("Region [0] is 2.5 meters from Region [1].", 2.5),  # region indices are not values
        ("The height is 1.2", 1.2),  # no unit: meters
        ("1.5-meter-tall lamp", 1.5),
    ],
)
def test_parse_quantity_reads_meters(text: str, meters: float) -> None:
    assert parse_quantity(text) == pytest.approx(meters)


@pytest.mark.parametrize("text", ["no idea", "", None, "Region [0] and Region [1] overlap.", "the 1st one"])
def test_parse_quantity_without_a_number_is_none(text: str | None) -> None:
    assert parse_quantity(text) is None


def test_a_unit_quantity_wins_over_an_earlier_bare_number() -> None:
    assert parse_quantity("Of the 2 chairs, the left is 80 cm tall") == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("text", "hour"),
    [
        ("2 o'clock", 2),
        ("Region [1] is at 10 o\u2019clock from Region [0].", 10),  # curly apostrophe
        ("two o'clock", 2),
        ("around the twelve oclock direction", 12),
        ("11 o clock", 11),
        ("13 o'clock", None),
        ("to the left", None),
    ],
)
def test_parse_clock(text: str, hour: int | None) -> None:
    assert parse_clock(text) == hour


def test_clock_distance_is_circular() -> None:
    assert clock_distance(11, 1) == 2
    assert clock_distance(12, 6) == 6
    assert clock_distance(3, 3) == 0
    with pytest.raises(ValueError):
        clock_distance(0, 3)


def test_score_numeric_thresholds() -> None:
    score = score_numeric("about 2 m", "Region [0] is 2.5 meters tall.")
    assert score["rel_error"] == pytest.approx(0.2)
    assert (score["success_10"], score["success_25"], score["success_50"]) == (False, True, True)
    assert score["correct"] is True
    miss = score_numeric("I cannot tell", "2.5 m")
    assert miss["pred_m"] is None and miss["correct"] is False and miss["success_50"] is False
    assert math.isclose(score_numeric("100 inches", "1 m")["rel_error"], 1.54)
    with pytest.raises(TheWorldUserError):
        score_numeric("2 m", "they overlap")


def test_score_clock() -> None:
    exact = score_clock("It is at 3 o'clock.", "Region [1] is roughly at 3 o'clock from Region [0].")
    assert exact["correct"] and exact["within_1"] and exact["distance"] == 0
    near = score_clock("12 o'clock", "1 o'clock")
    assert not near["correct"] and near["within_1"] and near["distance"] == 1
    none = score_clock("left", "1 o'clock")
    assert none["pred_hour"] is None and not none["correct"] and not none["within_1"]
