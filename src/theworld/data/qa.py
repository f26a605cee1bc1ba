"""The generic question-answer record (`qa` format, `jsonl` benchmark, synthetic data; docs/data-formats.md).

Training and evaluation read it with `read_qa` and prompt with `format_question`, so a model is evaluated on
the prompt it was trained on; they differ only in `bad_visual` (training skips the sample, evaluation raises).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from theworld.data.images import BadVisual, resolve_record_clip, resolve_visual
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError
from theworld.processing.video import VideoFile


def format_question(question: str, choices: Sequence[str] | None = None) -> str:
    """The user-turn text for a question; choices are listed so the answer is one of them."""
    question = question.strip()
    if not choices:
        return question
    options = ", ".join(str(c) for c in choices)
    return f"{question}\nOptions: {options}.\nAnswer with one of the options."


def read_qa(
    record: dict[str, Any], where: str, image_folder: Any, *, bad_visual: BadVisual
) -> tuple[list[str] | None, list[Any]]:
    """A QA record's checked choices and visuals (`image`, then `images`, then the `video` clip)."""
    choices = record.get("choices")
    if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)):
        raise TheWorldUserError(f"{where}: 'choices' must be a list of strings")
    visuals: list[Any] = []
    if record.get("image") is not None:
        visuals.append(resolve_visual(record["image"], image_folder, where, bad_visual=bad_visual))
    images = record.get("images")
    if images is not None:
        if not isinstance(images, list) or not images:
            raise TheWorldUserError(f"{where}: 'images' must be a non-empty list of paths")
        visuals += [resolve_visual(v, image_folder, where, bad_visual=bad_visual) for v in images]
    if record.get("video") is not None:
        visuals.append(resolve_record_clip(record["video"], image_folder, where, bad_visual=bad_visual))
    return choices, visuals


def qa_sample(
    sample_id: str,
    visuals: Sequence[Any],
    question: str,
    choices: Sequence[str] | None,
    answer: str | None,
    meta: dict[str, Any],
) -> Sample:
    """A one-question sample: visuals and the question, then the assistant's `answer` when given."""
    content = [
        {"type": "video", "video": list(v) if isinstance(v, (list, tuple)) else v}
        if isinstance(v, (list, tuple, VideoFile))
        else {"type": "image", "image": v}
        for v in visuals
    ]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [*content, {"type": "text", "text": format_question(question, choices)}]}
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return Sample(id=sample_id, messages=messages, meta=meta)
