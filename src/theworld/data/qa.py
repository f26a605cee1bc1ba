"""The generic question-answer record (`jsonl` benchmark and synthetic data) and its prompt.

One JSON object per line:

    {"id": "clip-000017",                     # unique, required
     "question": "Which way does the ball move?",   # required
     "choices": ["left", "right"],            # optional: present -> scored by log-likelihood
     "answer": "left",                        # required for scoring: one of choices, or free text
     "image": "imgs/a.png",                   # optional, or
     "images": ["a.png", "b.png"],            # optional, several images, or
     "video": ["f0.png", "f1.png", ...],      # optional: a clip as its frames (4k+1 frames), a folder
                                              # of frames, or a video file ("clip.mp4": mp4, webm,
                                              # mov, gif; world_num_frames frames evenly over it)
     "category": "direction"}                 # optional: per-category breakdowns

Paths are relative to an image folder (default: the JSONL file's own folder). Training and
evaluation build the prompt with the same function, so a model is evaluated on the prompt it
was trained on.
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
