"""OpenSpatialDataset (SpatialRGPT's training data) as `Sample`s with one region naming.

In the raw data a human turn names regions with `<mask> <depth>` (or `<mask>`), and the gpt
turn answers with `Region [k]`, k counting the masks of *its own question*: `Region [0]` means a
different object in every turn. Gemma has no mask encoder, so regions must be named in text
(and optionally drawn on the image) with one numbering for the whole conversation: mask
occurrence g (counted over all human turns, which is also the index into `bbox`) becomes
`Region [g]` everywhere, and each answer is rewritten to the same global numbers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from typing import Any

from PIL import Image, ImageDraw, ImageFont, features

from theworld.data.images import (
    CORRUPT_IMAGE_ERRORS,
    DEFAULT_MAX_SKIP_FRACTION,
    UnreadableVisual,
    naming_sample,
    resolve_path,
)
from theworld.data.llava import ROLES, conversations_to_messages
from theworld.data.loading import load_file, record_id, samples_from_records
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError

_MASK = re.compile(r"<mask>(?:\s*<depth>)?")
_REGION = re.compile(r"Region \[(\d+)\]")
_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6")


def default_cache_dir() -> str:
    """Where boxed copies of images go unless told otherwise (XDG cache, not the data folder,
    which is often read-only or shared)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "theworld", "openspatial_boxes")


def renumber_regions(
    turns: list[dict[str, Any]], sample_id: str
) -> tuple[list[dict[str, Any]], int]:
    """Rewrite masks and `Region [k]` references to global numbers; also return the mask count.

    Each `<mask>` (with an optional following `<depth>`) in a human turn becomes `Region [g]`,
    g the global index of that occurrence; `Region [k]` in the next gpt turn becomes the global
    index of the k-th mask of the preceding question. An out-of-range k is a data error.
    """
    if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
        raise TheWorldUserError(
            f"sample {sample_id}: `conversations` must be a non-empty list of turns"
        )
    next_index = 0
    local: list[int] = []  # global indices of the preceding question's masks
    rewritten = []
    for turn in turns:
        role = ROLES.get(turn.get("from", turn.get("role")))
        text = turn.get("value", turn.get("content"))
        if not isinstance(text, str):
            raise TheWorldUserError(f"sample {sample_id}: a turn has no text `value`: {turn!r}")
        if role == "user":
            pieces = _MASK.split(text)
            local = list(range(next_index, next_index + len(pieces) - 1))
            next_index += len(local)
            text = pieces[0] + "".join(
                f"Region [{g}]{piece}" for g, piece in zip(local, pieces[1:], strict=True)
            )
        elif role == "assistant":
            text = _REGION.sub(
                functools.partial(_to_global, local=local, sample_id=sample_id), text
            )
        rewritten.append({**turn, "value": text})
    return rewritten, next_index


def _to_global(match: re.Match[str], *, local: list[int], sample_id: str) -> str:
    """`Region [k]` of an answer -> `Region [g]` of the k-th mask of its question."""
    k = int(match.group(1))
    if k >= len(local):
        raise TheWorldUserError(
            f"sample {sample_id}: an answer names Region [{k}] but its question has "
            f"{len(local)} region(s)"
        )
    return f"Region [{local[k]}]"


