"""The prompt of the generic question-answer record (`qa` format, `jsonl` benchmark, synthetic data;
docs/data-formats.md). Training and evaluation build it with the same function, so a model is
evaluated on the prompt it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence


def format_question(question: str, choices: Sequence[str] | None = None) -> str:
    """The user-turn text for a question; choices are listed so the answer is one of them."""
    question = question.strip()
    if not choices:
        return question
    options = ", ".join(str(c) for c in choices)
    return f"{question}\nOptions: {options}.\nAnswer with one of the options."
