"""Visual Spatial Reasoning (VSR) JSONL as true/false training conversations.

Record: `{"image": "000000085637.jpg", "caption": ..., "label": 1|0, "relation", "subj",
"obj", "image_link"}`. The prompt comes from `vsr_question` + `format_question` with the choices
`["true", "false"]`, so training and VSR evaluation can share one prompt.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from theworld.data.images import DEFAULT_MAX_SKIP_FRACTION, resolve_path
from theworld.data.loading import load_file, record_id, samples_from_records
from theworld.data.messages import question_answer_sample
from theworld.data.qa import format_question
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError

VSR_CHOICES = ("true", "false")
# VSR images come from both COCO 2017 splits; users often point at the COCO root.
_COCO_SUBFOLDERS = ("", "train2017", "val2017")


def vsr_question(caption: str) -> str:
    """The question asked about a VSR caption (before the options are appended)."""
    return f'Is this statement about the image true or false? "{caption.strip()}"'


def vsr_prompt(caption: str) -> str:
    """The full user-turn text for a caption, shared with evaluation."""
    return format_question(vsr_question(caption), list(VSR_CHOICES))


def coco_image_path(name: str, image_folder: str | None) -> str:
    """`image_folder/name`, or the copy under `train2017/` or `val2017/` when that exists.

    When none exists the direct path is returned and validation reports it as missing.
    """
    for sub in _COCO_SUBFOLDERS:
        candidate = resolve_path(os.path.join(sub, name) if sub else name, image_folder)
        if os.path.isfile(candidate):
            return candidate
    return resolve_path(name, image_folder)


def _answer(label: Any, sample_id: str) -> str:
    if label in (1, True, "1", "true", "True"):
        return "true"
    if label in (0, False, "0", "false", "False"):
        return "false"
    raise TheWorldUserError(f"sample {sample_id}: VSR label must be 1 or 0, got {label!r}")


def vsr_record_to_sample(
    record: dict[str, Any], *, image_folder: str | None, sample_id: str
) -> Sample:
    """One VSR record -> user (image + true/false question) and assistant ("true"/"false")."""
    image, caption = record.get("image"), record.get("caption")
    if not isinstance(image, str) or not isinstance(caption, str):
        raise TheWorldUserError(f"sample {sample_id}: a VSR record needs `image` and `caption`")
    answer = _answer(record.get("label"), sample_id)
    meta = {"format": "vsr", **{k: record[k] for k in ("relation", "subj", "obj") if k in record}}
    user = [
        {"type": "image", "image": coco_image_path(image, image_folder)},
        {"type": "text", "text": vsr_prompt(caption)},
    ]
    return question_answer_sample(sample_id, user, answer, meta)


def vsr_sample_id(record: dict[str, Any], index: int, source: str) -> str:
    """VSR has no id field and one image carries several captions, so ids are `<image>#<index>`."""
    if record.get("id") is None and isinstance(record.get("image"), str):
        return f"{record['image']}#{index}"
    return record_id(record, index, source)


# The `load_samples` hook for `vsr`: records -> validated samples.
vsr_samples = functools.partial(
    samples_from_records, to_sample=vsr_record_to_sample, id_rule=vsr_sample_id
)


def load_vsr(
    path: str,
    image_folder: str | None = None,
    *,
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
    limit: int | None = None,
) -> list[Sample]:
    """Load a VSR JSONL split; COCO images are looked up in `image_folder` (default: its folder)."""
    return load_file(
        path, vsr_samples, image_folder, max_skip_fraction=max_skip_fraction, limit=limit
    )
