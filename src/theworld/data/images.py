"""Resolving and checking the visuals of training samples, and counting the samples skipped.

A training run that dies at step 40 000 on one missing JPEG wastes a day, and a run that
silently drops half its data because `image_folder` points at the wrong place wastes more. So
every loader resolves paths up front, opens each image once (PIL open + verify), skips the few
bad samples with a log line naming the sample and the file, and stops with a clear error when
the skipped share is larger than `max_skip_fraction` (which almost always means a wrong folder).
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError
from theworld.processing.video import VideoFile, video_problem

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# What PIL raises on a broken file: OSError (UnidentifiedImageError and truncation included),
# SyntaxError and struct.error from the format plugins' header parsers during `verify`, and
# DecompressionBombError for absurd sizes. Anything else is a bug and must propagate.
CORRUPT_IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    struct.error,
    Image.DecompressionBombError,
)

DEFAULT_MAX_SKIP_FRACTION = 0.01


class UnreadableVisual(Exception):
    """A visual that cannot be used; the sample holding it is skipped, not the whole load.

    Raised while a record is converted (e.g. undecodable embedded bytes, a clip folder with no
    frames); `iter_converted` catches exactly this type and counts the skip.
    """

    def __init__(self, path: str, reason: str, sample_id: str | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.sample_id = sample_id


@contextmanager
def naming_sample(sample_id: str) -> Iterator[None]:
    """Attach `sample_id` to an `UnreadableVisual` raised inside, so the skip log can name it.

    Path helpers do not know which sample they serve; converters wrap their visual handling in
    this instead of threading the id through every helper.
    """
    try:
        yield
    except UnreadableVisual as err:
        if err.sample_id is None:
            err.sample_id = sample_id
        raise


def resolve_path(path: str, image_folder: str | os.PathLike[str] | None, subfolders: Sequence[str] = ()) -> str:
    """The absolute path of `path`, read relative to `image_folder` when it is relative.

    Samples carry absolute paths so they stay valid whatever the working directory of the
    process (dataloader workers, launchers) that later opens them. A relative path must stay
    inside `image_folder`: a data file naming `../../etc/passwd` does not get it opened (an
    `UnreadableVisual`, so the sample is skipped and named). The check is on the path as written
    (`..` components), not on symlinks, which the folder's owner put there. Absolute paths are
    the data's explicit choice and are kept. With `subfolders` (e.g. COCO's `train2017`), the first
    of `image_folder/path`, `image_folder/<sub>/path` that exists; the first when none does.
    """
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
    candidates = [os.path.join(folder, sub, path) for sub in subfolders if sub]
    return next((c for c in candidates if os.path.isfile(c)), joined) if candidates and not os.path.isfile(joined) else joined


def resolve_clip(value: Any, image_folder: str | os.PathLike[str] | None) -> list[str] | VideoFile:
    """A clip: its frames as absolute paths (a list of frame files, or a folder of frames), or a
    video file (mp4, webm, mov, gif, ...) as a `VideoFile`, decoded later into 4k+1 frames."""
    if isinstance(value, (list, tuple)):
        return [resolve_path(str(frame), image_folder) for frame in value]
    path = resolve_path(str(value), image_folder)
    if os.path.isdir(path):
        frames = sorted(
            os.path.join(path, name)
            for name in os.listdir(path)
            if name.lower().endswith(IMAGE_EXTENSIONS)
        )
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
    """Decode embedded image bytes (the `{"bytes": ...}` form of HF datasets) fully, now.

    Decoding eagerly turns a corrupt blob into a skipped sample here rather than a crash inside a
    dataloader worker later; `label` names the blob in the skip log.
    """
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except CORRUPT_IMAGE_ERRORS as err:
        raise UnreadableVisual(
            label, f"unreadable image bytes ({type(err).__name__}: {err})"
        ) from err
    return image


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
            raise TheWorldUserError(
                f"max_skip_fraction must be between 0 and 1, got {self.max_skip_fraction}"
            )

    def keep(self) -> None:
        """Count one sample that passed."""
        self.total += 1

    def skip(self, sample_id: str, path: str, reason: str) -> None:
        """Count and log one skipped sample, naming it and the file so the user can find it."""
        self.total += 1
        self.skipped.append(SkippedSample(sample_id, path, reason))
        logger.warning("skipping sample %s: %s (%s)", sample_id, reason, path)

    @property
    def fraction(self) -> float:
        """Skipped share of the samples seen so far (0 when none were seen)."""
        return len(self.skipped) / self.total if self.total else 0.0

    def raise_if_too_many(self, source: str) -> None:
        """Stop with a clear error when more than `max_skip_fraction` of the samples were bad.

        A high share nearly always means a wrong `image_folder`, so the message says so and
        shows a few of the offending paths.
        """
        if not self.skipped or self.fraction <= self.max_skip_fraction:
            return
        examples = "; ".join(f"{s.sample_id}: {s.reason} ({s.path})" for s in self.skipped[:3])
        raise TheWorldUserError(
            f"{source}: skipped {len(self.skipped)} of {self.total} samples "
            f"({self.fraction:.1%}), more than max_skip_fraction={self.max_skip_fraction}. "
            f"First: {examples}. Check image_folder, or raise max_skip_fraction to accept "
            f"the losses."
        )


def visual_problem(
    visual: Any, verified: dict[str, str | None] | None = None
) -> tuple[str, str] | None:
    """`(path, reason)` for the first unusable file of one visual, or None when all are fine.

    A clip (list of frames) is checked frame by frame: one broken frame breaks the clip.
    In-memory PIL images are already decoded and pass. `verified` caches per-path results,
    because many records share one image (multi-turn splits, several questions per photo).
    """
    if isinstance(visual, Image.Image):
        return None
    if isinstance(visual, VideoFile):
        reason = video_problem(visual)
        return None if reason is None else (str(visual), reason)
    if isinstance(visual, (list, tuple)):
        for frame in visual:
            problem = visual_problem(frame, verified)
            if problem is not None:
                return problem
        return None
    path = str(visual)
    if verified is not None and path in verified:
        reason = verified[path]
    else:
        reason = image_problem(path)
        if verified is not None:
            verified[path] = reason
    return None if reason is None else (path, reason)


def validate_sample(
    sample: Sample, counter: SkipCounter, verified: dict[str, str | None] | None = None
) -> bool:
    """Check every visual of `sample`; count it as kept (True) or skipped (False)."""
    for visual in sample.visuals():
        problem = visual_problem(visual, verified)
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
    """`(record index, sample)` for each record that converts and whose visuals open; the skip budget is
    enforced once the records are read (or `limit` samples kept).

    `convert(record, index)` builds one `Sample` and raises `TheWorldUserError` for a malformed
    record (a wrong record is a data bug the user must see) or `UnreadableVisual` for a visual
    that cannot be used (counted as a skip). Only counts are kept, so any number of records streams.
    """
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


def convert_records(records: Iterable[dict[str, Any]], convert: Callable[[dict[str, Any], int], Sample], **kwargs: Any) -> list[Sample]:
    """The samples of `iter_converted`, as a list."""
    return [sample for _, sample in iter_converted(records, convert, **kwargs)]
