"""The LLaVA conversation format and LLaVA-CC3M (docs/data-formats.md): each visual goes exactly where its
`<image>` marker stands, so the model trains on the prompt the data author wrote.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from theworld.data.images import resolve_clip, resolve_path
from theworld.data.loading import RecordFormat
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError

ROLES: dict[str, str] = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}

_MARKER = re.compile(r"(<image>|<video>)")


def conversations_to_messages(
    turns: list[dict[str, Any]], images: list[dict[str, Any]], videos: list[dict[str, Any]], sample_id: str
) -> list[dict[str, Any]]:
    """LLaVA turns -> HF chat messages, each visual at its marker (rules: docs/data-formats.md); a count mismatch raises."""
    if not isinstance(turns, list) or not turns:
        raise TheWorldUserError(f"sample {sample_id}: `conversations` must be a non-empty list")
    texts = [(_role(turn, sample_id), turn_text(turn, sample_id)) for turn in turns]
    joined = "\n".join(text for _, text in texts)
    marks = {marker: joined.count(marker) for marker in ("<image>", "<video>")}
    groups = {"<image>": images, "<video>": videos} if marks["<video>"] else {"<image>": images + videos}
    if not marks["<video>"] and not marks["<image>"] and groups["<image>"]:
        return _visuals_first(texts, groups["<image>"], sample_id)
    for marker, given in groups.items():
        if marks[marker] != len(given):
            raise TheWorldUserError(
                f"sample {sample_id}: {marks[marker]} {marker} marker(s) in the conversation but "
                f"{len(given)} visual(s) given for them"
            )
    queues = {marker: iter(given) for marker, given in groups.items()}
    return [{"role": role, "content": _split_at_markers(text, queues)} for role, text in texts]


def _role(turn: Any, sample_id: str) -> str:
    if not isinstance(turn, dict):
        raise TheWorldUserError(f"sample {sample_id}: a turn is not an object: {turn!r}")
    speaker = turn.get("from", turn.get("role"))
    if speaker not in ROLES:
        raise TheWorldUserError(f"sample {sample_id}: unknown speaker {speaker!r}; expected one of {sorted(ROLES)}")
    return ROLES[speaker]


def turn_text(turn: dict[str, Any], sample_id: str) -> str:
    value = turn.get("value", turn.get("content"))
    if not isinstance(value, str):
        raise TheWorldUserError(f"sample {sample_id}: a turn has no text `value`: {turn!r}")
    return value


def _split_at_markers(text: str, queues: dict[str, Iterator[dict[str, Any]]]) -> list[dict]:
    """Content items for one turn: text pieces (stripped, empty ones dropped) and visuals."""
    content: list[dict[str, Any]] = []
    for piece in _MARKER.split(text):
        if piece in queues:  # counts were checked, so the queue has an item left
            content.append(next(queues[piece]))
        elif piece.strip():
            content.append({"type": "text", "text": piece.strip()})
    return content or [{"type": "text", "text": ""}]


def _visuals_first(texts: list[tuple[str, str]], visuals: list[dict[str, Any]], sample_id: str) -> list[dict[str, Any]]:
    """Messages with all visuals at the start of the first user turn (no markers given)."""
    users = [i for i, (role, _) in enumerate(texts) if role == "user"]
    if not users:
        raise TheWorldUserError(f"sample {sample_id}: has visuals but no user turn to hold them")
    messages = [{"role": role, "content": [{"type": "text", "text": text.strip()}]} for role, text in texts]
    messages[users[0]]["content"][:0] = visuals
    return messages


def llava_record_to_sample(record: dict[str, Any], *, image_folder: str | None, sample_id: str) -> Sample:
    """One LLaVA record -> `Sample` (text-only records allowed)."""
    images, videos = record.get("image"), record.get("video")
    images = [] if images is None else images if isinstance(images, (list, tuple)) else [images]
    one_clip = videos is not None and not (isinstance(videos, list) and videos and isinstance(videos[0], list))
    videos = [videos] if one_clip else videos or []  # one clip: a path, or a list of frames
    images = [{"type": "image", "image": resolve_path(str(p), image_folder)} for p in images]
    videos = [{"type": "video", "video": resolve_clip(v, image_folder)} for v in videos]
    messages = conversations_to_messages(record.get("conversations"), images, videos, sample_id)
    return Sample(id=sample_id, messages=messages, meta={"format": "llava"})


# The `load_samples` hook for `llava` and `cc3m`, and its file loader. LLaVA-CC3M-Pretrain-595K
# (`chat.json`, images from `images.zip` in `image_folder`) is plain LLaVA format (one human turn with
# `<image>` and a describe-the-image instruction, one gpt turn with the caption; extra fields such as
# `blip_caption` are ignored), so `load_cc3m` only names the data set.
llava_samples = RecordFormat(llava_record_to_sample)
load_llava = load_cc3m = llava_samples.load
