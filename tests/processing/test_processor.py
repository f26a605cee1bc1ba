"""The processor: world blocks before image blocks, [-1, 1] world pixels, Gemma-exact when off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Gemma3Processor

from theworld import TheWorldProcessor
from theworld.errors import TheWorldUserError
from theworld.processing.processor import Clip
from theworld.testing.inputs import clip_chat, image_chat, random_image


@pytest.fixture(scope="module")
def processor(tiny_gemma_dir, world_settings):
    return TheWorldProcessor.from_pretrained(tiny_gemma_dir, **world_settings)


def test_world_block_precedes_image_block(processor):
    inputs = processor.apply_chat_template(image_chat(0), tokenize=True, return_dict=True, return_tensors="pt")
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    world = processor.start_of_world_token + processor.world_token * 16 + processor.end_of_world_token
    assert world + "\n\n<start_of_image>" in text
    assert text.index(world) < text.index("What happens next?")
    assert processor.start_of_world_token == "<unused0>"  # Gemma's reserved tokens, no new vocabulary
    assert len(processor.tokenizer) == len(Gemma3Processor.from_pretrained(processor.tokenizer.name_or_path).tokenizer)
    pixels = inputs["world_pixel_values"]
    assert pixels.shape == (1, 3, 1, 64, 64) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1 and pixels.min() < -0.9 and pixels.max() > 0.9


def test_world_pixels_scale(processor):
    white = processor.world_pixels(np.full((10, 10, 3), 255, np.uint8))
    black = processor.world_pixels(np.zeros((10, 10, 3), np.uint8))
    assert white.shape == (3, 1, 64, 64) and np.all(white == 1.0) and np.all(black == -1.0)


def test_clip_world_sees_all_frames_gemma_sees_last(processor):
    chat = clip_chat(1, frames=5)
    inputs = processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_tensors="pt")
    assert inputs["world_pixel_values"].shape == (1, 3, 5, 64, 64)
    assert int((inputs["input_ids"] == processor.world_token_id).sum()) == 2 * 16  # 5 frames -> 2 latent frames
    last_frame = chat[0]["content"][0]["video"][-1]
    expected = processor.image_processor(images=[last_frame], return_tensors="pt")["pixel_values"]
    assert torch.equal(inputs["pixel_values"], expected)


def test_world_off_is_exactly_gemma_processor(tiny_gemma_dir, world_settings):
    ours = TheWorldProcessor.from_pretrained(tiny_gemma_dir, enable_world=False, **world_settings)
    gemma = Gemma3Processor.from_pretrained(tiny_gemma_dir)
    chats = [image_chat(2), image_chat(3, question="Describe this scene in more words")]
    a = ours.apply_chat_template(chats, tokenize=True, return_dict=True, return_tensors="pt", padding=True)
    b = gemma.apply_chat_template(chats, tokenize=True, return_dict=True, return_tensors="pt", padding=True)
    assert set(a) == set(b) and "world_pixel_values" not in a
    for key in b:
        assert torch.equal(a[key], b[key]), key


def test_batched_call_needs_per_sample_lists(processor):
    out = processor(text=["<start_of_image> a", "<start_of_image> b"],
                    images=[[random_image(0)], [random_image(1)]], return_tensors="pt", padding=True)
    assert out["world_pixel_values"].shape == (2, 3, 1, 64, 64)
    with pytest.raises(ValueError, match="2 texts need a list of 2"):
        processor(text=["<start_of_image> a", "<start_of_image> b"], images=[random_image(0)])


def test_save_load_keeps_world_settings(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    again = TheWorldProcessor.from_pretrained(tmp_path)
    assert (again.world_image_size, again.world_tokens_per_frame, again.world_num_frames) == (64, 16, 9)
    assert again.world_clip_frame == "last" and again.enable_world


def test_apply_chat_template_leaves_the_callers_messages_untouched(processor):
    chat = clip_chat(4, frames=5)
    content_before = list(chat[0]["content"])
    processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_tensors="pt")
    assert chat[0]["content"] == content_before and chat[0]["content"][0]["type"] == "video"


def _chat(kind: str, source) -> list[dict]:
    item = {"type": "image", "image": source} if kind == "image" else {"type": "video", "video": source}
    return [{"role": "user", "content": [item, {"type": "text", "text": "What happens next?"}]}]


@pytest.fixture
def image_files(tmp_path):
    good = tmp_path / "good.png"
    random_image(0, 48).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are notes, not pixels")
    return {"good": str(good), "truncated": str(truncated), "not_an_image": str(not_an_image), "dir": tmp_path}


@pytest.mark.parametrize("enable_world", [True, False])
@pytest.mark.parametrize("kind", ["image", "video"])
def test_unreadable_image_files_are_named(tiny_gemma_dir, world_settings, image_files, enable_world, kind):
    processor = TheWorldProcessor.from_pretrained(tiny_gemma_dir, enable_world=enable_world, **world_settings)
    missing = str(image_files["dir"] / "missing.png")
    for name, problem in (("truncated", "cannot be read"), ("not_an_image", "cannot be read"), ("missing", "not found")):
        path = missing if name == "missing" else image_files[name]
        source = path if kind == "image" else [image_files["good"]] * 4 + [path]
        with pytest.raises(OSError) as info:  # an OSError (as PIL's own), and a user error the CLI prints
            processor.apply_chat_template(_chat(kind, source), tokenize=True, return_dict=True, return_tensors="pt")
        assert isinstance(info.value, TheWorldUserError)
        assert path in str(info.value) and problem in str(info.value), str(info.value)
    with pytest.raises(OSError, match="missing.png"):
        processor(text="<start_of_image> a", images=[missing])


def test_image_files_still_load_as_transformers_loads_them(processor, image_files):
    from transformers.image_utils import load_image

    by_path = processor.apply_chat_template(_chat("image", image_files["good"]), tokenize=True, return_dict=True, return_tensors="pt")
    by_pil = processor.apply_chat_template(
        _chat("image", load_image(image_files["good"])), tokenize=True, return_dict=True, return_tensors="pt"
    )
    for key in by_pil:
        assert torch.equal(by_path[key], by_pil[key]), key
def test_mixed_batch_pads_time_and_counts_latent_frames(processor):
    """An image and clips of 5 and 9 frames in one batch: each world block keeps its own length."""
    clip5, clip9 = Clip(random_image(i) for i in range(5)), Clip(random_image(10 + i) for i in range(9))
    out = processor(text=["<start_of_image> a", "<start_of_image> b <start_of_image> c"],
                    images=[[clip5], [random_image(0), clip9]], return_tensors="pt", padding=True)  # fmt: skip
    assert out["world_latent_frames"].tolist() == [2, 1, 3] and out["world_latent_frames"].dtype == torch.int64
    pixels = out["world_pixel_values"]
    assert pixels.shape == (3, 3, 9, 64, 64)
    assert torch.equal(pixels[0, :, :5], torch.from_numpy(processor.world_pixels(clip5)))
    assert torch.equal(pixels[1, :, :1], torch.from_numpy(processor.world_pixels(random_image(0))))
    assert pixels[0, :, 5:].abs().max() == 0 and pixels[1, :, 1:].abs().max() == 0  # zero padding only
    world = (out["input_ids"] == processor.world_token_id).sum(1).tolist()
    assert world == [2 * 16, (1 + 3) * 16]
    same = processor(text=["<start_of_image> a", "<start_of_image> b"], images=[[clip5], [clip5]], return_tensors="pt", padding=True)
    assert "world_latent_frames" not in same


def test_video_file_item_is_decoded_to_world_num_frames(processor, tmp_path):
    from theworld.testing.inputs import moving_frames, write_video

    frames = moving_frames(21, size=48)
    path = write_video(tmp_path / "clip.webm", frames, fps=10)
    chat = [{"role": "user", "content": [{"type": "video", "video": path}, {"type": "text", "text": "Which way?"}]}]
    out = processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_tensors="pt")
    assert out["world_pixel_values"].shape == (1, 3, 9, 64, 64)  # world_num_frames=9, evenly over 21 frames
    expected = processor.world_pixels(Clip(frames[i] for i in (0, 2, 5, 7, 10, 12, 15, 17, 20)))
    assert np.abs(out["world_pixel_values"][0].numpy() - expected).mean() < 0.05  # lossy codec
    at_fps = [{"role": "user", "content": [{"type": "video", "video": path, "fps": 5}, {"type": "text", "text": "?"}]}]
    assert processor.apply_chat_template(at_fps, tokenize=True, return_dict=True)["world_pixel_values"].shape[2] == 9


def test_world_geometry_is_the_configs(processor):
    """The processor asks the geometry the model config computes: tokens per image and per clip."""
    from theworld.model.configuration import WorldGeometry

    geometry = processor.world_geometry
    assert isinstance(geometry, WorldGeometry)
    assert processor.world_tokens_for(random_image(0)) == geometry.tokens_for_frames(1) == geometry.tokens_per_frame
    assert processor.world_tokens_for(Clip([random_image(0)] * 5)) == geometry.tokens_for_frames(5) == 2 * geometry.tokens_per_frame
    assert geometry.frames_problem(4) is not None and geometry.frames_problem(5) is None
