"""Prefilled scoring equals one full forward per (prompt, choice) row, the way scoring worked before.

The reference is `theworld.testing.reference.full_forward_scores`: every row a full forward of
prompt + choice with its own image and world inputs. The fast path computes each prompt once and
scores the choices from its KV cache; both must agree to 1e-4 in float32 on prompts of different
lengths, with padding, under every control, and across Gemma 3's sliding-window layers (a tiny
model whose window is shorter than the prompts). Free-form answers decode from the same prefill
and must equal `model.generate` token for token.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from theworld import TheWorld, TheWorldProcessor
from theworld.evaluation.benchmarks import load_jsonl
from theworld.evaluation.controls import control_context
from theworld.evaluation.harness import PREDICTIONS, EvalSettings, evaluate
from theworld.evaluation.loading import load_model
from theworld.evaluation.scoring import encode_prompt, generate_answers, prefill, score_continuations, stop_token_ids
from theworld.testing.inputs import random_image
from theworld.testing.reference import full_forward_scores
from theworld.testing.tiny import TinyGemmaSpec, make_tiny_gemma

# Questions of different lengths (so prompts differ in length) and choices of 1 to 4 tokens.
QUESTIONS = [
    "Which way does the ball move?",
    "Is the red square closer to the camera than the blue circle, or is it farther away from it?",
    "What happens next?",
]
CHOICES = [["left", "right side"], ["yes", "no", "not sure at all"], ["the ball will hit the wall", "nothing"]]


def write_items(folder: Path, n: int = 5, clip_every: int = 0) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        row = {"id": f"i{i}", "question": QUESTIONS[i % 3], "choices": CHOICES[i % 3], "answer": CHOICES[i % 3][0]}
        if clip_every and i % clip_every == clip_every - 1:
            frames = []
            for t in range(5):
                random_image(700 + 10 * i + t, size=40).save(folder / f"c{i}_{t}.png")
                frames.append(f"c{i}_{t}.png")
            row["video"] = frames
        else:
            random_image(300 + i, size=40).save(folder / f"img{i}.png")
            row["image"] = f"img{i}.png"
        rows.append(row)
    path = folder / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return load_jsonl(str(path))


def encoded(model, processor, items) -> list:
    prompts = [encode_prompt(processor, it) for it in items]
    if getattr(model, "world_encoder", None) is not None:
        with torch.no_grad():
            for prompt in prompts:
                prompt.world, prompt.world_key = model.world_encoder(prompt.world), "world_latents"
    return prompts


def choice_rows(processor, items) -> list[tuple[int, list[int]]]:
    return [(p, processor.tokenizer(c, add_special_tokens=False)["input_ids"]) for p, it in enumerate(items) for c in it.choices]


@pytest.fixture(scope="module")
def loaded(world_dir):
    return load_model(world_dir, "none")


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return write_items(tmp_path_factory.mktemp("scoring_items"), n=5, clip_every=3)


def test_items_have_prompts_and_choices_of_different_lengths(loaded, items):
    model, processor = loaded
    prompts = encoded(model, processor, items)
    assert len({len(p) for p in prompts}) >= 3
    assert {len(ids) for _, ids in choice_rows(processor, items)} >= {1, 2}
    assert {p.world.shape[2] for p in prompts} == {1, 2}  # images and 5-frame clips (2 latent frames)


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_prefilled_scores_equal_one_full_forward_per_row(loaded, items, padding_side, batch_size):
    model, processor = loaded
    prompts = encoded(model, processor, items)
    rows = choice_rows(processor, items)
    expected = full_forward_scores(model, prompts, rows, batch_size=1)  # no padding at all
    got = score_continuations(model, prompts, rows, batch_size=batch_size, padding_side=padding_side)
    assert got == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("control", ["none", "zero-world", "shuffled-world", "world-off"])
def test_harness_scores_equal_the_full_forward_reference_under_each_control(world_dir, loaded, items, control, tmp_path):
    model, processor = load_model(world_dir, "world-off") if control == "world-off" else loaded
    image_items = [it for it in items if not isinstance(it.visuals[0], list)]  # shuffled-world: one visual shape
    settings = EvalSettings(control=control, batch_size=16, seed=3)
    metrics = evaluate(image_items, model, processor, tmp_path / "out", settings)
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / PREDICTIONS).read_text().splitlines())}

    prompts = encoded(model, processor, image_items)
    if control == "shuffled-world":
        own = {it.id: p.world for it, p in zip(image_items, prompts)}
        for it, prompt in zip(image_items, prompts):
            assert records[it.id]["world_from"] != it.id
            prompt.world = own[records[it.id]["world_from"]]
    rows = choice_rows(processor, image_items)
    with control_context(model, control):
        expected = full_forward_scores(model, prompts, rows, batch_size=3, padding_side="left")
    got = [records[image_items[p].id]["scores"][image_items[p].choices[k]]
           for p, it in enumerate(image_items) for k in range(len(it.choices))]  # fmt: skip
    assert got == pytest.approx(expected, abs=1e-4)
    assert metrics["world"]["forwards_with_world"] == (0 if control == "world-off" else 1)  # 4 items (10 rows), one prefill


def test_images_and_world_features_are_computed_once_per_item(loaded, items):
    model, processor = loaded
    prompts = encoded(model, processor, items)
    rows = choice_rows(processor, items)
    seen = {"images": 0, "world_items": 0}

    def count(key):
        def hook(_module, args, kwargs, _output):
            seen[key] += (args[0] if args else next(iter(kwargs.values()))).shape[0]  # the batch of images / latents
        return hook

    handles = [model.model.vision_tower.register_forward_hook(count("images"), with_kwargs=True),
               model.world_projector.register_forward_hook(count("world_items"), with_kwargs=True)]  # fmt: skip
    try:
        score_continuations(model, prompts, rows, batch_size=16)
    finally:
        for handle in handles:
            handle.remove()
    assert len(rows) == 12 and seen == {"images": 5, "world_items": 5}


def test_free_form_answers_equal_generate_token_for_token(loaded, items):
    model, processor = loaded
    prompts = encoded(model, processor, items)
    answers = generate_answers(model, processor.tokenizer, prompts, max_new_tokens=6, batch_size=8)
    stops = stop_token_ids(processor.tokenizer)
    for prompt, answer in zip(prompts, answers):
        inputs = {
            "input_ids": prompt.input_ids[None],
            "attention_mask": torch.ones_like(prompt.input_ids)[None],
            "token_type_ids": prompt.token_type_ids[None],
            "pixel_values": prompt.pixel_values,
            "world_latents": prompt.world,
        }
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=6, do_sample=False, eos_token_id=stops, pad_token_id=0)
        new = out[0, len(prompt) :].tolist()
        kept = new[: next((j for j, t in enumerate(new) if t in stops), len(new))]
        assert answer.num_tokens == len(kept)
        assert answer.raw == processor.tokenizer.decode(kept, skip_special_tokens=False)


def test_prefill_keeps_only_the_last_prompt_tokens_logits(loaded, items):
    model, processor = loaded
    prompts = encoded(model, processor, items[:3])
    state = prefill(model, prompts)
    assert state.last_logits.shape == (3, model.config.text_config.vocab_size)
    assert state.attention_mask.sum(1).tolist() == [len(p) for p in prompts]
    assert state.cache.get_seq_length() == max(len(p) for p in prompts)


# ------------------------------------------------------------------------------------------------
# Gemma 3's sliding-window layers: prompts longer than the window


@pytest.fixture(scope="module")
def short_window(tmp_path_factory, tiny_vae_dir, world_settings):
    """A tiny TheWorld whose sliding window (24) is shorter than every prompt (~60 tokens)."""
    gemma = make_tiny_gemma(tmp_path_factory.mktemp("tiny_gemma_window"), TinyGemmaSpec(sliding_window=24))
    model = TheWorld.from_pretrained(gemma, cosmos_model_name=tiny_vae_dir, **world_settings).eval()
    return model, TheWorldProcessor.from_model_config(str(gemma), model.config)


def test_scores_and_answers_across_the_sliding_window(short_window, tmp_path):
    model, processor = short_window
    assert model.config.text_config.layer_types == ["sliding_attention", "full_attention"]
    items = write_items(tmp_path / "data", n=4)
    prompts = encoded(model, processor, items)
    assert min(len(p) for p in prompts) > 2 * model.config.text_config.sliding_window
    rows = choice_rows(processor, items)
    expected = full_forward_scores(model, prompts, rows, batch_size=1)
    assert score_continuations(model, prompts, rows, batch_size=16) == pytest.approx(expected, abs=1e-4)
    # The hybrid cache really cropped: the sliding layer keeps window - 1 keys, the global one all.
    state = prefill(model, prompts)
    sliding, full = state.cache.layers
    assert sliding.keys.shape[2] == model.config.text_config.sliding_window - 1
    assert full.keys.shape[2] == max(len(p) for p in prompts)
    stops = stop_token_ids(processor.tokenizer)
    answers = generate_answers(model, processor.tokenizer, prompts, max_new_tokens=30, batch_size=4)
    for prompt, answer in zip(prompts, answers):
        with torch.no_grad():
            out = model.generate(input_ids=prompt.input_ids[None], token_type_ids=prompt.token_type_ids[None],
                                 pixel_values=prompt.pixel_values, world_latents=prompt.world, max_new_tokens=30,
                                 do_sample=False, eos_token_id=stops, pad_token_id=0)  # fmt: skip
        new = out[0, len(prompt) :].tolist()
        kept = new[: next((j for j, t in enumerate(new) if t in stops), len(new))]
        assert answer.raw == processor.tokenizer.decode(kept, skip_special_tokens=False)
