"""The model-running harness: choice log-likelihoods, batching, free-form scoring, the world
honesty check, resuming, and output files that `theworld compare` accepts."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from theworld import TheWorldProcessor
from theworld.errors import TheWorldUserError
from theworld.evaluation.benchmarks import load_jsonl
from theworld.evaluation.compare import load_run
from theworld.evaluation.harness import (
    METRICS,
    PREDICTIONS,
    UNSCORED,
    EvalSettings,
    WorldAudit,
    WorldInputsMissingError,
    count_world_usage,
    evaluate,
)
from theworld.evaluation.items import EvalItem, to_sample
from theworld.evaluation.judge import Verdict
from theworld.evaluation.loading import load_model
from theworld.evaluation.scoring import encode_prompt, score_continuations
from theworld.testing.inputs import random_image

QUESTIONS = ["Which way does the ball move?", "Is the red square closer to the camera than the blue circle?"]
CHOICES = [["left", "right side"], ["yes", "no", "not sure at all"]]


@pytest.fixture(scope="module")
def loaded(world_dir):
    return load_model(world_dir, "none")


def write_items(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        name = f"img{i}.png"
        random_image(100 + i).save(folder / name)
        row.setdefault("image", name)
    path = folder / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def choice_rows(n: int) -> list[dict]:
    return [
        {"id": f"c{i}", "question": QUESTIONS[i % 2], "choices": CHOICES[i % 2], "answer": CHOICES[i % 2][i % 2],
         "category": f"cat{i % 2}"}
        for i in range(n)
    ]  # fmt: skip


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_choice_loglik_equals_manual_per_choice_computation(loaded, tmp_path):
    model, processor = loaded
    items = load_jsonl(str(write_items(tmp_path / "data", choice_rows(2))))[1:]  # 3 choices, 3 lengths
    evaluate(items, model, processor, tmp_path / "out", EvalSettings(batch_size=8))
    records = {r["id"]: r for r in read_jsonl(tmp_path / "out" / PREDICTIONS)}
    for item in items:
        # Manual: the model's own pixel path (world_pixel_values, not the harness's cached latents),
        # one choice at a time, no padding.
        inputs = processor.apply_chat_template(
            to_sample(item).messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        n_prompt = inputs["input_ids"].shape[1]
        for choice in item.choices:
            cont = torch.tensor([processor.tokenizer(choice, add_special_tokens=False)["input_ids"]])
            ids = torch.cat([inputs["input_ids"], cont], 1)
            with torch.no_grad():
                logits = model(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    token_type_ids=torch.cat([inputs["token_type_ids"], torch.zeros_like(cont)], 1),
                    pixel_values=inputs["pixel_values"],
                    world_pixel_values=inputs["world_pixel_values"],
                ).logits[0]
            logprobs = logits[n_prompt - 1 : -1].float().log_softmax(-1)
            manual = float(logprobs.gather(-1, cont[0][:, None]).sum())
            assert records[item.id]["scores"][choice] == pytest.approx(manual, abs=1e-4)
        best = max(item.choices, key=lambda c: records[item.id]["scores"][c])
        assert records[item.id]["prediction"] == best
        assert records[item.id]["correct"] == (best == item.answer)
        assert records[item.id]["world_tokens"] == 16


def test_batching_and_padding_do_not_change_scores(loaded, tmp_path):
    model, processor = loaded
    items = load_jsonl(str(write_items(tmp_path / "data", choice_rows(3))))
    prompts = [encode_prompt(processor, item) for item in items]
    assert len({len(p) for p in prompts}) > 1  # prompts of different lengths
    with torch.no_grad():
        for prompt in prompts:
            prompt.world, prompt.world_key = model.world_encoder(prompt.world), "world_latents"
    rows = [(p, processor.tokenizer(c, add_special_tokens=False)["input_ids"]) for p, it in enumerate(items) for c in it.choices]
    assert len({len(ids) for _, ids in rows}) > 1  # choices of different token lengths
    alone = score_continuations(model, prompts, rows, batch_size=1)
    for side in ("left", "right"):
        batched = score_continuations(model, prompts, rows, batch_size=len(rows), padding_side=side)
        assert batched == pytest.approx(alone, abs=1e-4), side
    odd = score_continuations(model, prompts, rows, batch_size=3, padding_side="left")  # items straddle batches
    assert odd == pytest.approx(alone, abs=1e-4)


def test_world_model_with_world_free_processor_fails_instead_of_scoring(loaded, world_dir, tmp_path):
    model, _ = loaded
    no_world = TheWorldProcessor.from_pretrained(world_dir, enable_world=False)
    items = load_jsonl(str(write_items(tmp_path / "data", choice_rows(2))))
    with count_world_usage(model) as usage, pytest.raises(WorldInputsMissingError, match="holds 0 world tokens"):
        evaluate(items, model, no_world, tmp_path / "out", EvalSettings())
    assert usage.world_forward_count == 0
    assert not (tmp_path / "out" / METRICS).exists()
    assert not (tmp_path / "out" / PREDICTIONS).exists() or not read_jsonl(tmp_path / "out" / PREDICTIONS)


def test_forwards_the_model_did_not_count_leave_no_predictions(loaded, tmp_path, monkeypatch):
    """If the world path was skipped inside forward (the harness's hook saw nothing), the batch's
    predictions are never written and the run stops."""
    model, processor = loaded

    def unseen_world_features(world_pixel_values=None, world_latents=None, world_latent_frames=None):
        latents = world_latents if world_latents is not None else model.world_encoder(world_pixel_values)
        return model.world_projector.forward(latents)  # `forward`, not the call: no hook fires

    monkeypatch.setattr(model, "get_world_features", unseen_world_features)
    items = load_jsonl(str(write_items(tmp_path / "data", choice_rows(2))))
    with pytest.raises(WorldInputsMissingError, match="world_forward_count grew by 0, expected 1"):
        evaluate(items, model, processor, tmp_path / "out", EvalSettings())
    assert read_jsonl(tmp_path / "out" / PREDICTIONS) == []
    assert not (tmp_path / "out" / METRICS).exists()


def test_world_audit_needs_the_models_counters_to_grow():
    fake = SimpleNamespace(world_forward_count=5, world_token_count=80)
    audit = WorldAudit(fake, world_run=True)
    audit.require(16)
    audit.feed.add(16)  # the harness fed a forward, but the model never counted it
    with pytest.raises(WorldInputsMissingError, match="world_token_count grew by 0, expected 16"):
        audit.verify()
    fake.world_forward_count, fake.world_token_count = 6, 96
    audit.verify()
    audit.require(16)  # an item needing world tokens that no forward carried
    with pytest.raises(WorldInputsMissingError, match="need 32 world tokens but 16 were fed"):
        audit.verify()
    off = WorldAudit(fake, world_run=False)
    fake.world_token_count += 16
    with pytest.raises(WorldInputsMissingError, match="world-off run"):
        off.verify()


def test_resume_skips_finished_items_and_appends(loaded, tmp_path):
    model, processor = loaded
    data = write_items(tmp_path / "data", choice_rows(4))
    out = tmp_path / "out"
    evaluate(load_jsonl(str(data), limit=2), model, processor, out, info={"model": "tiny"})
    first = (out / PREDICTIONS).read_text(encoding="utf-8")
    # A crash mid-write leaves half a line: it is dropped and that item is run again.
    (out / PREDICTIONS).write_text(first + '{"id": "c2", "predic', encoding="utf-8")
    with count_world_usage(model) as usage:
        metrics = evaluate(load_jsonl(str(data)), model, processor, out, info={"model": "tiny"})
    text = (out / PREDICTIONS).read_text(encoding="utf-8")
    assert text.startswith(first)
    assert [r["id"] for r in read_jsonl(out / PREDICTIONS)] == ["c0", "c1", "c2", "c3"]
    assert metrics["items_run"] == 2 and metrics["items_resumed"] == 2 and metrics["n"] == 4
    assert usage.world_forward_count == metrics["world"]["forwards_with_world"] == 1
    assert metrics["world_tokens_seen"] == (2 + 3) * 16  # c2 (2 choices) and c3 (3 choices), 16 world tokens each
    again = evaluate(load_jsonl(str(data)), model, processor, out, info={"model": "tiny"})
    assert again["items_run"] == 0 and again["accuracy"] == metrics["accuracy"]
    with pytest.raises(TheWorldUserError, match="different evaluation run"):
        evaluate(load_jsonl(str(data)), model, processor, out, EvalSettings(control="zero-world"), info={"model": "tiny"})
    with pytest.raises(TheWorldUserError, match="not in this evaluation"):
        evaluate(load_jsonl(str(data), limit=1), model, processor, out, info={"model": "tiny"})


def test_resume_after_a_last_line_without_its_newline_appends_cleanly(loaded, tmp_path):
    """A complete last record that lost its newline used to get the next record glued on (exit 2 and
    every later resume failing). It is kept and terminated before anything is appended."""
    model, processor = loaded
    data = write_items(tmp_path / "data", choice_rows(3))
    out = tmp_path / "out"
    evaluate(load_jsonl(str(data), limit=2), model, processor, out, info={"model": "tiny"})
    whole = (out / PREDICTIONS).read_text(encoding="utf-8")
    (out / PREDICTIONS).write_text(whole.rstrip("\n"), encoding="utf-8")  # the last newline never reached the disk
    metrics = evaluate(load_jsonl(str(data)), model, processor, out, info={"model": "tiny"})
    assert metrics["items_resumed"] == 2 and metrics["items_run"] == 1 and metrics["n"] == 3
    text = (out / PREDICTIONS).read_text(encoding="utf-8")
    assert text.startswith(whole) and text.endswith("\n")
    assert [r["id"] for r in read_jsonl(out / PREDICTIONS)] == ["c0", "c1", "c2"]
    again = evaluate(load_jsonl(str(data)), model, processor, out, info={"model": "tiny"})  # and it stays resumable
    assert again["items_run"] == 0 and again["n"] == 3


class FakeJudge:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def judge(self, question: str, reference: str, prediction: str) -> Verdict:
        self.calls.append((question, reference, prediction))
        return Verdict(correct=True, reason="same fact", raw="{}")


def test_free_form_items_numeric_clock_judged_and_unjudged(loaded, tmp_path):
    model, processor = loaded
    rows = [
        {"id": "dist", "question": "How far apart are the ball and the wall?", "answer": "2 meters", "kind": "numeric"},
        {"id": "dir", "question": "Where is the ball, as a clock direction?", "answer": "3 o'clock", "kind": "clock"},
        {"id": "free", "question": "What happens next?", "answer": "The ball hits the wall."},
        {"id": "pick", "question": QUESTIONS[0], "choices": CHOICES[0], "answer": "left"},
    ]
    items = load_jsonl(str(write_items(tmp_path / "data", rows)))
    settings = EvalSettings(max_new_tokens=4)
    metrics = evaluate(items, model, processor, tmp_path / "plain", settings)
    scored = {r["id"]: r for r in read_jsonl(tmp_path / "plain" / PREDICTIONS)}
    unscored = {r["id"]: r for r in read_jsonl(tmp_path / "plain" / UNSCORED)}
    assert set(scored) == {"dist", "dir", "pick"} and set(unscored) == {"free"}
    assert unscored["free"]["correct"] is None and unscored["free"]["unscored_reason"] == "unjudged"
    for record in (scored["dist"], scored["dir"], unscored["free"]):
        assert isinstance(record["generation"], str) and isinstance(record["prediction"], str)
        assert record["world_tokens"] == 16
    assert scored["dist"]["score"]["target_m"] == 2.0 and scored["dir"]["score"]["target_hour"] == 3
    assert metrics["n"] == 3 and metrics["unjudged"] == 1 and metrics["n_items"] == 4
    assert set(metrics["per_kind"]) == {"choice", "numeric", "clock"}

    judge = FakeJudge()
    judged = evaluate(items, model, processor, tmp_path / "judged", settings, judge=judge)
    assert judged["n"] == 4 and judged["unjudged"] == 0
    assert judge.calls[0][:2] == ("What happens next?", "The ball hits the wall.")
    free = {r["id"]: r for r in read_jsonl(tmp_path / "judged" / PREDICTIONS)}["free"]
    assert free["correct"] is True and free["judge_reason"] == "same fact"
    assert free["prediction"] == unscored["free"]["prediction"]  # greedy: the same answer twice


def test_metrics_file_has_the_reported_keys_and_compare_reads_it(loaded, tmp_path):
    model, processor = loaded
    items = load_jsonl(str(write_items(tmp_path / "data", choice_rows(3))))
    hidden = EvalItem(id="hidden", question=QUESTIONS[0], choices=CHOICES[0], answer=None, visuals=items[0].visuals)
    out = tmp_path / "out"
    metrics = evaluate(items + [hidden], model, processor, out, info={"model": "tiny", "benchmark": "jsonl"})
    on_disk = json.loads((out / METRICS).read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(metrics))
    for key in ("accuracy", "n", "ci95", "per_category", "unjudged", "no_reference", "model", "control", "benchmark",
                "settings", "wall_time_s", "world_tokens_seen", "world"):  # fmt: skip
        assert key in on_disk, key
    assert on_disk["n"] == 3 and on_disk["no_reference"] == 1 and on_disk["control"] == "none"
    assert set(on_disk["per_category"]) == {"cat0", "cat1"}
    assert on_disk["per_category"]["cat0"]["n"] == 2 and len(on_disk["per_category"]["cat0"]["ci95"]) == 2
    assert on_disk["world"]["tokens_seen"] == on_disk["world"]["tokens_required"] == (2 + 3 + 2 + 2) * 16  # rows x world tokens
    run = load_run(out)  # the compare CLI accepts the folder
    assert run.n == 3 and run.accuracy == pytest.approx(on_disk["accuracy"])


def test_clip_items_get_one_world_block_per_clip(loaded, tmp_path):
    """A 5-frame clip is 2 latent frames: 32 world tokens per row, checked against the model's counters."""
    model, processor = loaded
    folder = tmp_path / "data"
    folder.mkdir()
    frames = []
    for t in range(5):
        random_image(500 + t).save(folder / f"f{t}.png")
        frames.append(f"f{t}.png")
    rows = [{"id": "clip", "question": QUESTIONS[0], "choices": CHOICES[0], "answer": "left", "video": frames}]
    rows += choice_rows(1)  # an image item in the same run: world shapes never share a tensor
    path = write_items(folder, rows[1:])
    path.write_text(json.dumps(rows[0]) + "\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    metrics = evaluate(load_jsonl(str(path)), model, processor, tmp_path / "out", EvalSettings(batch_size=8))
    records = {r["id"]: r for r in read_jsonl(tmp_path / "out" / PREDICTIONS)}
    assert records["clip"]["world_tokens"] == 32 and records["c0"]["world_tokens"] == 16
    assert metrics["world"]["tokens_seen"] == 2 * 32 + 2 * 16
    assert metrics["world"]["forwards_with_world"] == 2
