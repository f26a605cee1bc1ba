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


def moving_frames(n: int, size: int = 48, seed: int = 0) -> list[Image.Image]:
    """`n` frames of a white square moving left to right over a seeded coloured background."""
    rng = np.random.RandomState(seed)
    background = (rng.rand(3) * 200).astype("uint8")
    frames = []
    for t in range(n):
        array = np.empty((size, size, 3), np.uint8)
        array[:] = background
        x = int(t * (size - 12) / max(n - 1, 1))
        array[size // 2 - 6 : size // 2 + 6, x : x + 12] = 255
        frames.append(Image.fromarray(array))
    return frames


# container extension -> (codec, pixel format) that PyAV's wheels can write
_VIDEO_CODECS = {
    ".mp4": ("mpeg4", "yuv420p"),
    ".mov": ("mpeg4", "yuv420p"),
    ".webm": ("libvpx", "yuv420p"),
    ".gif": ("gif", "rgb8"),
}


def write_video(path, frames: list[Image.Image], fps: int = 10) -> str:
    """Write `frames` (same-size RGB images, even sides) as a video file; the codec follows the extension."""
    import os

    import av

    codec, pix_fmt = _VIDEO_CODECS[os.path.splitext(str(path))[1].lower()]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = pix_fmt
        if codec != "gif":
            stream.options = {"qscale": "2"} if codec == "mpeg4" else {"crf": "10", "b": "1M"}
        for image in frames:
            frame = av.VideoFrame.from_image(image.convert("RGB"))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)
