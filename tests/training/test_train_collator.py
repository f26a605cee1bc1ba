"""Collator: one processor pass per sample, labels exactly on the answers, blocks never cut."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError
from theworld.model.modeling import TheWorld
from theworld.processing.processor import TheWorldProcessor
from theworld.training.collator import TheWorldCollator
from theworld.training.loss import IGNORE_INDEX


@pytest.fixture(scope="module")
def model(tiny_gemma_dir, tiny_vae_dir, world_settings):
    return TheWorld.from_pretrained(tiny_gemma_dir, cosmos_model_name=tiny_vae_dir, dtype=torch.float32, **world_settings)


@pytest.fixture(scope="module")
def processor(tiny_gemma_dir, model):
    return TheWorldProcessor.from_model_config(tiny_gemma_dir, model.config)


def _sample(sample_id: str, turns, image=None, system: str | None = None) -> Sample:
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    for k, (question, answer) in enumerate(turns):
        content = [{"type": "image", "image": image}] if image is not None and k == 0 else []
        content.append({"type": "text", "text": question})
        messages += [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
    return Sample(id=sample_id, messages=messages)


IMAGE = Image.new("RGB", (36, 30), (200, 20, 20))


def _supervised_spans(labels: torch.Tensor) -> list[list[int]]:
    spans, current = [], []
    for value in labels.tolist():
        if value != IGNORE_INDEX:
            current.append(value)
        elif current:
            spans.append(current)
            current = []
    return spans + ([current] if current else [])


def test_labels_are_exactly_the_answers_plus_end_of_turn(processor, model):
    collator = TheWorldCollator(processor)
    sample = _sample("s", [("What color is the ball?", "The ball is red."), ("Is it near?", "yes")], IMAGE, system="Be brief.")
    batch = collator([sample])
    spans = _supervised_spans(batch["labels"][0])
    decoded = [processor.tokenizer.decode(span, skip_special_tokens=False) for span in spans]
    assert decoded == ["The ball is red.<end_of_turn>", "yes<end_of_turn>"]
    # the labels are the input tokens themselves (the loss shifts), nowhere else
    supervised = batch["labels"][0] != IGNORE_INDEX
    assert torch.equal(batch["labels"][0][supervised], batch["input_ids"][0][supervised])
    # placeholders, markers, prompt: all -100
    ids = batch["input_ids"][0]
    for token_id in (model.config.image_token_id, model.config.world_token_id, model.config.boi_token_index,
                     model.config.start_of_world_token_id, model.config.end_of_world_token_id):  # fmt: skip
        assert (ids == token_id).any()
        assert (batch["labels"][0][ids == token_id] == IGNORE_INDEX).all()
    assert (batch["token_type_ids"][0] == (ids == model.config.image_token_id).long()).all()
    assert batch["world_pixel_values"].shape == (1, 3, 1, 64, 64)


def test_header_found_by_decoding_when_token_pattern_differs(processor):
    fast = TheWorldCollator(processor)
    slow = TheWorldCollator(processor)
    slow.header_ids = [-1]  # force the decode path
    sample = _sample("s", [("Which way?", "left"), ("Sure?", "yes")])
    assert torch.equal(fast([sample])["labels"], slow([sample])["labels"])


def test_batch_is_right_padded_and_mixes_samples_with_and_without_images(processor, model):
    collator = TheWorldCollator(processor)
    samples = [
        _sample("img", [("What color is the ball?", "red")], IMAGE),
        _sample("text", [("Describe this scene in words please.", "A red square near a blue circle.")]),
        _sample("img2", [("Which way?", "left")], IMAGE),
    ]
    batch = collator(samples)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "pixel_values", "world_pixel_values"}
    lengths = batch["attention_mask"].sum(1)
    for row, n in enumerate(lengths.tolist()):
        assert (batch["attention_mask"][row, :n] == 1).all() and (batch["attention_mask"][row, n:] == 0).all()
        assert (batch["input_ids"][row, n:] == processor.tokenizer.pad_token_id).all()
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
    assert batch["pixel_values"].shape[0] == 2 and batch["world_pixel_values"].shape[0] == 2
    assert int((batch["input_ids"] == model.config.world_token_id).sum()) == 2 * model.config.world_tokens_per_frame
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()
    text_only = collator([samples[1]])
    assert "pixel_values" not in text_only and "world_pixel_values" not in text_only and "token_type_ids" in text_only


class FakeLatentCache:
    def __init__(self) -> None:
        self.calls = []

    def latents_for(self, visual):
        self.calls.append(visual)
        return torch.full((16, 1, 8, 8), 0.5)


def test_latent_cache_replaces_world_pixels(processor, model):
    cache = FakeLatentCache()
    collator = TheWorldCollator(processor, latent_cache=cache)
    batch = collator([_sample("a", [("Which way?", "left")], IMAGE), _sample("b", [("Why?", "no")])])
    assert "world_pixel_values" not in batch and batch["world_latents"].shape == (1, 16, 1, 8, 8)
    assert cache.calls == [IMAGE]
    model.eval()
    with torch.no_grad():
        model(**{k: v for k, v in batch.items() if k != "labels"})


def test_with_a_latent_cache_the_world_path_does_no_pixel_work(processor, model, tmp_path, monkeypatch):
    """Cached latents: world pixels are never computed, and of a clip only the frame Gemma sees is decoded;
    the tokens and Gemma's pixels are those of the run without a cache."""
    import theworld.processing.processor as processing

    IMAGE.save(tmp_path / "last.png")
    Image.new("RGB", (36, 30), (20, 20, 200)).save(tmp_path / "other.png")

    def clip_sample(frames):
        content = [{"type": "video", "video": frames}, {"type": "text", "text": "Which way?"}]
        return Sample(id="clip", messages=[{"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "text", "text": "left"}]}])

    real = TheWorldCollator(processor)([clip_sample([str(tmp_path / "other.png")] * 4 + [str(tmp_path / "last.png")])])

    def refuse(*args, **kwargs):
        raise AssertionError("world pixels were computed")

    monkeypatch.setattr(processing, "world_pixels", refuse)
    missing = [str(tmp_path / f"never-decoded-{i}.png") for i in range(4)]  # would fail to open if read
    cache = FakeLatentCache()
    batch = TheWorldCollator(processor, latent_cache=cache)([clip_sample(missing + [str(tmp_path / "last.png")])])
    assert "world_pixel_values" not in batch and batch["world_latents"].shape[0] == 1
    assert torch.equal(batch["input_ids"], real["input_ids"]) and torch.equal(batch["pixel_values"], real["pixel_values"])
    assert int((batch["input_ids"] == processor.world_token_id).sum()) == 2 * processor.world_tokens_per_frame  # 5 frames
    assert [list(c) for c in cache.calls] == [missing + [str(tmp_path / "last.png")]]


def test_gemma_control_processor_has_no_world_inputs(tiny_gemma_dir, model):
    from copy import deepcopy

    config = deepcopy(model.config)
    config.enable_world = False
    gemma_processor = TheWorldProcessor.from_model_config(tiny_gemma_dir, config)
    batch = TheWorldCollator(gemma_processor, latent_cache=FakeLatentCache())([_sample("a", [("Which way?", "left")], IMAGE)])
    assert "world_pixel_values" not in batch and "world_latents" not in batch and "pixel_values" in batch
    assert not (batch["input_ids"] == model.config.world_token_id).any()


def test_truncation_never_cuts_an_image_or_world_block(processor, caplog):
    sample = _sample("long-image", [("What color is the ball?", "The ball is red.")], IMAGE)
    full = TheWorldCollator(processor).encode(sample)
    world_end = int((full.input_ids == processor.tokenizer.convert_tokens_to_ids(processor.end_of_world_token)).nonzero()[0])

    dropping = TheWorldCollator(processor, max_length=world_end - 3, on_truncated="drop")
    with caplog.at_level(logging.WARNING):
        assert dropping.encode(sample) is None
        batch = dropping([sample, _sample("short", [("Hi?", "yes")])])
    assert "long-image" in caplog.text and dropping.dropped == ["long-image"]
    assert batch["input_ids"].shape[0] == 1 and "pixel_values" not in batch

    with pytest.raises(TheWorldUserError, match="sample long-image: .* would cut the image/world block"):
        TheWorldCollator(processor, max_length=world_end - 3, on_truncated="error")([sample])

    # a cut after every block keeps the sample, truncated, with its remaining answer tokens
    cut = len(full.input_ids) - 3
    kept = TheWorldCollator(processor, max_length=cut).encode(sample)
    assert len(kept.input_ids) == cut and torch.equal(kept.labels, full.labels[:cut]) and kept.num_supervised > 0

    # every sample dropped: a harmless batch with nothing supervised
    empty = dropping([sample])
    assert (empty["labels"] == IGNORE_INDEX).all()


def test_clip_sample_gets_one_world_block_for_all_its_frames(processor, model):
    frames = [Image.new("RGB", (36, 30), (20 * k, 40, 200)) for k in range(5)]
    sample = Sample(
        id="clip",
        messages=[
            {"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "Which way?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "left"}]},
        ],
    )
    batch = TheWorldCollator(processor)([sample])
    assert batch["world_pixel_values"].shape == (1, 3, 5, 64, 64) and batch["pixel_values"].shape[0] == 1
    assert int((batch["input_ids"] == model.config.world_token_id).sum()) == 2 * model.config.world_tokens_per_frame
    spans = _supervised_spans(batch["labels"][0])
    assert [processor.tokenizer.decode(s, skip_special_tokens=False) for s in spans] == ["left<end_of_turn>"]
