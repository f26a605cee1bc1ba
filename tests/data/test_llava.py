"""LLaVA conversation format and LLaVA-CC3M (theworld.data.llava)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from theworld.data.llava import load_cc3m, load_llava
from theworld.errors import TheWorldUserError


def write_png(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 90, 200)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return str(path)


def text(value: str) -> dict:
    return {"type": "text", "text": value}


BUS = {
    "id": "000000033471",
    "image": "coco/train2017/000000033471.jpg",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."},
    ],
}


def bus_messages(image: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                text("What are the colors of the bus in the image?"),
            ],
        },
        {"role": "assistant", "content": [text("The bus in the image is white and red.")]},
        {"role": "user", "content": [text("What feature can be seen on the back of the bus?")]},
        {"role": "assistant", "content": [text("The back of the bus features an advertisement.")]},
    ]


def test_json_array_and_jsonl_give_the_same_exact_messages(tmp_path: Path) -> None:
    image = write_png(tmp_path / "imgs" / "coco" / "train2017" / "000000033471.jpg")
    (tmp_path / "a.json").write_text(json.dumps([BUS], indent=2))
    (tmp_path / "a.jsonl").write_text(json.dumps(BUS) + "\n\n")
    for name in ("a.json", "a.jsonl"):
        (sample,) = load_llava(str(tmp_path / name), str(tmp_path / "imgs"))
        assert sample.id == "000000033471"
        assert sample.messages == bus_messages(image)
        assert sample.visuals() == [image]


def test_markers_place_images_inside_the_turn(tmp_path: Path) -> None:
    a, b = write_png(tmp_path / "a.png"), write_png(tmp_path / "b.png")
    record = {
        "id": 5,
        "image": ["a.png", "b.png"],
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "user", "value": "Compare <image> with <image>: which is darker?"},
            {"from": "assistant", "value": "The first."},
        ],
    }
    (tmp_path / "d.json").write_text(json.dumps([record]))
    (sample,) = load_llava(str(tmp_path / "d.json"))  # image_folder defaults to the file's
    assert sample.id == "5"
    assert sample.messages == [
        {"role": "system", "content": [text("Be brief.")]},
        {
            "role": "user",
            "content": [
                text("Compare"),
                {"type": "image", "image": a},
                text("with"),
                {"type": "image", "image": b},
                text(": which is darker?"),
            ],
        },
        {"role": "assistant", "content": [text("The first.")]},
    ]


def test_no_marker_puts_image_first_and_text_only_is_allowed(tmp_path: Path) -> None:
    a = write_png(tmp_path / "a.png")
    records = [
        {
            "id": "m",
            "image": "a.png",
            "conversations": [
                {"from": "system", "value": "S"},
                {"from": "human", "value": "Describe it."},
                {"from": "gpt", "value": "Blue."},
            ],
        },
        {
            "id": "t",
            "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
        },
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    marked, text_only = load_llava(str(tmp_path / "d.jsonl"))
    assert marked.messages[0] == {"role": "system", "content": [text("S")]}
    assert marked.messages[1] == {
        "role": "user",
        "content": [{"type": "image", "image": a}, text("Describe it.")],
    }
    assert text_only.messages == [
        {"role": "user", "content": [text("Hi")]},
        {"role": "assistant", "content": [text("Hello")]},
    ]
    assert text_only.visuals() == []


def test_video_clips_from_frame_folder_with_image_or_video_marker(tmp_path: Path) -> None:
    frames = [write_png(tmp_path / "clip" / f"{i:05d}.png") for i in range(5)]
    records = [
        {
            "id": "v1",
            "video": "clip",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat moves?"},
                {"from": "gpt", "value": "A ball."},
            ],
        },
        {
            "id": "v2",
            "video": "clip",
            "conversations": [
                {"from": "human", "value": "<video> What moves?"},
                {"from": "gpt", "value": "A ball."},
            ],
        },
    ]
    (tmp_path / "v.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    for sample in load_llava(str(tmp_path / "v.jsonl")):
        assert sample.messages[0]["content"] == [
            {"type": "video", "video": frames},
            text("What moves?"),
        ]


def test_undecodable_video_file_is_skipped_with_reason_and_counted(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00")
    ok = {
        "id": "ok",
        "image": "a.png",
        "conversations": [{"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "a"}],
    }
    video = {
        "id": "mp4",
        "video": "clip.mp4",
        "conversations": [{"from": "human", "value": "<video> q"}, {"from": "gpt", "value": "a"}],
    }
    (tmp_path / "d.json").write_text(json.dumps([ok, video]))
    with pytest.raises(TheWorldUserError, match=r"mp4: cannot decode video .*clip\.mp4"):
        load_llava(str(tmp_path / "d.json"))
    assert [s.id for s in load_llava(str(tmp_path / "d.json"), max_skip_fraction=0.5)] == ["ok"]
    from theworld.testing.inputs import moving_frames, write_video

    write_video(tmp_path / "clip.mp4", moving_frames(5, size=16), fps=10)  # a real video: kept as a clip
    assert [s.id for s in load_llava(str(tmp_path / "d.json"))] == ["ok", "mp4"]


def test_missing_images_are_skipped_until_budget_is_exceeded(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    records = [
        {
            "id": f"r{i}",
            "image": "a.png" if i != 3 else "lost.png",
            "conversations": [
                {"from": "human", "value": "<image> q"},
                {"from": "gpt", "value": "a"},
            ],
        }
        for i in range(4)
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    kept = load_llava(str(tmp_path / "d.jsonl"), max_skip_fraction=0.25)
    assert [s.id for s in kept] == ["r0", "r1", "r2"]
    with pytest.raises(TheWorldUserError) as info:
        load_llava(str(tmp_path / "d.jsonl"))
    assert "skipped 1 of 4 samples" in str(info.value)
    assert f"r3: file not found ({tmp_path / 'lost.png'})" in str(info.value)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {
                "id": "x1",
                "image": ["a.png"],
                "conversations": [
                    {"from": "human", "value": "<image><image> q"},
                    {"from": "gpt", "value": "a"},
                ],
            },
            "sample x1: 2 <image> marker(s) in the conversation but 1 visual(s)",
        ),
        (
            {
                "id": "x2",
                "conversations": [{"from": "robot", "value": "q"}, {"from": "gpt", "value": "a"}],
            },
            "sample x2: unknown speaker 'robot'",
        ),
        (
            {"id": "x3", "image": "a.png", "conversations": [{"from": "gpt", "value": "a"}]},
            "sample x3: has visuals but no user turn",
        ),
        ({"id": "x4", "conversations": []}, "sample x4: `conversations` must be a non-empty list"),
    ],
)
def test_malformed_records_raise_naming_the_sample(
    tmp_path: Path, record: dict, message: str
) -> None:
    (tmp_path / "d.json").write_text(json.dumps([record]))
    with pytest.raises(TheWorldUserError) as info:
        load_llava(str(tmp_path / "d.json"))
    assert message in str(info.value)


def test_cc3m_chat_json(tmp_path: Path) -> None:
    """A file in exactly LLaVA-CC3M-Pretrain-595K `chat.json`'s form."""
    records = [
        {
            "id": "GCC_train_002582585",
            "image": "GCC_train_002582585.jpg",
            "conversations": [
                {
                    "from": "human",
                    "value": "Provide a brief description of the given image.\n<image>",
                },
                {"from": "gpt", "value": "olive oil is a healthy ingredient used liberally ."},
            ],
            "blip_caption": "a bottle of olive oil next to a bowl",
        },
        {
            "id": "GCC_train_002275631",
            "image": "GCC_train_002275631.jpg",
            "conversations": [
                {
                    "from": "human",
                    "value": "<image>\nWrite a terse but informative summary of the picture.",
                },
                {"from": "gpt", "value": "a man walks along the beach at sunset"},
            ],
            "blip_caption": "a man walking on the beach",
        },
    ]
    (tmp_path / "chat.json").write_text(json.dumps(records))
    folder = tmp_path / "images"
    first = write_png(folder / "GCC_train_002582585.jpg")
    second = write_png(folder / "GCC_train_002275631.jpg")
    one, two = load_cc3m(str(tmp_path / "chat.json"), str(folder))
    assert one.id == "GCC_train_002582585"
    assert one.messages == [
        {
            "role": "user",
            "content": [
                text("Provide a brief description of the given image."),
                {"type": "image", "image": first},
            ],
        },
        {
            "role": "assistant",
            "content": [text("olive oil is a healthy ingredient used liberally .")],
        },
    ]
    assert two.messages[0]["content"] == [
        {"type": "image", "image": second},
        text("Write a terse but informative summary of the picture."),
    ]
    assert "blip" not in json.dumps(one.messages + two.messages)
