"""OpenSpatialDataset (SpatialRGPT's training data) as `Sample`s, and the region naming and numbered boxes
SpatialRGPT-Bench shares with it: regions are named in text (Gemma has no mask encoder), one numbering
for the whole conversation (docs/data-formats.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from PIL import Image, ImageDraw, ImageFont, features

from theworld.data.images import CORRUPT_IMAGE_ERRORS, UnreadableVisual, resolve_path
from theworld.data.llava import ROLES, conversations_to_messages, turn_text
from theworld.data.loading import RecordFormat
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError

_MASK = re.compile(r"<mask>(?:\s*<depth>)?")
_REGION = re.compile(r"Region \[(\d+)\]")
_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6")


def default_cache_dir() -> str:
    """Where boxed copies go unless told: the XDG cache (the data folder is often read-only or shared)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "theworld", "openspatial_boxes")


def name_regions(text: str, start: int = 0) -> tuple[str, int]:
    """Replace each `<mask>` (with an optional `<depth>`) by "Region [k]", k from `start`; and their count."""
    pieces = _MASK.split(text)
    return pieces[0] + "".join(f"Region [{start + g}]{piece}" for g, piece in enumerate(pieces[1:])), len(pieces) - 1


def renumber_regions(turns: list[dict[str, Any]], sample_id: str) -> tuple[list[dict[str, Any]], int]:
    """Rewrite masks and answers' `Region [k]` to conversation-wide numbers; and the mask count."""
    if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
        raise TheWorldUserError(f"sample {sample_id}: `conversations` must be a non-empty list of turns")
    next_index = 0
    local: list[int] = []  # global indices of the preceding question's masks

    def to_global(match: re.Match[str]) -> str:  # an answer's `Region [k]` -> `Region [g]` of its question's k-th mask
        k = int(match.group(1))
        if k >= len(local):
            message = f"an answer names Region [{k}] but its question has {len(local)} region(s)"
            raise TheWorldUserError(f"sample {sample_id}: {message}")
        return f"Region [{local[k]}]"

    rewritten = []
    for turn in turns:
        role = ROLES.get(turn.get("from", turn.get("role")))
        text = turn_text(turn, sample_id)
        if role == "user":
            text, count = name_regions(text, next_index)
            local = list(range(next_index, next_index + count))
            next_index += count
        elif role == "assistant":
            text = _REGION.sub(to_global, text)
        rewritten.append({**turn, "value": text})
    return rewritten, next_index


def draw_boxes(image: Image.Image, boxes: list[list[float]]) -> Image.Image:
    """An RGB copy of `image` with box k outlined and labelled `k` (identical boxes share one label `0,2`)."""
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    width, height = image.size
    font_size = max(12, min(width, height) // 30)
    font = ImageFont.load_default(size=font_size) if features.check_module("freetype2") else ImageFont.load_default()
    line = max(2, min(width, height) // 200)
    labels: dict[tuple[float, ...], list[int]] = {}
    for index, box in enumerate(boxes):
        labels.setdefault(tuple(float(v) for v in box), []).append(index)
    for colour_index, (box, numbers) in enumerate(labels.items()):
        x1, x2 = sorted(min(max(v, 0.0), width - 1.0) for v in (box[0], box[2]))
        y1, y2 = sorted(min(max(v, 0.0), height - 1.0) for v in (box[1], box[3]))
        colour = _COLOURS[colour_index % len(_COLOURS)]
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        text = ",".join(str(n) for n in numbers)
        left, top, right, bottom = draw.textbbox((x1 + line, y1 + line), text, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=colour)
        draw.text((x1 + line, y1 + line), text, fill="white", font=font)
    return image


def draw_numbered_boxes(image_path: str, boxes: list[list[float]], out_path: str) -> None:
    """Save a JPEG copy of the image with its numbered boxes (`draw_boxes`), atomically."""
    with Image.open(image_path) as source:
        image = draw_boxes(source, boxes)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    partial = f"{out_path}.{os.getpid()}.tmp"
    image.save(partial, format="JPEG", quality=95)
    os.replace(partial, out_path)  # atomic: parallel workers never see half a file


def boxed_image(image_path: str, boxes: list[list[float]], cache_dir: str, name: str) -> str:
    """The cached boxed copy for these boxes (keyed by their hash: one photo has many records), drawn on first use."""
    digest = hashlib.sha1(json.dumps(boxes).encode()).hexdigest()[:12]
    out_path = os.path.join(os.path.abspath(cache_dir), f"{name}-{digest}.jpg")
    if not os.path.exists(out_path):
        if not os.path.isfile(image_path):
            raise UnreadableVisual(image_path, "file not found")
        try:
            draw_numbered_boxes(image_path, boxes, out_path)
        except CORRUPT_IMAGE_ERRORS as err:
            raise UnreadableVisual(image_path, f"unreadable image ({type(err).__name__}: {err})") from err
    return out_path


def openspatial_record_to_sample(
    record: dict[str, Any],
    *,
    image_folder: str | None,
    sample_id: str,
    draw_boxes: bool = False,
    cache_dir: str | None = None,
) -> Sample:
    """One OpenSpatial record -> `Sample`; `meta["boxes"]` holds box g of `Region [g]`."""
    filename = record.get("filename")
    if not isinstance(filename, str) or not filename:
        raise TheWorldUserError(f"sample {sample_id}: no `filename`")
    name = filename if filename.lower().endswith(".jpg") else f"{filename}.jpg"
    turns, n_masks = renumber_regions(record.get("conversations"), sample_id)
    boxes = [[float(v) for v in box] for box in record.get("bbox") or []]
    if len(boxes) != n_masks or any(len(box) != 4 for box in boxes):
        counts = f"{n_masks} <mask> occurrence(s) but {len(boxes)} bbox entries"
        raise TheWorldUserError(f"sample {sample_id}: {counts} (need one [x1, y1, x2, y2] per <mask>)")
    image = resolve_path(name, image_folder)
    if draw_boxes:
        image = boxed_image(image, boxes, cache_dir or default_cache_dir(), name[:-4])
    messages = conversations_to_messages(turns, [{"type": "image", "image": image}], [], sample_id)
    return Sample(id=sample_id, messages=messages, meta={"format": "openspatial", "boxes": boxes})


# The `load_samples` hook for `openspatial` (options: `draw_boxes`, `cache_dir` of
# `openspatial_record_to_sample`), and its file loader: an OpenSpatialDataset JSON array (streamed)
# or JSONL, images `<id>.jpg` in `image_folder` (default: the data file's folder).
openspatial_samples = RecordFormat(openspatial_record_to_sample, name_key="filename")
load_openspatial = openspatial_samples.load
