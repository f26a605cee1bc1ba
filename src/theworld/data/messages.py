"""The Hugging Face chat format: placeholders are filled in order from the `images` column, exactly (a shifted
image silently trains on the wrong picture); and the `qa` format's training reader (`theworld.data.qa`).
"""

from __future__ import annotations

from typing import Any

from theworld.data.images import resolve_clip, resolve_visual
from theworld.data.loading import RecordFormat
from theworld.data.qa import qa_sample, read_qa
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError

ROLES = ("user", "assistant", "system")


def _column(record: dict[str, Any], *names: str) -> list[Any]:
    """The first present column among `names` as a list (a single entry is wrapped)."""
    value = next((record[name] for name in names if record.get(name) is not None), None)
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def messages_record_to_sample(record: dict[str, Any], *, image_folder: str | None, sample_id: str) -> Sample:
    """One HF chat record -> `Sample`, placeholders filled from `images` / `videos` in order."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TheWorldUserError(f"sample {sample_id}: `messages` must be a non-empty list")
    checked = [_checked_message(message, sample_id) for message in messages]
    columns = {"image": _column(record, "images", "image"), "video": _column(record, "videos", "video")}
    for kind, column in columns.items():
        wanted = sum(item.get("type") == kind and item.get(kind) is None for _, items in checked for item in items)
        if wanted != len(column):
            raise TheWorldUserError(
                f"sample {sample_id}: {wanted} {{'type': '{kind}'}} placeholder(s) but "
                f"{len(column)} entries in the `{kind}s` column"
            )
    queues = {kind: iter(column) for kind, column in columns.items()}
    out = [{"role": r, "content": [_filled(i, queues, image_folder, sample_id) for i in items]} for r, items in checked]
    return Sample(id=sample_id, messages=out, meta={"format": "messages"})


def _checked_message(message: Any, sample_id: str) -> tuple[str, list[dict[str, Any]]]:
    """(role, content items) of one message; a plain-string content becomes one text item."""
    role = message.get("role") if isinstance(message, dict) else None
    if role not in ROLES:
        raise TheWorldUserError(f"sample {sample_id}: unknown role {role!r}; expected one of {ROLES}")
    content = message.get("content")
    if isinstance(content, str):
        return role, [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(item, dict) for item in content):
        raise TheWorldUserError(f"sample {sample_id}: {role} content must be a string or a list of items")
    for item in content:
        if item.get("type") not in ("text", "image", "video"):
            raise TheWorldUserError(f"sample {sample_id}: unknown content type {item.get('type')!r}")
    return role, content


def _filled(item: dict[str, Any], queues: dict[str, Any], image_folder: str | None, sample_id: str) -> dict[str, Any]:
    """The clean content item: text, or a visual (inline value, else the next column entry)."""
    kind = item["type"]
    if kind == "text":
        return {"type": "text", "text": item.get("text") or ""}
    value = item.get(kind)
    if value is None:
        value = next(queues[kind])  # counts were checked: an entry is left
    if kind == "video":
        return {"type": "video", "video": resolve_clip(value, image_folder)}
    return {"type": "image", "image": resolve_visual(value, image_folder, f"sample {sample_id}", bad_visual="skip")}


# The `load_samples` hook for `messages`, and its file loader.
messages_samples = RecordFormat(messages_record_to_sample)
load_messages = messages_samples.load


def qa_record_to_sample(record: dict[str, Any], *, image_folder: str | None, sample_id: str) -> Sample:
    """One QA record -> user (visuals + `format_question`) and assistant (the answer) turns."""
    question, answer = record.get("question"), record.get("answer")
    if not isinstance(question, str) or answer is None:
        raise TheWorldUserError(f"sample {sample_id}: a QA training record needs `question` and `answer`")
    choices, visuals = read_qa(record, f"sample {sample_id}", image_folder, bad_visual="skip")
    meta = {"format": "qa", **{key: record[key] for key in ("category", "choices") if record.get(key) is not None}}
    return qa_sample(sample_id, visuals, question, choices, str(answer), meta)


# The `load_samples` hook for `qa`, and its file loader.
qa_samples = RecordFormat(qa_record_to_sample)
load_qa = qa_samples.load
