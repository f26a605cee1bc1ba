"""VSR JSONL as true/false training conversations (theworld.data.vsr)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from theworld.data.vsr import load_vsr, vsr_prompt
from theworld.errors import TheWorldUserError

RECORDS = [
    {
        "image": "000000085637.jpg",
        "image_link": "http://images.cocodataset.org/train2017/000000085637.jpg",
        "caption": "The umbrella is under the bed.",
        "label": 0,
        "relation": "under",
        "subj": "umbrella",
        "obj": "bed",
    },
    {
        "image": "000000003466.jpg",
        "image_link": "http://images.cocodataset.org/val2017/000000003466.jpg",
        "caption": "The cat is on the suitcase.",
        "label": 1,
        "relation": "on",
        "subj": "cat",
        "obj": "suitcase",
    },
]


def write_jpg(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (90, 90, 90)).save(path)
    return str(path)


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_vsr_records_become_true_false_turns(tmp_path: Path) -> None:
    coco = tmp_path / "coco"
    first = write_jpg(coco / "train2017" / "000000085637.jpg")  # found under a COCO split folder
    second = write_jpg(coco / "000000003466.jpg")
    umbrella, cat = load_vsr(write_jsonl(tmp_path / "train.jsonl", RECORDS), str(coco))
    assert umbrella.id == "000000085637.jpg#0"
    assert umbrella.messages == [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": first},
                {
                    "type": "text",
                    "text": "Is this statement about the image true or false? "
                    '"The umbrella is under the bed."\nOptions: true, false.\n'
                    "Answer with one of the options.",
                },
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "false"}]},
    ]
    assert umbrella.meta == {"format": "vsr", "relation": "under", "subj": "umbrella", "obj": "bed"}
    assert cat.visuals() == [second]
    assert cat.messages[0]["content"][1]["text"] == vsr_prompt("The cat is on the suitcase.")
    assert cat.messages[1]["content"] == [{"type": "text", "text": "true"}]


def test_bad_label_names_the_sample(tmp_path: Path) -> None:
    write_jpg(tmp_path / "000000085637.jpg")
    path = write_jsonl(tmp_path / "dev.jsonl", [{**RECORDS[0], "label": 2}])
    with pytest.raises(
        TheWorldUserError, match=r"sample 000000085637.jpg#0: VSR label must be 1 or 0, got 2"
    ):
        load_vsr(path)


def test_missing_label_names_the_field(tmp_path: Path) -> None:
    write_jpg(tmp_path / "000000085637.jpg")
    record = {k: v for k, v in RECORDS[0].items() if k != "label"}
    with pytest.raises(TheWorldUserError, match=r"sample 000000085637.jpg#0: missing field 'label'"):
        load_vsr(write_jsonl(tmp_path / "dev.jsonl", [record]))


def test_missing_coco_image_is_counted(tmp_path: Path) -> None:
    write_jpg(tmp_path / "000000085637.jpg")
    path = write_jsonl(tmp_path / "dev.jsonl", RECORDS)
    assert [s.id for s in load_vsr(path, max_skip_fraction=0.5)] == ["000000085637.jpg#0"]
    with pytest.raises(
        TheWorldUserError, match=r"skipped 1 of 2 samples .*000000003466.jpg#1: file not found"
    ):
        load_vsr(path)
