"""Each loader on a small file written in its published format; every error names its source."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from theworld.errors import TheWorldUserError
from theworld.evaluation.benchmarks import (
    BENCHMARKS,
    draw_region_boxes,
    load_benchmark,
    load_blink_relative_depth,
    load_jsonl,
    load_spatialrgpt_bench,
    load_vsr,
    name_regions,
)
from theworld.evaluation.items import EvalItem, to_sample


def _png(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- BLINK (parquet, as on the Hub)

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_BLINK_SCHEMA = pa.schema(
    [("idx", pa.string()), ("question", pa.string()), ("sub_task", pa.string())]
    + [(f"image_{i}", _IMAGE) for i in range(1, 5)]
    + [("choices", pa.list_(pa.string())), ("answer", pa.string()), ("prompt", pa.string())]
)


def _blink_rows(answers: list[str]) -> list[dict]:
    rows = []
    for i, answer in enumerate(answers):
        rows.append(
            {
                "idx": f"val_Relative_Depth_{i + 1}",
                "question": "Which point is closer to the camera?",
                "sub_task": "Relative_Depth",
                "image_1": {"bytes": _png((10 * i, 0, 0)), "path": f"img{i}.png"},
                "image_2": None,
                "image_3": None,
                "image_4": None,
                "choices": ["A", "B"],
                "answer": answer,
                "prompt": "Which point is closer to the camera?\nSelect from the following choices.\n(A) A\n(B) B",
            }
        )
    return rows


def _write_blink(path: Path, answers: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(_blink_rows(answers), schema=_BLINK_SCHEMA), path)
    return path


def test_blink_parquet_maps_letter_answers_to_choices(tmp_path: Path) -> None:
    path = _write_blink(tmp_path / "val.parquet", ["(A)", "(B)", "(B)"])
    items = load_blink_relative_depth(str(path))
    assert [i.answer for i in items] == ["A", "B", "B"]
    first = items[0]
    assert first.id == "val_Relative_Depth_1" and first.kind == "choice" and first.choices == ["A", "B"]
    assert first.category == "Relative_Depth"
    assert len(first.visuals) == 1 and isinstance(first.visuals[0], Image.Image)
    assert first.visuals[0].size == (64, 48)


def test_blink_snapshot_folder_picks_task_and_split(tmp_path: Path) -> None:
    _write_blink(tmp_path / "BLINK" / "Relative_Depth" / "val-00000-of-00001.parquet", ["(A)", "(B)"])
    _write_blink(tmp_path / "BLINK" / "Relative_Depth" / "test-00000-of-00001.parquet", [""])
    items = load_blink_relative_depth(str(tmp_path / "BLINK"), limit=1)
    assert [i.answer for i in items] == ["A"]
    hidden = load_blink_relative_depth(str(tmp_path / "BLINK"), split="test")
    assert hidden[0].answer is None  # test split withholds answers


def test_blink_bad_answer_names_the_row(tmp_path: Path) -> None:
    path = _write_blink(tmp_path / "val.parquet", ["(A)", "(C)"])
    with pytest.raises(TheWorldUserError, match=r"val\.parquet row 1.*'\(C\)'"):
        load_blink_relative_depth(str(path))


# ---------------------------------------------------------------- VSR (JSONL + COCO folder)


def test_vsr_captions_become_true_false_questions(tmp_path: Path) -> None:
    coco = tmp_path / "coco"
    (coco / "train2017").mkdir(parents=True)
    (coco / "val2017").mkdir()
    (coco / "train2017" / "000000085637.jpg").write_bytes(_png((1, 2, 3)))
    (coco / "val2017" / "000000000139.jpg").write_bytes(_png((3, 2, 1)))
    rows = [
        {"image": "000000085637.jpg", "image_link": "http://images.cocodataset.org/train2017/000000085637.jpg",
         "caption": "The cat is on the bed.", "label": 1, "relation": "on", "subj": "cat", "obj": "bed"},
        {"image": "000000000139.jpg", "image_link": "http://images.cocodataset.org/val2017/000000000139.jpg",
         "caption": "The tv is left of the chair.", "label": 0, "relation": "left of", "subj": "tv", "obj": "chair"},
    ]  # fmt: skip
    path = _write_jsonl(tmp_path / "test.jsonl", rows)
    items = load_vsr(str(path), image_folder=str(coco))
    assert [i.answer for i in items] == ["true", "false"]
    assert items[0].choices == ["true", "false"] and items[1].category == "left of"
    assert items[0].question == 'Is this statement about the image true or false? "The cat is on the bed."'
    assert items[0].visuals == [str((coco / "train2017" / "000000085637.jpg").resolve())]
    assert items[0].id != items[1].id


def test_vsr_missing_image_is_an_error_naming_the_line(tmp_path: Path) -> None:
    row = {"image": "nope.jpg", "image_link": "", "caption": "x", "label": 1, "relation": "on"}
    path = _write_jsonl(tmp_path / "dev.jsonl", [row])
    with pytest.raises(TheWorldUserError, match=r"dev\.jsonl:1: image not found"):
        load_vsr(str(path))


# ---------------------------------------------------------------- SpatialRGPT-Bench


def _srgpt_rows() -> list[dict]:
    def row(rid: str, q: str, a: str, qtype: str, cat: str, boxes: list) -> dict:
        # the published export stores these fields as string-serialised Python literals
        return {
            "id": rid,
            "image_info": str({"file_path": "scene.png", "height": 48, "width": 64}),
            "text_q": q.replace("<mask>", "<region>"),
            "conversations": str([{"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}]),
            "bbox": str(boxes),
            "rle": str([]),
            "qa_info": str({"type": qtype, "category": cat}),
        }

    two = [[5, 20, 30, 40], [35, 5, 60, 30]]
    return [
        row("q0", "Which is more to the left, <mask> or <mask>?", "Region [1] is more to the left.",
            "qualitative", "left_choice", two),
        row("q1", "Is <mask> <depth> behind <mask> <depth>?", "No, Region [0] is closer to the viewer.",
            "qualitative", "behind_predicate", two),
        row("q2", "What is the height of <mask>?", "Region [0] is 6.91 feet tall.",
            "quantitative", "height_data", two[:1]),
        row("q3", "If you are at <mask>, where will you find <mask>?",
            "Region [1] is roughly at 10 o'clock from Region [0].", "quantitative", "direction", two),
        row("q4", "What is the vertical distance between <mask> and <mask>?",
            "Region [0] and Region [1] overlap, so it's hard to tell.", "quantitative", "vertical_distance", two),
    ]  # fmt: skip


def test_spatialrgpt_string_literals_regions_and_kinds(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "scene.png").write_bytes(_png((128, 128, 128)))
    path = tmp_path / "SpatialRGPT-Bench_v1.json"
    path.write_text(json.dumps(_srgpt_rows()), encoding="utf-8")
    items = {i.id: i for i in load_spatialrgpt_bench(str(path), image_folder=str(tmp_path / "images"))}

    choice = items["q0"]
    assert choice.question == "Which is more to the left, Region [0] or Region [1]?"
    assert (choice.kind, choice.choices, choice.answer) == ("choice", ["Region [0]", "Region [1]"], "Region [1]")
    assert choice.meta["answer_text"] == "Region [1] is more to the left."
    assert choice.category == "left_choice"

    free = items["q1"]
    assert free.question == "Is Region [0] behind Region [1]?" and free.kind == "qualitative_free"
    assert free.answer == "No, Region [0] is closer to the viewer."

    assert items["q2"].kind == "numeric" and items["q2"].meta["answer_m"] == pytest.approx(6.91 * 0.3048)
    assert items["q3"].kind == "clock" and items["q3"].meta["answer_hour"] == 10
    # a metric question whose reference has no number is judged, not dropped
    assert items["q4"].kind == "qualitative_free" and "scoring_note" in items["q4"].meta

    image = choice.visuals[0]
    assert isinstance(image, Image.Image) and image.size == (64, 48)
    assert image.getpixel((15, 40)) == (230, 25, 75)  # bottom edge of box 0
    assert image.getpixel((60, 27)) == (60, 180, 75)  # right edge of box 1
    assert image.getpixel((48, 42)) == (128, 128, 128)  # outside every box and label


def test_spatialrgpt_embedded_image_in_parquet(tmp_path: Path) -> None:
    rows = _srgpt_rows()[:1]
    rows[0].pop("image_info")
    rows[0]["image"] = {"bytes": _png((0, 0, 0)), "path": None}
    path = tmp_path / "val-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    (item,) = load_spatialrgpt_bench(str(path))
    assert item.visuals[0].getpixel((15, 40)) == (230, 25, 75)


def test_spatialrgpt_more_masks_than_boxes_is_an_error(tmp_path: Path) -> None:
    rows = _srgpt_rows()[:1]
    rows[0]["bbox"] = "[[1, 2, 3, 4]]"
    (tmp_path / "scene.png").write_bytes(_png((0, 0, 0)))
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(TheWorldUserError, match=r"bench\.json row 0: .*regions"):
        load_spatialrgpt_bench(str(path))


def test_name_regions_counts_masks() -> None:
    assert name_regions("Is <mask> <depth> left of <mask>?") == ("Is Region [0] left of Region [1]?", 2)
    assert name_regions("no masks") == ("no masks", 0)


def test_drawn_boxes_look_like_training_boxes(tmp_path: Path) -> None:
    """Eval images carry the same marks as training's boxed OpenSpatial images."""
    import numpy as np

    from theworld.data.openspatial import draw_numbered_boxes

    source = tmp_path / "scene.png"
    Image.new("RGB", (320, 240), (120, 140, 160)).save(source)
    boxes = [[10, 20, 150, 200], [160, 30, 300, 120], [10, 20, 150, 200]]  # box 2 repeats box 0
    draw_numbered_boxes(str(source), boxes, str(tmp_path / "train.jpg"))
    draw_region_boxes(Image.open(source), boxes).save(tmp_path / "eval.jpg", quality=95)
    ours = np.asarray(Image.open(tmp_path / "eval.jpg"), dtype=np.float64)
    theirs = np.asarray(Image.open(tmp_path / "train.jpg").convert("RGB"), dtype=np.float64)
    assert np.abs(ours - theirs).max() < 1e-9  # the same drawing through the same JPEG encoder


