"""Resolving and checking the visuals of samples, and counting the samples skipped: bad samples are skipped
with a log line, and too large a skipped share (`max_skip_fraction`, nearly always a wrong folder) stops the load.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError
from theworld.processing.video import VideoFile, video_problem

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# What PIL raises on a broken file: OSError (UnidentifiedImageError and truncation included),
# SyntaxError and struct.error from the format plugins' header parsers during `verify`, and
# DecompressionBombError for absurd sizes. Anything else is a bug and must propagate.
CORRUPT_IMAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, struct.error, Image.DecompressionBombError)

DEFAULT_MAX_SKIP_FRACTION = 0.01

# What a record's unusable visual does: skip the sample (training) or raise (evaluation); see `resolve_visual`.
BadVisual = Literal["skip", "raise"]


class UnreadableVisual(Exception):
    """A visual that cannot be used: `iter_converted` catches exactly this type and skips the sample."""

    def __init__(self, path: str, reason: str, sample_id: str | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.sample_id = sample_id


@contextmanager
def naming_sample(sample_id: str) -> Iterator[None]:
    """Attach `sample_id` to an `UnreadableVisual` raised inside (path helpers do not know their sample)."""
    try:
        yield
    except UnreadableVisual as err:
        if err.sample_id is None:
            err.sample_id = sample_id
        raise


def resolve_path(path: str, image_folder: str | os.PathLike[str] | None, subfolders: Sequence[str] = ()) -> str:
    """The absolute path of `path`, a relative one under `image_folder` (never leaving it; else in `subfolders`)."""
    given = str(path)
    path = os.path.expanduser(given)
    if os.path.isabs(path) or image_folder is None:
        return os.path.abspath(path)
    folder = os.path.abspath(os.path.expanduser(str(image_folder)))
    joined = os.path.normpath(os.path.join(folder, path))
    if os.path.commonpath([folder, joined]) != folder:
        raise UnreadableVisual(
            given,
            f"leaves the image folder {folder} (it points to {joined}); give an absolute path, "
            "or set image_folder to a folder that holds it",
        )
    if os.path.isfile(joined):
        return joined
    return next((c for c in (os.path.join(folder, sub, path) for sub in subfolders if sub) if os.path.isfile(c)), joined)


def resolve_clip(value: Any, image_folder: str | os.PathLike[str] | None) -> list[str] | VideoFile:
    """A clip: its frames as absolute paths (a list, or a folder of frames), or a video file as a `VideoFile`."""
    if isinstance(value, (list, tuple)):
        return [resolve_path(str(frame), image_folder) for frame in value]
    path = resolve_path(str(value), image_folder)
    if os.path.isdir(path):
        frames = sorted(os.path.join(path, name) for name in os.listdir(path) if name.lower().endswith(IMAGE_EXTENSIONS))
        if not frames:
            raise UnreadableVisual(path, "clip folder holds no image frames")
        return frames
    if os.path.isfile(path):
        return VideoFile(path)
    raise UnreadableVisual(path, "clip not found")


def image_problem(path: str) -> str | None:
    """Why the image file at `path` cannot be used, or None when it opens and verifies."""
    if not os.path.isfile(path):
        return "file not found"
    try:
        with Image.open(path) as image:
            image.verify()
    except CORRUPT_IMAGE_ERRORS as err:
        return f"unreadable image ({type(err).__name__}: {err})"
    return None


def decode_image_bytes(data: bytes, label: str) -> Image.Image:
    """Decode embedded image bytes now, so a corrupt blob is a skipped sample, not a crash in a dataloader worker."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except CORRUPT_IMAGE_ERRORS as err:
        raise UnreadableVisual(label, f"unreadable image bytes ({type(err).__name__}: {err})") from err
    return image


def resolve_visual(
    value: Any,
    image_folder: str | os.PathLike[str] | None,
    where: str,
    subfolders: Sequence[str] = (),
    *,
    bad_visual: BadVisual,
) -> Image.Image | str:
    """One visual of a record (a path, PIL image, bytes or `{"bytes", "path"}`) -> a PIL image or an absolute path.

    `bad_visual` is what an unusable visual does: "skip" (training) raises `UnreadableVisual`, counted against
    `max_skip_fraction`; "raise" (evaluation, where a dropped item inflates accuracy) is a `TheWorldUserError`
    naming `where`, and the file must exist now.
    """
    label = where
    if isinstance(value, dict):
        if not value.get("bytes") and not value.get("path"):
            raise TheWorldUserError(f"{where}: image record has neither bytes nor path")
        label = str(value.get("path") or where)
        value = value.get("bytes") or str(value["path"])
    if isinstance(value, Image.Image):
        return value
    if not isinstance(value, (bytes, bytearray, str, os.PathLike)) or not str(value).strip():
        raise TheWorldUserError(f"{where}: unusable image value of type {type(value).__name__}")
    try:
        if isinstance(value, (bytes, bytearray)):
            return decode_image_bytes(bytes(value), label)
        if bad_visual == "skip":
            return resolve_path(str(value), image_folder, subfolders)
        if image_folder is None and not os.path.isabs(os.path.expanduser(str(value))):
            raise TheWorldUserError(f"{where}: image {str(value)!r} is a relative path and no image folder was given")
        path = resolve_path(str(value), image_folder, subfolders)
    except UnreadableVisual as err:
        if bad_visual == "skip":
            raise
        if isinstance(value, (bytes, bytearray)):
            raise TheWorldUserError(f"{where}: embedded image cannot be decoded ({err.reason})") from err
        raise TheWorldUserError(f"{where}: image path {err.path!r} {err.reason}; or use --image-folder") from err
    if not os.path.isfile(path):
        raise TheWorldUserError(f"{where}: image not found: {path}")
    return str(Path(path).resolve())