def draw_numbered_boxes(image_path: str, boxes: list[list[float]], out_path: str) -> None:
    """Save a copy of the image with box g outlined and labelled `g` (shared boxes: `0,2`).

    A region mentioned in two questions has two identical boxes; drawing both labels on one
    outline keeps the picture readable while every number in the text still points at a box.
    """
    with Image.open(image_path) as source:
        image = source.convert("RGB")
    draw = ImageDraw.Draw(image)
    width, height = image.size
    font_size = max(12, min(width, height) // 30)
    font = (
        ImageFont.load_default(size=font_size)
        if features.check_module("freetype2")
        else ImageFont.load_default()
    )
    line = max(2, min(width, height) // 200)
    labels: dict[tuple[float, ...], list[int]] = {}
    for index, box in enumerate(boxes):
        labels.setdefault(tuple(box), []).append(index)
    for colour_index, (box, numbers) in enumerate(labels.items()):
        x1, y1, x2, y2 = box
        x1, x2 = sorted((max(0.0, x1), min(width - 1.0, x2)))
        y1, y2 = sorted((max(0.0, y1), min(height - 1.0, y2)))
        colour = _COLOURS[colour_index % len(_COLOURS)]
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        text = ",".join(str(n) for n in numbers)
        left, top, right, bottom = draw.textbbox((x1 + line, y1 + line), text, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=colour)
        draw.text((x1 + line, y1 + line), text, fill="white", font=font)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    partial = f"{out_path}.{os.getpid()}.tmp"
    image.save(partial, format="JPEG", quality=95)
    os.replace(partial, out_path)  # atomic: parallel workers never see half a file


def boxed_image(image_path: str, boxes: list[list[float]], cache_dir: str, name: str) -> str:
    """The cached boxed copy for these boxes, drawn on first use (keyed by the boxes' hash,
    since one photo appears in many records with different regions)."""
    digest = hashlib.sha1(json.dumps(boxes).encode()).hexdigest()[:12]
    out_path = os.path.join(os.path.abspath(cache_dir), f"{name}-{digest}.jpg")
    if not os.path.exists(out_path):
        if not os.path.isfile(image_path):
            raise UnreadableVisual(image_path, "file not found")
        try:
            draw_numbered_boxes(image_path, boxes, out_path)
        except CORRUPT_IMAGE_ERRORS as err:
            raise UnreadableVisual(
                image_path, f"unreadable image ({type(err).__name__}: {err})"
            ) from err
    return out_path


def openspatial_record_to_sample(
    record: dict[str, Any],
    *,
    image_folder: str | None,
    sample_id: str,
    draw_boxes: bool = False,
    cache_dir: str | None = None,
) -> Sample:
    """One OpenSpatial record -> `Sample` with globally numbered regions.

    `meta["boxes"]` holds box g for `Region [g]`. With `draw_boxes`, the image is a cached copy
    with the numbered boxes drawn, so the model can see which region is which.
    """
    filename = record.get("filename")
    if not isinstance(filename, str) or not filename:
        raise TheWorldUserError(f"sample {sample_id}: no `filename`")
    name = filename if filename.lower().endswith(".jpg") else f"{filename}.jpg"
    turns, n_masks = renumber_regions(record.get("conversations"), sample_id)
    boxes = [[float(v) for v in box] for box in record.get("bbox") or []]
    if len(boxes) != n_masks or any(len(box) != 4 for box in boxes):
        raise TheWorldUserError(
            f"sample {sample_id}: {n_masks} <mask> occurrence(s) but {len(boxes)} bbox entries "
            f"(need one [x1, y1, x2, y2] per <mask>)"
        )
    image = resolve_path(name, image_folder)
    if draw_boxes:
        with naming_sample(sample_id):
            image = boxed_image(image, boxes, cache_dir or default_cache_dir(), name[:-4])
    messages = conversations_to_messages(turns, [{"type": "image", "image": image}], [], sample_id)
    return Sample(id=sample_id, messages=messages, meta={"format": "openspatial", "boxes": boxes})


def openspatial_sample_id(record: dict[str, Any], index: int, source: str) -> str:
    """Records have no id and one photo has many records, so ids are `<filename>#<index>`."""
    if record.get("id") is None and record.get("filename"):
        return f"{record['filename']}#{index}"
    return record_id(record, index, source)


# The `load_samples` hook for `openspatial`: records -> validated samples; takes the
# `draw_boxes` and `cache_dir` options of `openspatial_record_to_sample`.
openspatial_samples = functools.partial(
    samples_from_records, to_sample=openspatial_record_to_sample, id_rule=openspatial_sample_id
)


def load_openspatial(
    path: str,
    image_folder: str | None = None,
    *,
    draw_boxes: bool = False,
    cache_dir: str | None = None,
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
    limit: int | None = None,
) -> list[Sample]:
    """Stream an OpenSpatialDataset JSON array (ijson) or JSONL; images are `<id>.jpg` files
    in `image_folder` (default: the data file's folder)."""
    return load_file(
        path,
        openspatial_samples,
        image_folder,
        max_skip_fraction=max_skip_fraction,
        limit=limit,
        draw_boxes=draw_boxes,
        cache_dir=cache_dir,
    )
