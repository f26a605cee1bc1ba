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
        items = [item for m in self.messages if isinstance(m["content"], list) for item in m["content"]]
        return [item[item["type"]] for item in items if item.get("type") in ("image", "video")]
