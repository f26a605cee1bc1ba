"""Controls: each changes exactly what it claims (zero-world zeroes the world features, shuffled
gives every item another item's world, world-off is Gemma 3 to the bit)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import Gemma3ForConditionalGeneration, Gemma3Processor

from theworld.errors import TheWorldUserError
from theworld.evaluation.benchmarks import load_jsonl
from theworld.evaluation.controls import cyclic_derangement, shuffled_donors, visual_signature, zero_world
from theworld.evaluation.harness import PREDICTIONS, EvalSettings, evaluate
from theworld.evaluation.items import EvalItem, to_sample
from theworld.evaluation.loading import load_model
from theworld.evaluation.scoring import encode_prompt, score_continuations
from theworld.testing.inputs import random_image

CHOICES = [["left", "right side"], ["yes", "no", "not sure at all"]]


@pytest.fixture(scope="module")
def loaded(world_dir):
    return load_model(world_dir, "none")


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    folder = tmp_path_factory.mktemp("control_items")
    rows = []
    for i in range(3):
        random_image(200 + i, size=48).save(folder / f"img{i}.png")
        rows.append({"id": f"c{i}", "question": "Which way does the ball move?", "choices": CHOICES[i % 2],
                     "answer": CHOICES[i % 2][0], "image": f"img{i}.png"})  # fmt: skip
    path = folder / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return load_jsonl(str(path))


def read_scores(out: Path) -> dict[str, dict]:
    lines = (out / PREDICTIONS).read_text(encoding="utf-8").splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def rows_for(processor, items) -> list[tuple[int, list[int]]]:
    return [(p, processor.tokenizer(c, add_special_tokens=False)["input_ids"]) for p, it in enumerate(items) for c in it.choices]


# ------------------------------------------------------------------------------------ shuffled


def test_cyclic_derangement_has_no_fixed_points():
    rng = random.Random(0)
    for n in range(2, 12):
        for _ in range(20):
            perm = cyclic_derangement(n, rng)
            assert sorted(perm) == list(range(n)) and all(perm[i] != i for i in range(n))
    assert cyclic_derangement(7, random.Random(3)) == cyclic_derangement(7, random.Random(3))
    with pytest.raises(ValueError):
        cyclic_derangement(1, rng)


def test_shuffled_donors_stay_within_visual_shape():
    def item(i: int, visuals: list) -> EvalItem:
        return EvalItem(id=f"i{i}", question="q", choices=["a", "b"], answer="a", visuals=visuals)

    clip = ["f0.png"] * 5
    items = [item(0, ["a.png"]), item(1, [clip]), item(2, ["b.png"]), item(3, []), item(4, [clip]), item(5, ["c.png"])]
    donors = shuffled_donors(items, seed=0)
    assert donors[3] is None  # no visuals, no world inputs to swap
    for i, d in enumerate(donors):
        if d is not None:
            assert d != i and visual_signature(items[d]) == visual_signature(items[i])
    assert sorted(d for d in donors if d is not None) == [0, 1, 2, 4, 5]  # a permutation
    assert shuffled_donors(items, seed=0) == donors  # seeded: a resumed run gets the same donors
    with pytest.raises(TheWorldUserError, match=r"item 'i2'.*frames per visual \[1, 1\]"):
        shuffled_donors(items[:2] + [item(2, ["b.png", "c.png"])] + [item(6, ["d.png"])], seed=0)


def test_shuffled_world_scores_each_item_with_its_donors_world(loaded, items, tmp_path):
    model, processor = loaded
    evaluate(items, model, processor, tmp_path / "shuffled", EvalSettings(control="shuffled-world", seed=5))
    records = read_scores(tmp_path / "shuffled")
    donors = {r["id"]: r["world_from"] for r in records.values()}
    assert all(donor != item_id for item_id, donor in donors.items())
    assert sorted(donors.values()) == sorted(donors)  # a permutation of the items

    # Independently: each recipient's own prompt, with the donor's world latents.
    index = {it.id: i for i, it in enumerate(items)}
    prompts = [encode_prompt(processor, it) for it in items]
    with torch.no_grad():
        latents = model.world_encoder(torch.cat([p.world for p in prompts]))  # one per item, in order
    rows = rows_for(processor, items)

    def scores_with_world_of(source: list[int]) -> list[float]:
        for prompt, j in zip(prompts, source):
            prompt.world, prompt.world_key = latents[j : j + 1], "world_latents"
        return score_continuations(model, prompts, rows, batch_size=len(rows))

    expected = scores_with_world_of([index[donors[it.id]] for it in items])
    got = [records[items[p].id]["scores"][items[p].choices[k]] for p, k in _row_choice_index(items)]
    assert got == pytest.approx(expected, abs=1e-4)
    own = scores_with_world_of(list(range(len(items))))
    assert max(abs(a - b) for a, b in zip(own, expected)) > 1e-4  # the world really changed


def _row_choice_index(items) -> list[tuple[int, int]]:
    return [(p, k) for p, it in enumerate(items) for k in range(len(it.choices))]


# ------------------------------------------------------------------------------------ zero-world


def test_zero_world_equals_zero_world_embeddings_and_is_removed_after(loaded, items):
    model, processor = loaded
    inputs = processor.apply_chat_template(
        to_sample(items[0]).messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    ids = inputs["input_ids"]
    world = ids == model.config.world_token_id
    assert int(world.sum()) == 16
    with torch.no_grad():
        normal = model(**inputs).logits
        with zero_world(model):
            features = model.get_world_features(world_pixel_values=inputs["world_pixel_values"])
            zeroed = model(**inputs).logits
        after = model(**inputs).logits
        # Independently: Gemma 3's forward on embeddings whose world rows are zero vectors,
        # with the world block marked bidirectional as the world path marks it.
        embeds = model.get_input_embeddings()(ids).masked_fill(world[..., None], 0.0)
        expected = Gemma3ForConditionalGeneration.forward(
            model,
            inputs_embeds=embeds,
            pixel_values=inputs["pixel_values"],
            attention_mask=inputs["attention_mask"],
            token_type_ids=torch.maximum(inputs["token_type_ids"], world.long()),
        ).logits
    assert features.shape == (1, 16, model.config.text_config.hidden_size) and not features.any()
    assert torch.allclose(zeroed, expected, atol=1e-5), (zeroed - expected).abs().max()
    assert (normal - zeroed).abs().max() > 1e-3  # the world features mattered
    assert torch.equal(after, normal)  # the hook is gone


def test_zero_world_run_differs_from_normal_and_passes_the_world_check(loaded, items, tmp_path):
    model, processor = loaded
    normal = evaluate(items[:2], model, processor, tmp_path / "none", EvalSettings())
    zeroed = evaluate(items[:2], model, processor, tmp_path / "zero", EvalSettings(control="zero-world"))
    assert zeroed["world"]["tokens_seen"] == normal["world"]["tokens_seen"] == (2 + 3) * 16
    a, b = read_scores(tmp_path / "none"), read_scores(tmp_path / "zero")
    diffs = [abs(a[i]["scores"][c] - b[i]["scores"][c]) for i in a for c in a[i]["scores"]]
    assert max(diffs) > 1e-4
    assert not model.world_projector._forward_hooks  # nothing left behind


# ------------------------------------------------------------------------------------ world-off


def test_world_off_scores_equal_plain_gemma_exactly(world_dir, tiny_gemma_dir, items, tmp_path):
    model, processor = load_model(world_dir, "world-off")
    assert model.world_projector is None and processor.enable_world is False
    metrics = evaluate(items, model, processor, tmp_path / "off", EvalSettings(control="world-off", batch_size=8))
    assert metrics["world_tokens_seen"] == 0 and metrics["world"]["enabled"] is False
    records = read_scores(tmp_path / "off")
    assert all(r["world_tokens"] == 0 for r in records.values())

    gemma = Gemma3ForConditionalGeneration.from_pretrained(tiny_gemma_dir).eval().requires_grad_(False)
    gemma_processor = Gemma3Processor.from_pretrained(tiny_gemma_dir)
    prompts = [encode_prompt(gemma_processor, it) for it in items]
    rows = rows_for(gemma_processor, items)
    assert len(rows) <= 8  # the harness ran these rows as one batch too
    expected = score_continuations(gemma, prompts, rows, batch_size=8)
    got = [records[items[p].id]["scores"][items[p].choices[k]] for p, k in _row_choice_index(items)]
    assert got == expected  # exactly, not approximately


def test_control_and_model_must_match(world_dir, loaded, items, tmp_path):
    model, processor = loaded
    with pytest.raises(TheWorldUserError, match="world-off.*enable_world=False"):
        evaluate(items, model, processor, tmp_path / "a", EvalSettings(control="world-off"))
    off_model, off_processor = load_model(world_dir, "world-off")
    with pytest.raises(TheWorldUserError, match="needs a world-enabled model"):
        evaluate(items, off_model, off_processor, tmp_path / "b", EvalSettings(control="zero-world"))
    with pytest.raises(TheWorldUserError, match="unknown control 'no-world'"):
        EvalSettings(control="no-world")
