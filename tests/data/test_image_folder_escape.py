"""Relative visual paths in data files stay inside the image folder, in every format.

A data file naming `../secret.png` must not make a run open a file outside its image folder; a
path that leaves the folder skips the sample (counted like any unusable visual) with a log line
naming the sample and the path. Absolute paths in the data are the data's explicit choice.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from theworld.data.images import UnreadableVisual, resolve_clip, resolve_path
from theworld.data.loading import load_samples
from theworld.errors import TheWorldUserError

ESCAPE = "../secret.png"


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    """tmp/secret.png (outside) and tmp/data/ (the data file's folder, the default image folder)."""
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(secret)
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(data / "ok.png")
    return secret, data


def _records(fmt: str, path: str) -> list[dict]:
    turns = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]
    made = {
        "llava": lambda i, p: {"id": f"s{i}", "image": p, "conversations": turns},
        "messages": lambda i, p: {"id": f"s{i}", "images": [p], "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]},
            {"role": "assistant", "content": "a"}]},
        "qa": lambda i, p: {"id": f"s{i}", "question": "q", "answer": "a", "image": p},
        "qa-video": lambda i, p: {"id": f"s{i}", "question": "q", "answer": "a", "video": ["ok.png", p]},
        "openspatial": lambda i, p: {"id": f"s{i}", "filename": p.removesuffix(".png"), "bbox": [], "rle": [],
                                     "conversations": turns},
        "vsr": lambda i, p: {"image": p, "caption": "c", "label": 1},
    }  # fmt: skip
    return [made[fmt](i, "ok.png" if i else path) for i in range(4)]


@pytest.mark.parametrize("fmt", ["llava", "messages", "qa", "qa-video", "openspatial", "vsr"])
def test_a_relative_path_leaving_the_image_folder_skips_the_sample(tmp_path, caplog, fmt):
    secret, data = _layout(tmp_path)
    if fmt == "openspatial":  # its records name .jpg files
        Image.new("RGB", (8, 8)).save(secret.with_suffix(".jpg"))
        Image.new("RGB", (8, 8)).save(data / "ok.jpg")
    records = _records(fmt, ESCAPE)
    path = data / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loader_format = "qa" if fmt == "qa-video" else fmt
    with caplog.at_level(logging.WARNING):
        samples = load_samples(str(path), format=loader_format, max_skip_fraction=0.5)
    assert len(samples) == 3
    opened = [v for s in samples for v in s.visuals() for v in (v if isinstance(v, list) else [v])]
    assert all(str(data) in v for v in opened), opened
    skipped = [r.getMessage() for r in caplog.records if "skipping sample" in r.getMessage()]
    assert len(skipped) == 1 and "leaves the image folder" in skipped[0], skipped
    assert "../secret" in skipped[0]  # the path as the data file gave it
    first_id = "s0" if fmt != "vsr" else "../secret.png#0"  # VSR records have no id: image#index
    assert skipped[0].startswith(f"skipping sample {first_id}: "), skipped

    # Every sample like that: the usual skip budget stops the load with the sample named.
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(fmt, ESCAPE)[:1]))
    with pytest.raises(TheWorldUserError, match="leaves the image folder"):
        load_samples(str(path), format=loader_format)


def test_absolute_paths_and_a_wider_image_folder_still_reach_the_file(tmp_path):
    secret, data = _layout(tmp_path)
    path = data / "train.jsonl"
    path.write_text(json.dumps({"id": "abs", "question": "q", "answer": "a", "image": str(secret)}) + "\n")
    assert load_samples(str(path), format="qa")[0].visuals() == [str(secret)]
    path.write_text(json.dumps({"id": "rel", "question": "q", "answer": "a", "image": "data/../secret.png"}) + "\n")
    assert load_samples(str(path), format="qa", image_folder=str(tmp_path))[0].visuals() == [str(secret)]


def test_resolve_path_and_clip_folders(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "clip").mkdir(parents=True)
    assert resolve_path("a/../b.png", folder) == str(folder / "b.png")  # stays inside: fine
    for bad in ("../x.png", "a/../../x.png", "clip/../../x"):
        with pytest.raises(UnreadableVisual, match="leaves the image folder"):
            resolve_path(bad, folder)
    with pytest.raises(UnreadableVisual, match="leaves the image folder"):
        resolve_clip("../imgs-elsewhere", folder)
    assert resolve_path("../x.png", None) == str(Path.cwd().parent / "x.png")  # no folder: the working directory
