"""One evaluation question, whatever benchmark it came from, and its chat-format `Sample`.

Every benchmark loader produces `EvalItem`s so that the model-running half of the harness has a
single input type. `kind` says how an answer is scored, decided once at load time from the
benchmark's own annotation rather than guessed later from the text:

- "choice": `choices` are scored by log-likelihood; `answer` is one of them.
- "numeric": a metric quantity (answer text holds a number and unit; see `parsing`).
- "clock": a clock-position direction ("2 o'clock").
- "qualitative_free": free text judged against `answer` (LLM judge).

The prompt is built with `theworld.data.qa.format_question`, the same function training uses,
so a model is evaluated on the prompt it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from theworld.data.qa import format_question
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError
from theworld.processing.video import VideoFile

Kind = Literal["choice", "numeric", "clock", "qualitative_free"]
KINDS: tuple[str, ...] = ("choice", "numeric", "clock", "qualitative_free")


@dataclass
class EvalItem:
    """A benchmark question with its visuals and reference answer.

    `visuals` holds, in prompt order, absolute image paths, `PIL.Image`s, or clips: lists of
    frames or a `VideoFile` (a video file path). `answer` is None only where the benchmark split withholds answers (e.g. BLINK test).
    `meta` keeps benchmark-specific fields (original answer sentence, parsed target, ...).
    """

    id: str
    question: str
    choices: list[str] | None
    answer: str | None
    visuals: list[Any] = field(default_factory=list)
    category: str | None = None
    kind: Kind = "choice"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Validate here so that a bad record fails at load time, naming its id, instead of
        # producing a silently unscorable item in the middle of a long evaluation.
        if self.kind not in KINDS:
            raise TheWorldUserError(f"item {self.id!r}: unknown kind {self.kind!r} (expected one of {KINDS})")
        if self.kind == "choice":
            if not self.choices:
                raise TheWorldUserError(f"item {self.id!r}: kind 'choice' needs a non-empty list of choices")
            if len(set(self.choices)) != len(self.choices):
                raise TheWorldUserError(f"item {self.id!r}: duplicate choices {self.choices!r}")
            if self.answer is not None and self.answer not in self.choices:
                raise TheWorldUserError(
                    f"item {self.id!r}: answer {self.answer!r} is not one of the choices {self.choices!r}"
                )


def to_sample(item: EvalItem, answer: str | None = None) -> Sample:
    """The item as a chat `Sample`: visuals then the question text; an assistant turn if `answer`.

    Passing the answer builds the scored continuation for log-likelihood choice scoring (one
    sample per choice); leaving it out builds the generation prompt.
    """
    content: list[dict[str, Any]] = []
    for visual in item.visuals:
        if isinstance(visual, VideoFile):
            content.append({"type": "video", "video": visual})
        elif isinstance(visual, (list, tuple)):
            content.append({"type": "video", "video": list(visual)})
        else:
            content.append({"type": "image", "image": visual})
    content.append({"type": "text", "text": format_question(item.question, item.choices)})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    meta = dict(item.meta)
    meta.update({"category": item.category, "kind": item.kind})
    return Sample(id=item.id, messages=messages, meta=meta)