def resolve_record_clip(value: Any, image_folder: Any, where: str, *, bad_visual: BadVisual) -> Any:
    """A record's clip (a video file, a folder of frames, or a list of frames) under the `bad_visual` policy."""
    if isinstance(value, list) and value:
        return [resolve_visual(v, image_folder, where, bad_visual=bad_visual) for v in value]
    if not isinstance(value, str) or not value.strip():
        raise TheWorldUserError(f"{where}: 'video' must be a non-empty list of paths, or a video file or folder of frames")
    try:
        return resolve_clip(value, image_folder)
    except UnreadableVisual as err:
        if bad_visual == "skip":
            raise
        raise TheWorldUserError(f"{where}: clip {err}") from err


@dataclass(frozen=True)
class SkippedSample:
    """One skipped sample: which, the file at fault, and why."""

    sample_id: str
    path: str
    reason: str


@dataclass
class SkipCounter:
    """Counts kept and skipped samples so the caller can refuse a mostly-broken data set."""

    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION
    total: int = 0
    skipped: list[SkippedSample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_skip_fraction <= 1.0:
            raise TheWorldUserError(f"max_skip_fraction must be between 0 and 1, got {self.max_skip_fraction}")

    def keep(self) -> None:
        self.total += 1

    def skip(self, sample_id: str, path: str, reason: str) -> None:
        """Count and log one skipped sample, naming it and the file so the user can find it."""
        self.total += 1
        self.skipped.append(SkippedSample(sample_id, path, reason))
        logger.warning("skipping sample %s: %s (%s)", sample_id, reason, path)

    @property
    def fraction(self) -> float:
        return len(self.skipped) / self.total if self.total else 0.0

    def raise_if_too_many(self, source: str) -> None:
        """Stop when more than `max_skip_fraction` of the samples were bad (nearly always a wrong `image_folder`)."""
        if not self.skipped or self.fraction <= self.max_skip_fraction:
            return
        examples = "; ".join(f"{s.sample_id}: {s.reason} ({s.path})" for s in self.skipped[:3])
        raise TheWorldUserError(
            f"{source}: skipped {len(self.skipped)} of {self.total} samples ({self.fraction:.1%}), more than "
            f"max_skip_fraction={self.max_skip_fraction}. First: {examples}. Check image_folder, or raise "
            "max_skip_fraction to accept the losses."
        )


def visual_problem(visual: Any, verified: dict[str, str | None] | None = None) -> tuple[str, str] | None:
    """`(path, reason)` for the first unusable file of one visual, or None; `verified` caches per path."""
    if isinstance(visual, Image.Image):
        return None
    if isinstance(visual, VideoFile):
        reason = video_problem(visual)
        return None if reason is None else (str(visual), reason)
    if isinstance(visual, (list, tuple)):
        return next(filter(None, (visual_problem(frame, verified) for frame in visual)), None)
    verified = {} if verified is None else verified
    path = str(visual)
    if path not in verified:
        verified[path] = image_problem(path)
    return None if verified[path] is None else (path, verified[path])


def validate_sample(sample: Sample, counter: SkipCounter, verified: dict[str, str | None] | None = None) -> bool:
    """Check every visual of `sample`; count it as kept (True) or skipped (False)."""
    problem = next(filter(None, (visual_problem(visual, verified) for visual in sample.visuals())), None)
    if problem is not None:
        counter.skip(sample.id, *problem)
        return False
    counter.keep()
    return True


def iter_converted(
    records: Iterable[dict[str, Any]],
    convert: Callable[[dict[str, Any], int], Sample],
    *,
    source: str,
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
    limit: int | None = None,
) -> Iterator[tuple[int, Sample]]:
    """`(record index, sample)` for each record that converts and whose visuals open; malformed records raise."""
    counter = SkipCounter(max_skip_fraction)
    verified: dict[str, str | None] = {}
    kept = 0
    for index, record in enumerate(records):
        if limit is not None and kept >= limit:
            break
        try:
            sample = convert(record, index)
        except UnreadableVisual as err:
            counter.skip(err.sample_id or f"record #{index}", err.path, err.reason)
            continue
        if validate_sample(sample, counter, verified):
            kept += 1
            yield index, sample
    counter.raise_if_too_many(source)
    if counter.skipped:
        logger.info("%s: kept %d samples, skipped %d", source, kept, len(counter.skipped))


def convert_records(records: Iterable[dict[str, Any]], convert: Callable[..., Sample], **kwargs: Any) -> list[Sample]:
    """The samples of `iter_converted`, as a list."""
    return [sample for _, sample in iter_converted(records, convert, **kwargs)]
