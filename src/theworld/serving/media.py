"""Images and clips a client sends: `data:` URLs, or local files under `--media-root`; limits.

Nothing else is fetched: no http(s), no path outside the media root (symbolic links are resolved
before the check), no file at all without `--media-root`. Every refusal is a `RequestError`
carrying the HTTP status and an OpenAI-shaped message that names the offending part
(`messages[0].content[1]`) and, for a limit, the limit and the flag that sets it.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from PIL import Image

from theworld.data.images import CORRUPT_IMAGE_ERRORS
from theworld.processing.video import Clip, ClipTooLong, VideoDecodeError, load_video


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; each refusal names the limit and its `theworld serve` flag."""

    max_body_bytes: int = 64 * 2**20
    max_image_pixels: int = 40_000_000
    max_clip_frames: int = 3_000
    max_tokens: int = 1024

    FLAGS = {
        "max_body_bytes": "--max-body-bytes",
        "max_image_pixels": "--max-image-pixels",
        "max_clip_frames": "--max-clip-frames",
        "max_tokens": "--max-tokens",
    }

    def describe(self, name: str) -> str:
        return f"the server's limit {name}={getattr(self, name)} ({self.FLAGS[name]})"


class RequestError(Exception):
    """A request the server refuses: HTTP status, message, and OpenAI's error type/param/code."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind or {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                             413: "invalid_request_error", 503: "server_error"}.get(status, "invalid_request_error")  # fmt: skip

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,(?P<data>.*)$", re.S)


def read_url(url: Any, where: str, media_root: str | None) -> tuple[bytes | str, str]:
    """(bytes of a data: URL, or the real path of a local file under media_root; a label for errors)."""
    if not isinstance(url, str) or not url:
        raise RequestError(400, f"{where}: the url must be a non-empty string", param=where, code="invalid_url")
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if match is None or not match["b64"]:
            raise RequestError(400, f"{where}: malformed data URL (expected data:<type>;base64,<data>)", param=where,
                               code="invalid_data_url")  # fmt: skip
        try:
            return base64.b64decode(match["data"], validate=True), f"{where} (data URL)"
        except (binascii.Error, ValueError) as err:
            raise RequestError(400, f"{where}: malformed data URL: bad base64 ({err})", param=where,
                               code="invalid_data_url") from err  # fmt: skip
    if url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise RequestError(403, f"{where}: file URLs must name a local file, not host {parsed.netloc!r}", param=where,
                               code="path_not_allowed")  # fmt: skip
        path = unquote(parsed.path)
    elif url.startswith("/"):
        path = url
    else:
        scheme = url.split(":", 1)[0] if ":" in url else "relative path"
        raise RequestError(400, f"{where}: {scheme} URLs are not fetched; send a data: URL (base64) or, on a server "
                           "started with --media-root, a file:// URL or absolute path inside it", param=where,
                           code="unsupported_url")  # fmt: skip
    if media_root is None:
        raise RequestError(403, f"{where}: this server reads no local files (start it with --media-root DIR)",
                           param=where, code="path_not_allowed")  # fmt: skip
    root = os.path.realpath(media_root)
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        raise RequestError(403, f"{where}: {path} is outside the media root", param=where, code="path_not_allowed")
    if not os.path.isfile(real):
        raise RequestError(400, f"{where}: no such file in the media root: {path}", param=where, code="file_not_found")
    return real, path


def load_image(url: Any, where: str, media_root: str | None, limits: Limits) -> Image.Image:
    """A fully decoded RGB image; corrupt data is a 400 naming the part."""
    source, label = read_url(url, where, media_root)
    try:
        if isinstance(source, bytes):
            image = Image.open(io.BytesIO(source))
        else:
            if os.path.getsize(source) > limits.max_body_bytes:
                raise RequestError(413, f"{where}: {label} is larger than {limits.describe('max_body_bytes')}",
                                   param=where, code="file_too_large")  # fmt: skip
            image = Image.open(source)
        pixels = image.size[0] * image.size[1]
        if pixels > limits.max_image_pixels:
            raise RequestError(400, f"{where}: the image has {pixels} pixels, more than {limits.describe('max_image_pixels')}",
                               param=where, code="image_too_large")  # fmt: skip
        image.load()
        return image.convert("RGB")
    except CORRUPT_IMAGE_ERRORS as err:
        raise RequestError(400, f"{where}: cannot decode the image {label} ({type(err).__name__}: {err})", param=where,
                           code="invalid_image") from err  # fmt: skip


def load_clip(url: Any, where: str, media_root: str | None, limits: Limits, num_frames: int) -> Clip:
    """A video file decoded into a clip of `num_frames` (4k+1) frames; errors name the part."""
    source, label = read_url(url, where, media_root)
    try:
        clip = load_video(source, num_frames, max_frames=limits.max_clip_frames, label=label)
    except ClipTooLong as err:
        raise RequestError(400, f"{where}: the video has more frames than {limits.describe('max_clip_frames')}",
                           param=where, code="clip_too_long") from err  # fmt: skip
    except VideoDecodeError as err:
        raise RequestError(400, f"{where}: {err}", param=where, code="invalid_video") from err
    for frame in clip:
        if frame.size[0] * frame.size[1] > limits.max_image_pixels:
            raise RequestError(400, f"{where}: video frames of {frame.size[0]}x{frame.size[1]} exceed "
                               f"{limits.describe('max_image_pixels')}", param=where, code="image_too_large")  # fmt: skip
    return clip
