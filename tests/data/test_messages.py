"""HF chat records and generic QA JSONL (theworld.data.messages)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from theworld.data.messages import (
    load_messages,
    load_qa,
    messages_record_to_sample,
    messages_samples,
)
from theworld.errors import TheWorldUserError


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path, colour: tuple[int, int, int] = (10, 20, 30)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(colour))
    return str(path)


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_placeholders_filled_in_order_and_string_content(tmp_path: Path) -> None:
    a, b = write_png(tmp_path / "imgs" / "a.png"), write_png(tmp_path / "imgs" / "b.png")
    record = {
        "id": "chat-1",
        "messages": [
            {"role": "system", "content": "You see two photos."},
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": "and"},
                    {"type": "image"},
                    {"type": "text", "text": "Which is left?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "The first."}]},
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "a.png"},
                    {"type": "text", "text": "And this?"},
                ],
            },
        ],
        "images": ["a.png", {"path": "b.png", "bytes": None}],
    }
    (sample,) = load_messages(write_jsonl(tmp_path / "c.jsonl", [record]), str(tmp_path / "imgs"))
    assert sample.id == "chat-1"
    assert sample.messages == [
        {"role": "system", "content": [text("You see two photos.")]},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": a},
                text("and"),
                {"type": "image", "image": b},
                text("Which is left?"),
            ],
        },
        {"role": "assistant", "content": [text("The first.")]},
        {"role": "user", "content": [{"type": "image", "image": a}, text("And this?")]},
    ]


def test_embedded_bytes_and_arrow_style_none_fields(tmp_path: Path) -> None:
    """Rows from HF datasets carry every key on every item (`text: None` on image items)."""
    record = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "text": None, "image": None},
                    {"type": "text", "text": "Colour?", "image": None},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "Red.", "image": None}]},
        ],
        "images": [{"bytes": png_bytes((255, 0, 0)), "path": "red.png"}],
    }
    sample = messages_record_to_sample(record, image_folder=str(tmp_path), sample_id="row-0")
    image = sample.messages[0]["content"][0]["image"]
    assert isinstance(image, Image.Image) and image.getpixel((0, 0)) == (255, 0, 0)
    assert sample.messages[0]["content"][1] == text("Colour?")
    assert sample.messages[1] == {"role": "assistant", "content": [text("Red.")]}


def test_corrupt_bytes_skip_the_sample(tmp_path: Path) -> None:
    bad = {
        "id": "bad",
        "messages": [{"role": "user", "content": [{"type": "image"}]}],
        "images": [{"bytes": b"junk", "path": "junk.png"}],
    }
    good = {"id": "good", "messages": [{"role": "user", "content": "hello"}]}
    kept = messages_samples([bad, good], source="mem", image_folder=None, max_skip_fraction=0.5)
    assert [s.id for s in kept] == ["good"]
    with pytest.raises(TheWorldUserError, match=r"bad: unreadable image bytes .*\(junk.png\)"):
        messages_samples([bad, good], source="mem", image_folder=None)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (["a.png"], "sample two-images: 2 {'type': 'image'} placeholder(s) but 1"),
        (
            ["a.png", "a.png", "a.png"],
            "sample two-images: 2 {'type': 'image'} placeholder(s) but 3",
        ),
    ],
)
def test_count_mismatch_names_the_record(tmp_path: Path, images: list, message: str) -> None:
    write_png(tmp_path / "a.png")
    record = {
        "id": "two-images",
        "images": images,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "q"}],
            }
        ],
    }
    with pytest.raises(TheWorldUserError) as info:
        load_messages(write_jsonl(tmp_path / "c.jsonl", [record]))
    assert message in str(info.value)


def test_unknown_role_names_the_record(tmp_path: Path) -> None:
    record = {"id": "r", "messages": [{"role": "narrator", "content": "x"}]}
    with pytest.raises(TheWorldUserError, match="sample r: unknown role 'narrator'"):
        load_messages(write_jsonl(tmp_path / "c.jsonl", [record]))


def test_qa_records_become_two_turns(tmp_path: Path) -> None:
    a, b = write_png(tmp_path / "a.png"), write_png(tmp_path / "b.png")
    frames = [write_png(tmp_path / "clip" / f"f{i}.png") for i in range(5)]
    records = [
        {
            "id": "clip-000017",
            "question": "Which way does the ball move?",
            "choices": ["left", "right"],
            "answer": "left",
            "video": [f"clip/f{i}.png" for i in range(5)],
            "category": "direction",
        },
        {
            "id": "pair-1",
            "question": " Which is brighter? ",
            "images": ["a.png", "b.png"],
            "answer": "neither",
        },
        {"id": "one", "question": "How many?", "image": "a.png", "answer": 3},
    ]
    clip, pair, one = load_qa(write_jsonl(tmp_path / "qa.jsonl", records))
    assert clip.messages == [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": frames},
                text(
                    "Which way does the ball move?\nOptions: left, right.\n"
                    "Answer with one of the options."
                ),
            ],
        },
        {"role": "assistant", "content": [text("left")]},
    ]
    assert clip.meta == {"format": "qa", "category": "direction", "choices": ["left", "right"]}
    assert pair.messages[0]["content"] == [
        {"type": "image", "image": a},
        {"type": "image", "image": b},
        text("Which is brighter?"),
    ]
    assert one.messages[1]["content"] == [text("3")]


def test_qa_record_without_answer_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [{"id": "q7", "question": "Why?"}])
    with pytest.raises(TheWorldUserError, match="sample q7: a QA training record needs"):
        load_qa(path)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"images": "a.png"}, "sample q8: 'images' must be a non-empty list of paths"),
        ({"images": []}, "sample q8: 'images' must be a non-empty list of paths"),
        ({"choices": [1, 2]}, "sample q8: 'choices' must be a list of strings"),
    ],
)
def test_qa_record_shapes_training_and_evaluation_both_refuse(tmp_path: Path, fields: dict, message: str) -> None:
    write_png(tmp_path / "a.png")
    path = write_jsonl(tmp_path / "qa.jsonl", [{"id": "q8", "question": "Which?", "answer": "1", **fields}])
    with pytest.raises(TheWorldUserError, match=message):
        load_qa(path)


def test_qa_record_with_image_and_images_uses_both_in_order(tmp_path: Path) -> None:
    a, b = write_png(tmp_path / "a.png"), write_png(tmp_path / "b.png")
    record = {"id": "q9", "question": "Same?", "image": "a.png", "images": ["b.png"], "answer": "no"}
    (sample,) = load_qa(write_jsonl(tmp_path / "qa.jsonl", [record]))
    assert sample.visuals() == [a, b]


def test_qa_video_file_is_a_clip_and_a_broken_one_is_skipped(tmp_path: Path) -> None:
    from theworld.processing.video import VideoFile
    from theworld.testing.inputs import moving_frames, write_video

    good = write_video(tmp_path / "good.webm", moving_frames(9, size=16), fps=10)
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 20)
    records = [{"id": f"r{i}", "question": "Which way?", "answer": "left", "video": name}
               for i, name in enumerate(["good.webm", "broken.mp4"])]  # fmt: skip
    (sample,) = load_qa(write_jsonl(tmp_path / "qa.jsonl", records), max_skip_fraction=0.5)
    (video,) = sample.visuals()
    assert isinstance(video, VideoFile) and video == good
