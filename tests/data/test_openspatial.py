"""OpenSpatialDataset records with global region numbering (theworld.data.openspatial)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from theworld.data.openspatial import load_openspatial, renumber_regions
from theworld.errors import TheWorldUserError

PERSON = [10.0, 12.0, 40.0, 80.0]
TABLE = [50.0, 40.0, 90.0, 70.0]
LAMP = [60, 5, 75, 35]
RLE = {"size": [96, 96], "counts": "PPY14`1"}

RECORDS = [
    {  # two questions; the person is named in both (bbox entries 0 and 3 are the same box)
        "filename": "0a1b2c3d4e5f6a7b",
        "conversations": [
            {"from": "human", "value": "<image>\nIs <mask> <depth> taller than <mask> <depth>?"},
            {"from": "gpt", "value": "Yes, Region [0] is taller than Region [1]."},
            {"from": "human", "value": "How far is <mask> <depth> from <mask> <depth>?"},
            {"from": "gpt", "value": "Region [1] is 1.5 meters from Region [0]."},
        ],
        "bbox": [PERSON, TABLE, LAMP, PERSON],
        "rle": [RLE, RLE, RLE, RLE],
    },
    {  # a bare <mask>; numbering restarts for every conversation
        "filename": "ffee00112233aabb",
        "conversations": [
            {"from": "human", "value": "<image>\nHow wide is <mask>?"},
            {"from": "gpt", "value": "Region [0] is 40 centimeters wide."},
        ],
        "bbox": [LAMP],
        "rle": [RLE],
    },
    {  # the same photo as the first record with other regions
        "filename": "0a1b2c3d4e5f6a7b",
        "conversations": [
            {
                "from": "human",
                "value": "<image>\nWhich is closer, <mask> <depth> or <mask> <depth>?",
            },
            {"from": "gpt", "value": "Region [1] is closer."},
        ],
        "bbox": [TABLE, LAMP],
        "rle": [RLE, RLE],
    },
]


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def write_images(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("0a1b2c3d4e5f6a7b", "ffee00112233aabb"):
        Image.new("RGB", (96, 96), (255, 255, 255)).save(folder / f"{name}.jpg")
        paths[name] = str(folder / f"{name}.jpg")
    return paths


def test_regions_get_global_numbers_in_questions_and_answers(tmp_path: Path) -> None:
    images = write_images(tmp_path / "openimages")
    (tmp_path / "os.json").write_text(json.dumps(RECORDS, indent=1))
    first, second, third = load_openspatial(str(tmp_path / "os.json"), str(tmp_path / "openimages"))
    assert first.id == "0a1b2c3d4e5f6a7b#0" and third.id == "0a1b2c3d4e5f6a7b#2"
    assert first.messages == [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": images["0a1b2c3d4e5f6a7b"]},
                text("Is Region [0] taller than Region [1]?"),
            ],
        },
        {"role": "assistant", "content": [text("Yes, Region [0] is taller than Region [1].")]},
        {"role": "user", "content": [text("How far is Region [2] from Region [3]?")]},
        {"role": "assistant", "content": [text("Region [3] is 1.5 meters from Region [2].")]},
    ]
    assert first.meta["boxes"] == [PERSON, TABLE, [60.0, 5.0, 75.0, 35.0], PERSON]
    assert second.messages[0]["content"][1] == text("How wide is Region [0]?")
    assert second.messages[1]["content"] == [text("Region [0] is 40 centimeters wide.")]
    assert third.messages[1]["content"] == [text("Region [1] is closer.")]


def test_jsonl_gives_the_same_samples(tmp_path: Path) -> None:
    write_images(tmp_path)
    (tmp_path / "os.json").write_text(json.dumps(RECORDS))
    (tmp_path / "os.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS))
    from_array = load_openspatial(str(tmp_path / "os.json"))
    from_lines = load_openspatial(str(tmp_path / "os.jsonl"))
    assert [s.messages for s in from_array] == [s.messages for s in from_lines]


def test_renumber_rejects_a_region_its_question_does_not_have() -> None:
    turns = [
        {"from": "human", "value": "Is <mask> big?"},
        {"from": "gpt", "value": "Region [1] is."},
    ]
    with pytest.raises(
        TheWorldUserError, match=r"sample s: an answer names Region \[1\] but its question has 1"
    ):
        renumber_regions(turns, "s")


def test_bbox_count_must_match_masks(tmp_path: Path) -> None:
    write_images(tmp_path)
    record = {**RECORDS[1], "bbox": [LAMP, TABLE]}
    (tmp_path / "os.jsonl").write_text(json.dumps(record))
    with pytest.raises(
        TheWorldUserError, match=r"ffee00112233aabb#0: 1 <mask> occurrence\(s\) but 2 bbox"
    ):
        load_openspatial(str(tmp_path / "os.jsonl"))


def close(pixel: tuple[int, ...], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(pixel, colour, strict=True))


def test_draw_boxes_uses_a_cached_boxed_copy(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs")
    (tmp_path / "os.json").write_text(json.dumps(RECORDS))
    cache = tmp_path / "cache"
    samples = load_openspatial(
        str(tmp_path / "os.json"), str(tmp_path / "imgs"), draw_boxes=True, cache_dir=str(cache)
    )
    paths = [s.visuals()[0] for s in samples]
    assert all(Path(p).parent == cache for p in paths)
    assert len(set(paths)) == 3  # same photo, different boxes -> different copies
    assert Path(paths[0]).name.startswith("0a1b2c3d4e5f6a7b-")
    with Image.open(paths[0]) as boxed:
        assert close(boxed.getpixel((10, 60))[:3], (230, 25, 75))  # person's left edge, 1st colour
        assert close(boxed.getpixel((89, 60)), (60, 180, 75))  # table's right edge, 2nd colour
        assert close(boxed.getpixel((30, 60)), (255, 255, 255))  # inside: untouched
    stamp = Path(paths[0]).stat().st_mtime_ns
    again = load_openspatial(
        str(tmp_path / "os.json"), str(tmp_path / "imgs"), draw_boxes=True, cache_dir=str(cache)
    )
    assert again[0].visuals()[0] == paths[0] and Path(paths[0]).stat().st_mtime_ns == stamp


def test_missing_image_is_skipped_with_draw_boxes(tmp_path: Path) -> None:
    write_images(tmp_path)
    (tmp_path / "ffee00112233aabb.jpg").unlink()
    (tmp_path / "os.json").write_text(json.dumps(RECORDS))
    kept = load_openspatial(
        str(tmp_path / "os.json"),
        draw_boxes=True,
        cache_dir=str(tmp_path / "c"),
        max_skip_fraction=0.5,
    )
    assert [s.id for s in kept] == ["0a1b2c3d4e5f6a7b#0", "0a1b2c3d4e5f6a7b#2"]
    with pytest.raises(TheWorldUserError, match=r"ffee00112233aabb#1: file not found"):
        load_openspatial(str(tmp_path / "os.json"), draw_boxes=True, cache_dir=str(tmp_path / "c"))
