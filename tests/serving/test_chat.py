"""`theworld chat`: commands, multi-turn history, streamed answers, /save, through the real CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from theworld.serving.chat import ChatSession
from theworld.serving.engine import Engine, SamplingParams
from theworld.serving.loading import load_model_and_processor
from theworld.testing.inputs import moving_frames, random_image, write_video

from .conftest import REPO


@pytest.fixture(scope="module")
def loaded(served_model_dir):
    return load_model_and_processor(str(served_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-files")
    random_image(11, 40).save(root / "photo.png")
    write_video(root / "clip.mp4", moving_frames(17, size=32, seed=2), fps=10)
    return root


def test_session_history_world_switch_save_and_reset(loaded, files, tmp_path):
    model, processor = loaded
    engine = Engine(model, processor, max_batch_size=1, batch_wait_s=0.0).start()
    out = io.StringIO()
    session = ChatSession(engine, SamplingParams(max_new_tokens=6), out)
    try:
        session.handle(f"/image {files / 'photo.png'}")
        first = session.ask("What happens next?")
        session.handle(f"/video {files / 'clip.mp4'}")
        assert "9 frames at 0.00, 0.20" in out.getvalue()  # 17 frames, evenly: every second one
        second = session.ask("Which way is the ball moving?")
        session.handle("/world off")
        third = session.ask("And now?")
        assert first and second and third and first in out.getvalue()
        # Multi-turn: the second answer is the model's answer to the whole history, world on.
        expected = processor.apply_chat_template(session.history[:3], tokenize=True, return_dict=True,
                                                 return_tensors="pt", add_generation_prompt=True)  # fmt: skip
        generated = model.generate(**expected, max_new_tokens=6, do_sample=False, eos_token_id=sorted(engine.eos_ids))
        assert processor.decode(generated[0, expected["input_ids"].shape[1] :], skip_special_tokens=True) == second
        session.handle(f"/save {tmp_path / 'chat.json'}")
        saved = json.loads((tmp_path / "chat.json").read_text())
        assert [m["role"] for m in saved] == ["user", "assistant"] * 3
        assert saved[0]["content"][0] == {"type": "image", "image": str(files / "photo.png")}
        assert saved[2]["content"][0] == {"type": "video", "video": str(files / "clip.mp4")}
        assert saved[5]["content"] == [{"type": "text", "text": third}]
        # The saved file is a chat the processor reads back as it is (paths instead of images).
        again = processor.apply_chat_template(saved[:3], tokenize=True, return_dict=True, return_tensors="pt",
                                              add_generation_prompt=True)  # fmt: skip
        assert again["input_ids"].equal(expected["input_ids"])
        session.handle("/reset")
        assert session.history == [] and session.pending == []
        session.handle("/image nowhere.png")
        session.handle("/world maybe")
        assert "error: image not found: nowhere.png" in out.getvalue() and "error: /world takes on or off" in out.getvalue()
        assert session.handle("/quit") is False
    finally:
        engine.stop()


def test_chat_command_streams_answers_from_stdin(served_model_dir, files, tmp_path):
    script = "\n".join([f"/image {files / 'photo.png'}", "What happens next?", "/world off", "And now?",
                        f"/save {tmp_path / 'saved.json'}", "/quit", ""])  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-m", "theworld", "chat", str(served_model_dir), "--max-new-tokens", "5"],
                            input=script, capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(image attached" in result.stdout and "(world off)" in result.stdout
    saved = json.loads((tmp_path / "saved.json").read_text())
    assert [m["role"] for m in saved] == ["user", "assistant", "user", "assistant"]
    for answer in (saved[1], saved[3]):
        assert answer["content"][0]["text"] and answer["content"][0]["text"] in result.stdout
