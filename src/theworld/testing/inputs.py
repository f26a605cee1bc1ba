"""Deterministic chat inputs for tests, benchmarks and examples."""

from __future__ import annotations

import numpy as np
from PIL import Image


def random_image(seed: int, size: int = 40) -> Image.Image:
    """A seeded noise image (RGB)."""
    return Image.fromarray((np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8"))


def image_chat(seed: int, question: str = "What happens next?", answer: str | None = None) -> list[dict]:
    """One user turn with an image and a question, optionally an assistant answer."""
    messages = [{"role": "user", "content": [{"type": "image", "image": random_image(seed)}, {"type": "text", "text": question}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def clip_chat(seed: int, frames: int = 5, question: str = "Which way is the ball moving?") -> list[dict]:
    """One user turn with a clip of `frames` noise frames and a question."""
    clip = [random_image(seed * 100 + t) for t in range(frames)]
    return [{"role": "user", "content": [{"type": "video", "video": clip}, {"type": "text", "text": question}]}]
