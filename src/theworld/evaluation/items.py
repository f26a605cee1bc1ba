"""One evaluation question, whatever benchmark it came from, and its chat-format `Sample`.

`kind` says how an answer is scored, decided once at load time from the benchmark's own
annotation: "choice" (log-likelihood over `choices`), "numeric" (a metric quantity, see
`parsing`), "clock" (a clock direction) or "qualitative_free" (LLM judge). The prompt is
`theworld.data.qa.format_question`, the one training uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from theworld.data.qa import qa_sample
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError

Kind = Literal["choice", "numeric", "clock", "qualitative_free"]
KINDS: tuple[str, ...] = ("choice", "numeric", "clock", "qualitative_free")


@dataclass
class EvalItem:
    """A benchmark question with its visuals (image paths, `PIL.Image`s or clips, in prompt order)
    and reference answer (None only where the split withholds answers, e.g. BLINK test)."""

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
    """The item as a chat `Sample` (`theworld.data.qa.qa_sample`): with `answer`, the scored assistant
    turn (one sample per choice), without it the generation prompt."""
    meta = {**item.meta, "category": item.category, "kind": item.kind}
    return qa_sample(item.id, item.visuals, item.question, item.choices, answer, meta)
