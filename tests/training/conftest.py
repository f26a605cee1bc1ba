"""Fixtures for the training tests: a small LLaVA-format data set with and without images, and
helpers to write training configs for the tiny checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

COLORS = {"red": (220, 30, 30), "blue": (30, 40, 220), "green": (30, 200, 60)}

# (id, image color or None, [(question, answer), ...]); 8 records, 6 with images, one two-turn.
RECORDS = [
    ("r0", "red", [("What color is the ball?", "The ball is red."), ("Is it near?", "yes")]),
    ("r1", "blue", [("What color is the ball?", "The ball is blue.")]),
    ("r2", "green", [("What color is the ball?", "The ball is green.")]),
    ("r3", None, [("Is it near?", "no")]),
    ("r4", "red", [("Which way does it move?", "left")]),
    ("r5", "blue", [("Which way does it move?", "right")]),
    ("r6", None, [("Describe this scene.", "A red square near a blue circle.")]),
    ("r7", "green", [("Describe this scene.", "A green circle.")]),
]


def _draw(color: tuple[int, int, int], seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    pixels[8:28, 10:30] = color
    return Image.fromarray(pixels)


def write_llava(path: Path, records=RECORDS) -> Path:
    data = []
    for sample_id, color, turns in records:
        conversations = []
        for k, (question, answer) in enumerate(turns):
            prefix = "<image>\n" if color and k == 0 else ""
            conversations += [{"from": "human", "value": prefix + question}, {"from": "gpt", "value": answer}]
        record = {"id": sample_id, "conversations": conversations}
        if color:
            record["image"] = f"images/{color}.png"
        data.append(record)
    path.write_text(json.dumps(data, indent=1))
    return path


@pytest.fixture(scope="session")
def train_data_file(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("train_data")
    (root / "images").mkdir()
    for seed, (name, color) in enumerate(COLORS.items()):
        _draw(color, seed).save(root / "images" / f"{name}.png")
    return str(write_llava(root / "train.json"))


@pytest.fixture
def train_config_values(tiny_gemma_dir, tiny_vae_dir, world_settings, train_data_file, tmp_path):
    """Config keys for a short align run on the tiny models (tests change what they need)."""
    return dict(
        model_name_or_path=tiny_gemma_dir,
        cosmos_model_name=tiny_vae_dir,
        stage="align",
        train_data=train_data_file,
        output_dir=str(tmp_path / "out"),
        max_steps=4,
        per_device_train_batch_size=2,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_steps=100,
        seed=0,
        report_to="none",
        **world_settings,
    )


@pytest.fixture
def write_config(tmp_path):
    """write_config(values, name="train.yaml") -> path of a YAML config file."""

    def write(values: dict, name: str = "train.yaml") -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(values, sort_keys=False))
        return str(path)

    return write


@pytest.fixture
def llava_writer():
    """write_llava(path, records) -> path: a LLaVA JSON file of (id, color or None, [(q, a), ...]) records."""
    return write_llava
