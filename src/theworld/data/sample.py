"""The one in-memory form of a conversation sample, whatever file format it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """A conversation with its visuals, in the Hugging Face chat format: content items are text,
    `{"type": "image", "image": X}` or `{"type": "video", "video": [X, ...]}`, X an absolute path
    or a `PIL.Image`. The world path encodes a clip; Gemma's image path sees one frame of it."""

    id: str
    messages: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def visuals(self) -> list[Any]:
        """Images and clips in prompt order: a path/PIL image, or a list of frames for a clip."""
        out: list[Any] = []
        for message in self.messages:
            for item in message["content"] if isinstance(message["content"], list) else []:
                if item.get("type") == "image":
                    out.append(item["image"])
                elif item.get("type") == "video":
                    out.append(item["video"])
        return out
