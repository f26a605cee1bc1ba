"""The Hugging Face chat format (`messages` + `images` column) and the generic QA JSONL.

HF chat records already are `Sample.messages` except that image items are placeholders
(`{"type": "image"}`) filled in order from a separate `images` column; the fill must be exact,
because a shifted image silently trains the model on the wrong picture. QA records (qa.py) become
a two-turn conversation built with `format_question`, the same prompt evaluation uses.
"""

from __future__ import annotations

import os
from typing import Any

from PIL import Image

from theworld.data.images import decode_image_bytes, naming_sample, resolve_clip, resolve_path
from theworld.data.loading import RecordFormat
from theworld.data.qa import format_question
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError

ROLES = ("user", "assistant", "system")


def column_image(value: Any, image_folder: str | None, label: str) -> Any:
    """One `images` column entry -> an absolute path or a decoded PIL image.

    Entries are a path (relative to `image_folder`), a `{"path", "bytes"}` dict as HF `Image`
    features store them (bytes win when present), or an already decoded PIL image.
    """
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return decode_image_bytes(value["bytes"], value.get("path") or label)
        value = value.get("path")
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise TheWorldUserError(f"{label}: an image entry has neither a path nor bytes")
    return resolve_path(str(value), image_folder)


def _column(record: dict[str, Any], *names: str) -> list[Any]:
    """The first present column among `names` as a list (a single entry is wrapped)."""
    for name in names:
        value = record.get(name)
        if value is not None:
            return list(value) if isinstance(value, (list, tuple)) else [value]
    return []


def messages_record_to_sample(
    record: dict[str, Any], *, image_folder: str | None, sample_id: str
) -> Sample:
    """One HF chat record -> `Sample`, placeholders filled from `images` / `videos` in order.

    Items that already carry their visual (`{"type": "image", "image": "a.png"}`) keep it and
    do not consume the column. A count mismatch raises `TheWorldUserError` naming the record.
    """
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TheWorldUserError(f"sample {sample_id}: `messages` must be a non-empty list")
    checked = [_checked_message(message, sample_id) for message in messages]
    columns = {
        "image": _column(record, "images", "image"),
        "video": _column(record, "videos", "video"),
    }
    for kind, column in columns.items():
        wanted = sum(
            1
            for _, items in checked
            for item in items
            if item.get("type") == kind and item.get(kind) is None
        )
        if wanted != len(column):
            raise TheWorldUserError(
                f"sample {sample_id}: {wanted} {{'type': '{kind}'}} placeholder(s) but "
                f"{len(column)} entries in the `{kind}s` column"
            )
    queues = {kind: iter(column) for kind, column in columns.items()}
    out: list[dict[str, Any]] = []
    with naming_sample(sample_id):
        for role, items in checked:
            out.append(
                {
                    "role": role,
                    "content": [_filled(item, queues, image_folder, sample_id) for item in items],
                }
            )
    return Sample(id=sample_id, messages=out, meta={"format": "messages"})


def _checked_message(message: Any, sample_id: str) -> tuple[str, list[dict[str, Any]]]:
    """(role, content items) of one message; a plain-string content becomes one text item."""
    role = message.get("role") if isinstance(message, dict) else None
    if role not in ROLES:
        raise TheWorldUserError(
            f"sample {sample_id}: unknown role {role!r}; expected one of {ROLES}"
        )
    content = message.get("content")
    if isinstance(content, str):
        return role, [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(item, dict) for item in content):
        raise TheWorldUserError(
            f"sample {sample_id}: {role} content must be a string or a list of items"
        )
    for item in content:
        if item.get("type") not in ("text", "image", "video"):
            raise TheWorldUserError(
                f"sample {sample_id}: unknown content type {item.get('type')!r}"
            )
    return role, content


def _filled(
    item: dict[str, Any], queues: dict[str, Any], image_folder: str | None, sample_id: str
) -> dict[str, Any]:
    """The clean content item: text, or a visual (inline value, else the next column entry)."""
    kind = item["type"]
    if kind == "text":
        return {"type": "text", "text": item.get("text") or ""}
    value = item.get(kind)
    if value is None:
        value = next(queues[kind])  # counts were checked: an entry is left
    if kind == "video":
        return {"type": "video", "video": resolve_clip(value, image_folder)}
    return {"type": "image", "image": column_image(value, image_folder, sample_id)}


# The `load_samples` hook for `messages`, and its file loader.
messages_samples = RecordFormat(messages_record_to_sample)
load_messages = messages_samples.load


def qa_record_to_sample(
    record: dict[str, Any], *, image_folder: str | None, sample_id: str
) -> Sample:
    """One QA record -> user (visuals + `format_question`) and assistant (the answer) turns."""
    question, answer = record.get("question"), record.get("answer")
    if not isinstance(question, str) or answer is None:
        raise TheWorldUserError(
            f"sample {sample_id}: a QA training record needs `question` and `answer`"
        )
    choices = record.get("choices")
    user: list[dict[str, Any]] = []
    with naming_sample(sample_id):
        for image in _column(record, "images", "image"):
            user.append({"type": "image", "image": column_image(image, image_folder, sample_id)})
        if record.get("video") is not None:
            user.append({"type": "video", "video": resolve_clip(record["video"], image_folder)})
    user.append({"type": "text", "text": format_question(question, choices)})
    meta: dict[str, Any] = {"format": "qa"}
    for key in ("category", "choices"):
        if record.get(key) is not None:
            meta[key] = record[key]
    return question_answer_sample(sample_id, user, str(answer), meta)


def question_answer_sample(
    sample_id: str, user: list[dict[str, Any]], answer: str, meta: dict[str, Any]
) -> Sample:
    """A one-question sample: the user turn's `user` content, then the assistant's `answer`."""
    return Sample(
        id=sample_id,
        messages=[
            {"role": "user", "content": user},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        meta=meta,
    )


# The `load_samples` hook for `qa`, and its file loader.
qa_samples = RecordFormat(qa_record_to_sample)
load_qa = qa_samples.load
