"""Reading metric quantities and clock directions out of free-text answers, and scoring them, deterministically.

Conventions: "Region [0]" references are removed first; "1,200" loses its separator; units m, cm, mm,
km, in/", ft/', yd, mile(s) (a bare "in" only when no word follows); 5'10" and "5 ft 10 in" add up;
ranges give their midpoint; number words are read before a unit; the first quantity with a unit wins,
else the first bare number in meters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from theworld.errors import TheWorldUserError

# canonical unit, its spellings (tried in order: longer spellings before their prefixes), meters
_UNITS: list[tuple[str, str, float]] = [
    ("mm", r"mm|millimet(?:er|re)s?", 0.001),
    ("cm", r"cm|centimet(?:er|re)s?", 0.01),
    ("km", r"km|kilomet(?:er|re)s?", 1000.0),
    ("mi", r"miles?", 1609.344),
    ("m", r"met(?:er|re)s?|m", 1.0),
    ("in", r"inch(?:es)?|\"|''|in(?=\s*(?:$|[^a-z\s]))", 0.0254),
    ("ft", r"feet|foot|ft|'", 0.3048),
    ("yd", r"yards?|yds?", 0.9144),
]
_UNIT_METERS = {name: meters for name, _, meters in _UNITS}
_UNIT_RE = re.compile(r"\s*-?\s*(?:" + "|".join(f"(?P<{name}>{pattern})" for name, pattern, _ in _UNITS) + r")(?![a-z])")
_NUMBER_RE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+)")
_REGION_RE = re.compile(r"region\s*\[\s*\d+\s*\]|\[\s*\d+\s*\]")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_RANGE_GAP_RE = re.compile(r"\s*(?:-|\u2013|\u2014|to|and)\s*")  # hyphen, en/em dash
_COMBO_GAP_RE = re.compile(r"\s*(?:,|and)?\s*")

_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
]  # fmt: skip
_TENS = {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
WORD_NUMBERS: dict[str, int] = {word: value for value, word in enumerate(_ONES)} | _TENS
_TENS_ALL = {"twenty": 20} | _TENS
_UNIT_AHEAD = r"(?=\s*-?\s*(?:" + "|".join(p for _, p, _ in _UNITS) + r")(?![a-z]))"
_COMPOUND_WORD_RE = re.compile(
    r"\b(" + "|".join(_TENS_ALL) + r")[\s-](one|two|three|four|five|six|seven|eight|nine)\b" + _UNIT_AHEAD
)
_WORD_RE = re.compile(r"\b(" + "|".join(sorted(WORD_NUMBERS, key=len, reverse=True)) + r")\b" + _UNIT_AHEAD)

_CLOCK_RE = re.compile(r"(?<![\w.])(\d{1,2}|" + "|".join(_ONES[1:13]) + r")(?::00)?\s*o\s*'?\s*clock")


# curly quotes and primes, as models and people type them, to the ASCII ' and "
_PLAIN_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u2032": "'", "\u201c": '"', "\u201d": '"', "\u2033": '"'})


def _normalise(text: str) -> str:
    """Lower-case, plain quotes, no region indices, no thousands separators."""
    text = text.lower()
    text = text.translate(_PLAIN_QUOTES)
    text = _REGION_RE.sub(" ", text)
    return _THOUSANDS_RE.sub("", text)


def _words_to_digits(text: str) -> str:
    """Number words followed by a unit become digits ("six feet" -> "6 feet")."""
    text = _COMPOUND_WORD_RE.sub(lambda m: str(_TENS_ALL[m.group(1)] + WORD_NUMBERS[m.group(2)]), text)
    return _WORD_RE.sub(lambda m: str(WORD_NUMBERS[m.group(1)]), text)


@dataclass
class _Token:
    value: float
    unit: str | None
    start: int
    end: int  # after the unit when there is one


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    for match in _NUMBER_RE.finditer(text):
        unit = _UNIT_RE.match(text, match.end())  # its one named group that matched is the unit
        end = unit.end() if unit else match.end()
        out.append(_Token(float(match.group(1)), unit.lastgroup if unit else None, match.start(), end))
    return out


def _meters(token: _Token, unit: str | None = None) -> float:
    return token.value * _UNIT_METERS[unit or token.unit or "m"]


def _quantities(text: str) -> list[tuple[float, bool]]:
    """Every quantity in reading order as (meters, had_unit), with combos and ranges merged."""
    tokens = _tokens(text)
    out: list[tuple[float, bool]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        gap = text[tok.end : nxt.start] if nxt else ""
        # 5'10", 5 ft 10 in, 5 feet 10 (inches implied after a feet value)
        if tok.unit == "ft" and nxt and nxt.unit in ("in", None) and _COMBO_GAP_RE.fullmatch(gap):
            out.append((_meters(tok) + nxt.value * _UNIT_METERS["in"], True))
            i += 2
            continue
        # 2-3 m, 2 to 3 m, between 2 and 3 m, 2 m - 3 m
        if nxt and nxt.unit and tok.unit in (None, nxt.unit) and _RANGE_GAP_RE.fullmatch(gap):
            if gap.strip() != "and" or re.search(r"between\s*$", text[: tok.start]):
                out.append(((_meters(tok, nxt.unit) + _meters(nxt)) / 2.0, True))
                i += 2
                continue
        if tok.unit or not re.match(r"[a-z]", text[tok.end : tok.end + 1]):  # a bare number not followed by a letter
            out.append((_meters(tok), tok.unit is not None))
        i += 1
    return out


def parse_quantity(text: str | None) -> float | None:
    """A length in meters read from free text, or None when it holds no number (see module doc)."""
    if not text:
        return None
    found = _quantities(_words_to_digits(_normalise(text)))
    return next((value for value, had_unit in found if had_unit), found[0][0] if found else None)


def parse_clock(text: str | None) -> int | None:
    """The clock hour (1..12) of the first "N o'clock" in the text, digits or words; else None."""
    if not text:
        return None
    match = _CLOCK_RE.search(_normalise(text))
    if not match:
        return None
    word = match.group(1)
    hour = int(word) if word.isdigit() else WORD_NUMBERS[word]
    return hour if 1 <= hour <= 12 else None


def clock_distance(a: int, b: int) -> int:
    """Hours between two clock positions the short way round (0..6): 11 and 1 are 2 apart."""
    for hour in (a, b):
        if not 1 <= hour <= 12:
            raise ValueError(f"clock hour must be 1..12, got {hour}")
    d = abs(a - b) % 12
    return min(d, 12 - d)


def score_numeric(pred_text: str | None, target_text: str) -> dict[str, Any]:
    """Relative error and success at 10/25/50% (`correct`: 25%); an unreadable target is a data error."""
    target = parse_quantity(target_text)
    if target is None:
        raise TheWorldUserError(f"reference answer has no quantity: {target_text!r}")
    pred = parse_quantity(pred_text)
    if pred is None:
        rel: float | None = None
    elif target == 0:
        rel = 0.0 if pred == 0 else math.inf
    else:
        rel = abs(pred - target) / abs(target)
    result: dict[str, Any] = {"pred_m": pred, "target_m": target, "rel_error": rel}
    for pct in (10, 25, 50):
        result[f"success_{pct}"] = rel is not None and rel <= pct / 100.0
    result["correct"] = result["success_25"]
    return result


def score_clock(pred_text: str | None, target_text: str) -> dict[str, Any]:
    """Clock-direction score: `correct` when the hours match, `within_1` when at most 1 h apart."""
    target = parse_clock(target_text)
    if target is None:
        raise TheWorldUserError(f"reference answer has no clock direction: {target_text!r}")
    pred = parse_clock(pred_text)
    distance = None if pred is None else clock_distance(pred, target)
    return {
        "pred_hour": pred,
        "target_hour": target,
        "distance": distance,
        "correct": distance == 0,
        "within_1": distance is not None and distance <= 1,
    }
