"""Every sample is checked before step 1, and a run with nothing to learn fails instead of "training".

Before: a 4-frame clip passed the load checks and crashed training at its step with a ValueError
(and again on resume); conversations without an assistant turn trained silently on nothing; a
run whose every sample had no answer, or was dropped for length, exited 0 with loss 0.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from theworld.cli.main import main
from theworld.errors import TheWorldUserError
from theworld.testing.inputs import random_image
from theworld.training.config import build_config
from theworld.training.run import train

# id -> frames per clip; the tiny world settings take 4k+1 frames, at most 9.
CLIPS = {"c0": 5, "c1": 5, "c2": 9, "c3": 5, "c4": 1, "c5": 5, "short": 4, "long": 13}


@pytest.fixture(scope="module")
def clip_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    frames = root / "frames"
    frames.mkdir()
    for t in range(13):
        random_image(t, 32).save(frames / f"{t:02d}.png")
    lines = []
    for sample_id, count in CLIPS.items():
        video = [f"frames/{t:02d}.png" for t in range(count)]
        lines.append({"id": sample_id, "question": "Which way?", "choices": ["left", "right"], "answer": "left", "video": video})
    (root / "clips.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root / "clips.jsonl"


def _skips(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping sample")]


def test_clips_with_frame_counts_the_world_path_refuses_are_skipped_before_training(
    train_config_values, clip_data, caplog
):
    values = dict(train_config_values, train_data=str(clip_data), max_skip_fraction=0.25, max_steps=4,
                  per_device_train_batch_size=1)  # fmt: skip
    with caplog.at_level(logging.WARNING):
        result = train(build_config(values))
    assert result.global_step == 4
    assert [s.id for s in result.trainer.train_dataset.samples] == ["c0", "c1", "c2", "c3", "c4", "c5"]
    skipped = _skips(caplog)
    assert len(skipped) == 2 and "sample short: " in skipped[0] and "sample long: " in skipped[1], skipped
    assert "4 frames" in skipped[0] and "13 frames" in skipped[1] and "world_num_frames=9" in skipped[1]


def test_too_many_bad_clips_stop_the_run_before_step_1(train_config_values, clip_data, write_config, capsys):
    path = write_config(dict(train_config_values, train_data=str(clip_data)))  # max_skip_fraction 0.01
    assert main(["train", "--config", path]) == 2
    err = capsys.readouterr().err
    assert "skipped 2 of 8 samples" in err and "short: a clip has 4 frames" in err
    assert not os.path.exists(os.path.join(train_config_values["output_dir"], "checkpoint-1"))


def test_world_off_takes_any_clip_length(train_config_values, clip_data):
    # Gemma's image path sees one frame of a clip: only the world path needs 4k+1 frames.
    values = dict(train_config_values, train_data=str(clip_data), enable_world=False, stage="finetune", max_steps=1,
                  per_device_train_batch_size=1)  # fmt: skip
    trainer = train(build_config(values)).trainer
    assert len(trainer.train_dataset) == len(CLIPS)


def _no_answer(records):
    return [(sample_id, color, [(q, None) for q, _ in turns]) for sample_id, color, turns in records]


def _write_llava(path: Path, records) -> str:
    data = []
    for sample_id, color, turns in records:
        conversations = []
        for question, answer in turns:
            conversations.append({"from": "human", "value": question})
            if answer is not None:
                conversations.append({"from": "gpt", "value": answer})
        data.append({"id": sample_id, "conversations": conversations})
    path.write_text(json.dumps(data))
    return str(path)


TEXT_RECORDS = [(f"t{i}", None, [("Is it near?", "yes" if i % 2 else "no")]) for i in range(6)]


def test_samples_without_an_assistant_turn_are_named_and_left_out(train_config_values, tmp_path, caplog):
    records = TEXT_RECORDS[:4] + _no_answer(TEXT_RECORDS[4:])
    values = dict(train_config_values, train_data=_write_llava(tmp_path / "d.json", records), max_steps=1)
    with caplog.at_level(logging.WARNING):
        trainer = train(build_config(values)).trainer
    assert [s.id for s in trainer.train_dataset.samples] == ["t0", "t1", "t2", "t3"]
    warned = [r.getMessage() for r in caplog.records if "no assistant turn" in r.getMessage()]
    assert [m.split()[1] for m in warned if m.startswith("sample ")] == ["t4", "t5"], warned


def test_data_with_no_assistant_turn_at_all_is_an_error(train_config_values, tmp_path, write_config, capsys):
    data = _write_llava(tmp_path / "d.json", _no_answer(TEXT_RECORDS))
    path = write_config(dict(train_config_values, train_data=data))
    assert main(["train", "--config", path]) == 2
    err = capsys.readouterr().err
    assert "nothing to learn" in err and "no assistant turn" in err and data in err
    assert not os.path.exists(train_config_values["output_dir"])


def test_every_sample_dropped_for_length_fails_instead_of_training_on_nothing(
    train_config_values, tmp_path, write_config, capsys
):
    data = _write_llava(tmp_path / "d.json", TEXT_RECORDS)
    path = write_config(dict(train_config_values, train_data=data, max_length=6, max_steps=30, save_steps=100))
    assert main(["train", "--config", path]) == 2
    err = capsys.readouterr().err
    assert "no supervised token" in err and "max_length=6" in err and "t0" in err, err
    assert "3 training batches" in err  # stopped at the end of the first epoch (6 samples, batch 2), not at step 30
    # no final model that looks trained
    assert not os.path.exists(os.path.join(train_config_values["output_dir"], "world_adapter.safetensors"))


def test_a_few_samples_dropped_for_length_still_train(train_config_values, tmp_path):
    long_answer = " ".join(["left right"] * 40)
    records = TEXT_RECORDS[:5] + [("long", None, [("Is it near?", long_answer)])]
    values = dict(train_config_values, train_data=_write_llava(tmp_path / "d.json", records), max_length=30,
                  on_truncated="drop", max_steps=3, per_device_train_batch_size=1)  # fmt: skip
    result = train(build_config(values))
    assert result.global_step == 3


def test_cache_latents_skips_the_clips_training_skips(train_config_values, clip_data, write_config, tmp_path, capsys):
    values = dict(train_config_values, train_data=str(clip_data), max_skip_fraction=0.25, max_steps=2,
                  per_device_train_batch_size=1, latent_cache_dir=str(tmp_path / "cache"))  # fmt: skip
    path = write_config(values)
    assert main(["cache-latents", "--config", path, "--no-progress"]) == 0
    assert "6 visuals" in capsys.readouterr().out
    assert main(["train", "--config", path]) == 0  # every visual it trains on is cached