def test_draw_region_boxes_shrinks_large_images() -> None:
    out = draw_region_boxes(Image.new("RGB", (3000, 1500)), [[0, 0, 100, 100]])
    assert out.size == (1024, 512)


# ---------------------------------------------------------------- generic JSONL


def test_jsonl_generic_format_and_sample(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    for name in ("a.png", "f0.png", "f1.png"):
        (tmp_path / "imgs" / name).write_bytes(_png((5, 5, 5)))
    rows = [
        {"id": "clip-1", "question": "Which way does the ball move?", "choices": ["left", "right"],
         "answer": "left", "image": "imgs/a.png", "category": "direction"},
        {"id": "clip-2", "question": "What happens next?", "answer": "It falls.",
         "video": ["imgs/f0.png", "imgs/f1.png"]},
    ]  # fmt: skip
    items = load_jsonl(str(_write_jsonl(tmp_path / "qa.jsonl", rows)))
    assert items[0].kind == "choice" and items[1].kind == "qualitative_free"
    assert items[0].visuals == [str((tmp_path / "imgs" / "a.png").resolve())]
    assert items[1].visuals == [[str((tmp_path / "imgs" / f"f{i}.png").resolve()) for i in range(2)]]

    sample = to_sample(items[0], answer="left")
    user, assistant = sample.messages
    assert user["content"][0] == {"type": "image", "image": items[0].visuals[0]}
    assert user["content"][1]["text"].startswith("Which way does the ball move?\nOptions: left, right.")
    assert assistant["content"] == [{"type": "text", "text": "left"}]
    clip = to_sample(items[1])
    assert len(clip.messages) == 1 and clip.messages[0]["content"][0]["type"] == "video"
    assert clip.visuals() == [items[1].visuals[0]]


def test_jsonl_video_file_is_a_clip(tmp_path: Path) -> None:
    from theworld.processing.video import VideoFile
    from theworld.testing.inputs import moving_frames, write_video

    write_video(tmp_path / "clip.mp4", moving_frames(9, size=16), fps=10)
    rows = [{"id": "v", "question": "Which way?", "choices": ["left", "right"], "answer": "right", "video": "clip.mp4"}]
    (item,) = load_jsonl(str(_write_jsonl(tmp_path / "qa.jsonl", rows)))
    assert isinstance(item.visuals[0], VideoFile) and item.visuals[0] == str((tmp_path / "clip.mp4").resolve())
    assert to_sample(item).messages[0]["content"][0] == {"type": "video", "video": item.visuals[0]}
    (tmp_path / "frames").mkdir()
    for i in range(5):
        (tmp_path / "frames" / f"{i}.png").write_bytes(_png((i, i, i)))
    rows = [{"id": "f", "question": "q", "answer": "a", "video": "frames"}, {"id": "m", "question": "q", "video": "no.mp4"}]
    with pytest.raises(TheWorldUserError, match=r"qa2\.jsonl:2: clip .*no\.mp4: clip not found"):
        load_jsonl(str(_write_jsonl(tmp_path / "qa2.jsonl", rows)))
    (folder_item,) = load_jsonl(str(_write_jsonl(tmp_path / "qa3.jsonl", rows[:1])))
    assert folder_item.visuals == [[str(tmp_path / "frames" / f"{i}.png") for i in range(5)]]


def test_jsonl_errors_name_file_and_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q"}\n{not json\n', encoding="utf-8")
    with pytest.raises(TheWorldUserError, match=r"bad\.jsonl:2"):
        load_jsonl(str(bad))
    outside = _write_jsonl(tmp_path / "o.jsonl", [{"id": "x", "question": "q", "choices": ["a"], "answer": "b"}])
    with pytest.raises(TheWorldUserError, match=r"'x'.*not one of the choices"):
        load_jsonl(str(outside))
    dup = _write_jsonl(tmp_path / "d.jsonl", [{"id": "x", "question": "q"}, {"id": "x", "question": "r"}])
    with pytest.raises(TheWorldUserError, match="duplicate item id 'x'"):
        load_jsonl(str(dup))


def test_relative_image_paths_stay_inside_the_image_folder(tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(_png((1, 2, 3)))
    data = tmp_path / "data"
    data.mkdir()
    (data / "ok.png").write_bytes(_png((5, 5, 5)))
    for key, value in (("image", "../secret.png"), ("video", ["ok.png", "../secret.png"])):
        path = _write_jsonl(data / "qa.jsonl", [{"id": "x", "question": "q", "answer": "a", key: value}])
        with pytest.raises(TheWorldUserError, match=r"qa\.jsonl.*'\.\./secret\.png' leaves the image folder"):
            load_jsonl(str(path))
    secret = str((tmp_path / "secret.png").resolve())
    absolute = _write_jsonl(data / "abs.jsonl", [{"id": "x", "question": "q", "answer": "a", "image": secret}])
    assert load_jsonl(str(absolute))[0].visuals == [secret]  # an absolute path is the data's explicit choice


# ---------------------------------------------------------------- sources and registry


def test_missing_local_path_and_unknown_benchmark(tmp_path: Path) -> None:
    with pytest.raises(TheWorldUserError, match="no such file"):
        load_jsonl(str(tmp_path / "missing.jsonl"))
    with pytest.raises(TheWorldUserError, match="no such file"):
        load_vsr("not-a-hub-id")
    with pytest.raises(TheWorldUserError, match="unknown benchmark 'nope'"):
        load_benchmark("nope", "x")
    assert set(BENCHMARKS) == {"blink-relative-depth", "blink-spatial-relation", "vsr", "spatialrgpt-bench", "jsonl"}


def test_hub_id_goes_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_dataset(path: str, name: str | None = None, split: str | None = None) -> list[dict]:
        calls.append((path, name, split))
        if path == "missing/dataset":
            raise FileNotFoundError("Dataset 'missing/dataset' doesn't exist on the Hub")
        return _blink_rows(["(B)", "(A)", "(A)"])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    items = load_benchmark("blink-spatial-relation", "BLINK-Benchmark/BLINK", limit=2)
    assert calls == [("BLINK-Benchmark/BLINK", "Spatial_Relation", "val")]
    assert [i.answer for i in items] == ["B", "A"]
    with pytest.raises(TheWorldUserError, match="missing/dataset"):
        load_vsr("missing/dataset")


def test_eval_item_rejects_unknown_kind() -> None:
    with pytest.raises(TheWorldUserError, match="unknown kind"):
        EvalItem(id="a", question="q", choices=None, answer=None, kind="vibes")  # type: ignore[arg-type]
