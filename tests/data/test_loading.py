"""The `load_samples` entry point: dispatch, format detection, file reading, Hub ids."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from theworld.data.loading import (
    FORMATS,
    detect_format,
    iter_records,
    load_samples,
    looks_like_hub_id,
)
from theworld.errors import TheWorldUserError


def write_png(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (1, 1, 1)).save(path, format="PNG")
    return str(path)


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


LLAVA = {
    "id": "l",
    "image": "a.png",
    "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}],
}
MESSAGES = {
    "id": "m",
    "messages": [{"role": "user", "content": [{"type": "image"}]}],
    "images": ["a.png"],
}
QA = {"id": "q", "question": "q?", "answer": "a", "image": "a.png"}
OPENSPATIAL = {
    "filename": "a",
    "conversations": [
        {"from": "human", "value": "<image>\n<mask>?"},
        {"from": "gpt", "value": "Region [0]."},
    ],
    "bbox": [[0, 0, 4, 4]],
    "rle": [],
}
VSR = {"image": "a.png", "caption": "c", "label": 1, "relation": "r", "subj": "s", "obj": "o"}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (LLAVA, "llava"),
        (MESSAGES, "messages"),
        (QA, "qa"),
        (OPENSPATIAL, "openspatial"),
        (VSR, "vsr"),
    ],
)
def test_auto_detects_every_format_and_loads(tmp_path: Path, record: dict, expected: str) -> None:
    image = write_png(tmp_path / "imgs" / "a.png")
    Image.open(image).save(tmp_path / "imgs" / "a.jpg")  # OpenSpatial's <id>.jpg
    assert detect_format(record) == expected
    path = write_jsonl(tmp_path / "d.jsonl", [record])
    (sample,) = load_samples(path, image_folder=str(tmp_path / "imgs"))
    assert sample.meta["format"] == expected
    assert len(sample.visuals()) == 1
    (explicit,) = load_samples(path, format=expected, image_folder=str(tmp_path / "imgs"))
    assert explicit.messages == sample.messages


def test_cc3m_format_name_and_default_image_folder(tmp_path: Path) -> None:
    image = write_png(tmp_path / "a.png")
    (tmp_path / "chat.json").write_text(json.dumps([LLAVA]))
    (sample,) = load_samples(str(tmp_path / "chat.json"), format="cc3m")
    assert sample.visuals() == [image]


def test_limit_and_skip_budget_are_passed_through(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    records = [
        {**QA, "id": f"q{i}", "image": "a.png" if i % 2 == 0 else "missing.png"} for i in range(6)
    ]
    path = write_jsonl(tmp_path / "qa.jsonl", records)
    assert [s.id for s in load_samples(path, limit=2, max_skip_fraction=0.5)] == ["q0", "q2"]
    with pytest.raises(TheWorldUserError, match="skipped 3 of 6 samples"):
        load_samples(path, format="qa")


def test_options_reach_the_format(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (255, 255, 255)).save(tmp_path / "a.jpg")
    path = write_jsonl(tmp_path / "os.jsonl", [OPENSPATIAL])
    (sample,) = load_samples(path, draw_boxes=True, cache_dir=str(tmp_path / "cache"))
    assert Path(sample.visuals()[0]).parent == tmp_path / "cache"


def test_unknown_format_lists_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(TheWorldUserError) as info:
        load_samples(str(tmp_path / "x.json"), format="sharegpt")
    assert str(info.value) == (
        "unknown data format 'sharegpt'; valid formats: auto, llava, cc3m, messages, qa, "
        "openspatial, vsr"
    )
    assert FORMATS[0] == "auto"


def test_missing_file_is_named_and_not_sent_to_the_hub(tmp_path: Path) -> None:
    missing = str(tmp_path / "train.jsonl")
    with pytest.raises(TheWorldUserError, match=f"data file {missing} does not exist"):
        load_samples(missing)
    with pytest.raises(TheWorldUserError, match="data file data/train.json does not exist"):
        load_samples("data/train.json")
    assert looks_like_hub_id("liuhaotian/LLaVA-CC3M-Pretrain-595K")
    assert looks_like_hub_id("cambridgeltl/vsr_random:test")
    assert not looks_like_hub_id("data/train.json")
    assert not looks_like_hub_id("a/b/c")


def test_hub_id_goes_through_datasets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The Hub branch, with `datasets` replaced by a stand-in (no network here)."""
    calls = []

    def load_dataset(name: str, split: str) -> list[dict]:
        calls.append((name, split))
        return [{"image": Image.new("RGB", (4, 4)), "question": "q?", "answer": "yes", "id": "h0"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.chdir(tmp_path)
    (sample,) = load_samples("someone/spatial-qa:validation")
    assert calls == [("someone/spatial-qa", "validation")]
    assert sample.id == "h0" and sample.messages[1]["content"] == [{"type": "text", "text": "yes"}]


def test_undetectable_and_empty_and_broken_files(tmp_path: Path) -> None:
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1}])
    with pytest.raises(TheWorldUserError, match=r"cannot tell the data format .*\['foo'\]"):
        load_samples(odd)
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(TheWorldUserError, match="empty.json holds no records"):
        load_samples(str(tmp_path / "empty.json"))
    (tmp_path / "bad.jsonl").write_text(json.dumps(QA) + "\n{not json\n")
    with pytest.raises(TheWorldUserError, match=r"bad.jsonl:2: not valid JSON"):
        list(iter_records(str(tmp_path / "bad.jsonl")))
    (tmp_path / "bad.json").write_text('[{"id": 1}, {"id": ')
    with pytest.raises(TheWorldUserError, match=r"bad.json: not a valid JSON array"):
        list(iter_records(str(tmp_path / "bad.json")))
    (tmp_path / "scalars.json").write_text("[1, 2]")
    with pytest.raises(TheWorldUserError, match=r"scalars.json: item 0 is not a JSON object"):
        list(iter_records(str(tmp_path / "scalars.json")))


def test_iter_records_streams_arrays_with_bom_and_floats(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(
        b"\xef\xbb\xbf  \n" + json.dumps([{"v": 1.5}, {"v": 2}]).encode()
    )
    assert list(iter_records(str(tmp_path / "a.json"))) == [{"v": 1.5}, {"v": 2}]
    assert type(next(iter_records(str(tmp_path / "a.json")))["v"]) is float
    (tmp_path / "b.jsonl").write_bytes(b"\xef\xbb\xbf" + b'{"v": 1}\n\n{"v": 2}\n')
    assert list(iter_records(str(tmp_path / "b.jsonl"))) == [{"v": 1}, {"v": 2}]
