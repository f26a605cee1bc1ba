"""Visual resolution, image validation and the skip budget (theworld.data.images)."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from theworld.data.images import (
    SkipCounter,
    UnreadableVisual,
    convert_records,
    decode_image_bytes,
    image_problem,
    naming_sample,
    resolve_clip,
    resolve_path,
    validate_sample,
    visual_problem,
)
from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError
from theworld.processing.video import VideoFile


def png_bytes(colour: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes())
    return str(path)


def image_sample(sample_id: str, *visuals: object) -> Sample:
    content = [{"type": "image", "image": v} for v in visuals] + [{"type": "text", "text": "q"}]
    return Sample(id=sample_id, messages=[{"role": "user", "content": content}])


def test_resolve_path_joins_relative_and_keeps_absolute(tmp_path: Path) -> None:
    assert resolve_path("a/b.png", tmp_path) == str(tmp_path / "a" / "b.png")
    assert resolve_path("/x/y.png", tmp_path) == "/x/y.png"
    assert os.path.isabs(resolve_path("c.png", None))


def test_image_problem_good_missing_and_corrupt(tmp_path: Path) -> None:
    good = write_png(tmp_path / "good.png")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"definitely not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png_bytes()[:-20])
    assert image_problem(good) is None
    assert image_problem(str(tmp_path / "absent.png")) == "file not found"
    assert image_problem(str(garbage)).startswith("unreadable image (UnidentifiedImageError")
    assert image_problem(str(truncated)).startswith("unreadable image (")


def test_clip_is_checked_frame_by_frame(tmp_path: Path) -> None:
    frames = [write_png(tmp_path / f"f{i}.png") for i in range(3)]
    broken = tmp_path / "f1.png"
    broken.write_bytes(b"broken")
    assert visual_problem([frames[0], frames[2]]) is None
    path, reason = visual_problem(frames)
    assert path == str(broken) and reason.startswith("unreadable image")
    assert visual_problem(Image.new("RGB", (2, 2))) is None


def test_resolve_clip_folder_list_and_video_file(tmp_path: Path) -> None:
    for name in ("00002.png", "00000.png", "00001.jpg"):
        write_png(tmp_path / "clip" / name)
    (tmp_path / "clip" / "notes.txt").write_text("not a frame")
    assert resolve_clip("clip", tmp_path) == [
        str(tmp_path / "clip" / n) for n in ("00000.png", "00001.jpg", "00002.png")
    ]
    assert resolve_clip(["a.png", "b.png"], tmp_path) == [
        str(tmp_path / "a.png"),
        str(tmp_path / "b.png"),
    ]
    (tmp_path / "clip.mp4").write_bytes(b"\x00")
    video = resolve_clip("clip.mp4", tmp_path)
    assert isinstance(video, VideoFile) and video == str(tmp_path / "clip.mp4")
    path, reason = visual_problem(video)  # a broken video file is a skipped sample, named
    assert path == video and "cannot decode video" in reason
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnreadableVisual, match="no image frames"):
        resolve_clip("empty", tmp_path)
    with pytest.raises(UnreadableVisual, match="clip not found"):
        resolve_clip("nowhere", tmp_path)


def test_naming_sample_attaches_the_id() -> None:
    with pytest.raises(UnreadableVisual) as info, naming_sample("s-7"):
        raise UnreadableVisual("/p.png", "bad")
    assert info.value.sample_id == "s-7"


def test_decode_image_bytes(tmp_path: Path) -> None:
    image = decode_image_bytes(png_bytes((1, 2, 3)), "blob")
    assert image.getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(UnreadableVisual, match="unreadable image bytes") as info:
        decode_image_bytes(b"nope", "blob-3")
    assert info.value.path == "blob-3"


def test_skip_counter_logs_counts_and_raises(caplog: pytest.LogCaptureFixture) -> None:
    counter = SkipCounter(max_skip_fraction=0.25)
    for _ in range(3):
        counter.keep()
    with caplog.at_level(logging.WARNING, logger="theworld.data.images"):
        counter.skip("rec-9", "/imgs/missing.png", "file not found")
    assert "rec-9" in caplog.text and "/imgs/missing.png" in caplog.text
    assert counter.total == 4 and counter.fraction == 0.25
    counter.raise_if_too_many("train.json")  # exactly at the budget: allowed
    counter.skip("rec-10", "/imgs/other.png", "file not found")
    with pytest.raises(TheWorldUserError) as info:
        counter.raise_if_too_many("train.json")
    message = str(info.value)
    assert message.startswith("train.json: skipped 2 of 5 samples (40.0%)")
    assert "rec-9: file not found (/imgs/missing.png)" in message
    assert "image_folder" in message


def test_skip_counter_rejects_bad_fraction() -> None:
    with pytest.raises(TheWorldUserError, match="max_skip_fraction"):
        SkipCounter(max_skip_fraction=1.5)


def test_validate_sample_uses_cache(tmp_path: Path) -> None:
    good = write_png(tmp_path / "a.png")
    counter = SkipCounter()
    verified: dict[str, str | None] = {}
    assert validate_sample(image_sample("s1", good), counter, verified)
    os.remove(good)  # cached as good: not re-opened
    assert validate_sample(image_sample("s2", good), counter, verified)
    assert not validate_sample(image_sample("s3", str(tmp_path / "b.png")), counter, verified)
    assert [s.sample_id for s in counter.skipped] == ["s3"] and counter.total == 3


def test_convert_records_skips_limits_and_enforces_budget(tmp_path: Path) -> None:
    good = write_png(tmp_path / "a.png")
    records = [{"id": "ok1"}, {"id": "gone"}, {"id": "raw"}, {"id": "ok2"}, {"id": "ok3"}]

    def convert(record: dict, index: int) -> Sample:
        if record["id"] == "raw":
            raise UnreadableVisual("blob", "unreadable image bytes")
        path = good if record["id"].startswith("ok") else str(tmp_path / "gone.png")
        return image_sample(record["id"], path)

    kept = convert_records(records, convert, source="f.jsonl", max_skip_fraction=0.5)
    assert [s.id for s in kept] == ["ok1", "ok2", "ok3"]
    assert [s.id for s in convert_records(records, convert, source="f", limit=1)] == ["ok1"]
    with pytest.raises(TheWorldUserError, match=r"f.jsonl: skipped 2 of 5 samples") as info:
        convert_records(records, convert, source="f.jsonl", max_skip_fraction=0.1)
    assert "gone: file not found" in str(info.value)
    assert "record #2: unreadable image bytes (blob)" in str(info.value)
