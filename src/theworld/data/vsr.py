"""Visual Spatial Reasoning (VSR): true/false captions about COCO images, read by `read_vsr` for training and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from theworld.data.images import BadVisual, resolve_visual
from theworld.data.loading import RecordFormat
from theworld.data.qa import format_question, qa_sample
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError

VSR_CHOICES = ("true", "false")
_LABELS = {"1": "true", "true": "true", "0": "false", "false": "false"}


def vsr_question(caption: str) -> str:
    """The question asked about a VSR caption (before the options are appended)."""
    return f'Is this statement about the image true or false? "{caption.strip()}"'


def vsr_prompt(caption: str) -> str:
    """The full user-turn text for a caption, as evaluation builds it from `vsr_question`."""
    return format_question(vsr_question(caption), list(VSR_CHOICES))


def read_vsr(record: dict[str, Any], where: str, image_folder: Any, *, bad_visual: BadVisual) -> tuple[Any, str, str]:
    """(visual, question, answer) of a VSR record: the one reader for training and evaluation."""
    if record.get("image") is None or not isinstance(record.get("caption"), str) or not record["caption"].strip():
        raise TheWorldUserError(f"{where}: a VSR record needs `image` and `caption`")
    if record.get("label") is None:
        raise TheWorldUserError(f"{where}: missing field 'label'")
    answer = _LABELS.get(str(record.get("label")).strip().lower())
    if answer is None:
        raise TheWorldUserError(f"{where}: VSR label must be 1 or 0, got {record.get('label')!r} (or true/false)")
    # The COCO image is in the folder its link names or in either COCO 2017 split (users point at the COCO root).
    subfolders = (Path(str(record.get("image_link") or "")).parent.name, "train2017", "val2017")
    visual = resolve_visual(record["image"], image_folder, where, subfolders, bad_visual=bad_visual)
    return visual, vsr_question(record["caption"]), answer


def vsr_record_to_sample(record: dict[str, Any], *, image_folder: str | None, sample_id: str) -> Sample:
    """One VSR record -> user (image + true/false question) and assistant ("true"/"false")."""
    visual, question, answer = read_vsr(record, f"sample {sample_id}", image_folder, bad_visual="skip")
    meta = {"format": "vsr", **{k: record[k] for k in ("relation", "subj", "obj") if k in record}}
    return qa_sample(sample_id, [visual], question, VSR_CHOICES, answer, meta)


# The `load_samples` hook for `vsr`, and its file loader (COCO images looked up in `image_folder`).
vsr_samples = RecordFormat(vsr_record_to_sample, name_key="image")
load_vsr = vsr_samples.load
