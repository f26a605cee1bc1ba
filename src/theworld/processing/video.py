"""Video files (mp4, webm, mov, gif, ...) decoded with PyAV into a `Clip` of 4k+1 frames.

The world encoder wants 4k+1 frames (the VAE compresses time 4x, causally), so a video file is
sampled, never fed whole: `num_frames` frames (the processor's `world_num_frames`) spread evenly
over the clip, or taken at a given `fps` ending at the clip's last frame (the present moment a
"what happens next?" question is about). A clip shorter than that gives the largest 4k+1 frames
it has. The chosen frame times are kept on the `Clip` (`frame_times`, seconds from the start of
the stream) so a user can see which moments the model saw.

Decoding takes two passes over the file: the first reads only the frame timestamps (no RGB
conversion), the second converts the chosen frames. Short clips are the use case; `max_frames`
bounds the work a long or hostile file can cause.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from theworld.errors import TheWorldUserError

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".webm", ".mov", ".mkv", ".avi", ".gif")


class Clip(list):
    """A short video given as its frames (PIL images, paths or URLs); 4k+1 frames.

    `frame_times` (seconds) and `source` are set when the clip was decoded from a video file.
    """

    def __init__(self, frames: Any = (), frame_times: list[float] | None = None, source: str | None = None) -> None:
        super().__init__(frames)
        self.frame_times = frame_times
        self.source = source


class VideoFile(str):
    """A path to a video file that stands for a clip (as opposed to a path to one image).

    A plain string cannot say whether `clip.gif` is an image or a clip; the data loaders wrap the
    `"video"` field of a record in this type so every later step (validation, the latent cache,
    the processor) decodes it as a clip.
    """


class VideoDecodeError(TheWorldUserError):
    """A video file that cannot be decoded, or that breaks a limit; the message names the file."""


class ClipTooLong(VideoDecodeError):
    """A video file with more frames than `max_frames` allows."""


def _open(source: str | bytes, label: str) -> Any:
    import av

    try:
        return av.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"cannot decode video {label}: {type(err).__name__}: {err}") from err


def _decoded(source: str | bytes, label: str) -> Iterator[tuple[float, Any]]:
    """(time in seconds, frame) for the frames of the first video stream, in presentation order."""
    import av

    container = _open(source, label)
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"cannot decode video {label}: the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # A stream without timestamps: frame order at its nominal rate is all there is.
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        try:
            for index, frame in enumerate(container.decode(stream)):
                yield (float(frame.time) if frame.time is not None else index / rate), frame
        except (av.FFmpegError, OSError, ValueError) as err:
            raise VideoDecodeError(f"cannot decode video {label}: {type(err).__name__}: {err}") from err


def largest_valid_length(n: int, temporal_compression: int = 4) -> int:
    """The largest 4k+1 (for compression 4) that is <= n, n >= 1."""
    return 1 + (n - 1) // temporal_compression * temporal_compression


def choose_frames(
    times: list[float], num_frames: int, fps: float | None = None, temporal_compression: int = 4
) -> list[int]:
    """Indices into `times` (sorted frame times, seconds) of the frames a clip keeps.

    Evenly: `num_frames` (or fewer, 4k+1) indices spread over the whole clip, first and last
    frame included. At `fps`: frames `1/fps` apart ending at the last frame, the nearest frame
    for each moment, as many as fit in the clip up to `num_frames`.
    """
    n = len(times)
    if fps is None:
        k = largest_valid_length(min(num_frames, n), temporal_compression)
        if k == 1:
            return [n - 1]
        return [round(i * (n - 1) / (k - 1)) for i in range(k)]
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    span = times[-1] - times[0]
    k = largest_valid_length(min(num_frames, int(span * fps + 1e-9) + 1), temporal_compression)
    targets = [times[-1] - (k - 1 - i) / fps for i in range(k)]
    array = np.asarray(times)
    return [int(np.abs(array - t).argmin()) for t in targets]


def load_video(
    source: str | os.PathLike[str] | bytes,
    num_frames: int,
    fps: float | None = None,
    temporal_compression: int = 4,
    max_frames: int | None = None,
    label: str | None = None,
) -> Clip:
    """Decode a video file (a path, or its bytes) into a `Clip` of 4k+1 RGB PIL frames.

    `num_frames` is the most frames kept (the processor's `world_num_frames`, itself 4k+1);
    `max_frames` refuses a file with more frames than that before converting any of them.
    Any decoding failure is a `VideoDecodeError` naming `label` (default: the path).
    """
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    label = label or (source if isinstance(source, str) else "<video bytes>")
    if isinstance(source, str) and not os.path.isfile(source):
        raise VideoDecodeError(f"video file not found: {source}")
    if num_frames < 1 or (num_frames - 1) % temporal_compression:
        raise ValueError(f"num_frames={num_frames}: a clip needs 4k+1 frames")
    times = []
    for time, _ in _decoded(source, label):
        times.append(time)
        if max_frames is not None and len(times) > max_frames:
            raise ClipTooLong(f"video {label} has more than max_clip_frames={max_frames} frames")
    if not times:
        raise VideoDecodeError(f"cannot decode video {label}: it holds no decodable frame")
    chosen = choose_frames(times, num_frames, fps, temporal_compression)
    wanted = set(chosen)
    images = {}
    for index, (_, frame) in enumerate(_decoded(source, label)):
        if index in wanted:
            images[index] = frame.to_image()  # RGB PIL image
        if len(images) == len(wanted):
            break
    if len(images) != len(wanted):
        raise VideoDecodeError(f"cannot decode video {label}: frames changed between two reads of the file")
    return Clip(
        [images[i] for i in chosen],
        frame_times=[times[i] for i in chosen],
        source=label,
    )


def video_problem(path: str) -> str | None:
    """Why the video file at `path` cannot be used as a clip, or None when a frame decodes."""
    if not os.path.isfile(path):
        return "video file not found"
    frames = _decoded(path, path)
    try:
        next(frames)
    except VideoDecodeError as err:
        return str(err)
    except StopIteration:
        return "video holds no decodable frame"
    finally:
        frames.close()
    return None
