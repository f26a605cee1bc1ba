"""One evaluation question, whatever benchmark it came from, and its chat-format `Sample`.

`kind`, decided at load time, says how an answer is scored: "choice" (log-likelihood over `choices`),
"numeric" or "clock" (`parsing`), or "qualitative_free" (LLM judge).
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
    """A benchmark question, its visuals in prompt order, and its answer (None where the split withholds it)."""

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
    """The item as a chat `Sample`: with `answer` the scored assistant turn, without it the generation prompt."""
    meta = {**item.meta, "category": item.category, "kind": item.kind}
    return qa_sample(item.id, item.visuals, item.question, item.choices, answer, meta)
