"""The evaluation harness: items in, a model run under a control, predictions and metrics out.

`evaluate` writes predictions.jsonl, unscored.jsonl, metrics.json and run.json (docs/evaluation.md);
runs resume (`theworld.evaluation.outputs`) and `accelerate launch` processes share the pending items
(`theworld.processes`). Honesty check (docs/evaluation.md): every prompt must hold the world tokens
its visuals imply, and after every batch what reached the world projector must equal what was fed;
a mismatch raises `WorldInputsMissingError` and no numbers are written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from theworld.errors import TheWorldUserError
from theworld.evaluation.controls import (
    check_control,
    control_context,
    projector_hook,
    shuffled_donors,
    uses_world,
    visual_signature,
)
from theworld.evaluation.items import EvalItem
from theworld.evaluation.outputs import (  # noqa: F401  (PREDICTIONS, UNSCORED, METRICS: their names here too)
    METRICS,
    PREDICTIONS,
    UNSCORED,
    Writer,
    check_run_identity,
    finished_records,
    json_safe,
    merge_shards,
)
from theworld.evaluation.parsing import score_clock, score_numeric
from theworld.processes import Processes
from theworld.evaluation.scoring import (
    EncodedPrompt,
    WorldFeed,
    count_world_tokens,
    encode_prompt,
    generate_answers,
    pack_groups,
    score_continuations,
)
from theworld.evaluation.stats import bootstrap_ci
from theworld.processing.processor import Clip

logger = logging.getLogger(__name__)


class WorldInputsMissingError(TheWorldUserError):
    """The world path did not get exactly the world tokens the items need: raised instead of reporting numbers."""


@dataclass
class EvalSettings:
    """How items are run; `seed` drives the shuffled-world donors and the bootstrap."""

    control: str = "none"
    batch_size: int = 8
    max_new_tokens: int = 64
    padding_side: str = "left"
    seed: int = 0
    n_boot: int = 2000

    def __post_init__(self) -> None:
        check_control(self.control)
        for label, value in (("batch size", self.batch_size), ("max new tokens", self.max_new_tokens)):
            if value < 1:
                raise TheWorldUserError(f"{label} must be >= 1, got {value}")
        if self.padding_side not in ("left", "right"):
            raise TheWorldUserError(f"padding side must be 'left' or 'right', got {self.padding_side!r}")


# ------------------------------------------------------------------------------------ world audit


@dataclass
class WorldUsage:
    """What reached the world path: forwards whose world projector ran, and the world tokens it produced."""

    world_forward_count: int = 0
    world_token_count: int = 0


@contextlib.contextmanager
def count_world_usage(model: torch.nn.Module) -> Iterator[WorldUsage]:
    """Within the block, a forward hook on the world projector counts what the model received."""
    usage = WorldUsage()

    def count(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        usage.world_forward_count += 1
        usage.world_token_count += output.shape[0] * output.shape[1]

    with projector_hook(model, count, required=None):
        yield usage


@dataclass
class WorldAudit:
    """Compares what reached the world path (`usage`) with what the harness fed and the items need."""

    usage: Any  # WorldUsage, or anything with its two counters
    world_run: bool
    feed: WorldFeed = field(default_factory=WorldFeed)
    required_tokens: int = 0  # sum over items run of each item's expected world tokens (one prefill each)

    def __post_init__(self) -> None:
        self.start = (self.usage.world_forward_count, self.usage.world_token_count)

    def require(self, tokens: int) -> None:
        self.required_tokens += tokens

    def seen(self) -> tuple[int, int]:
        return self.usage.world_forward_count - self.start[0], self.usage.world_token_count - self.start[1]

    def verify(self) -> None:
        """Raise `WorldInputsMissingError` unless every forward got exactly the world tokens its items need."""
        forwards, tokens = self.seen()
        if not self.world_run:
            if forwards or tokens or self.feed.forwards:
                message = f"world-off run, yet the model received world tokens ({tokens} in {forwards} forwards)"
                raise WorldInputsMissingError(message)
            return
        problems = []
        if self.feed.tokens != self.required_tokens:
            problems.append(f"the items need {self.required_tokens} world tokens but {self.feed.tokens} were fed")
        if tokens != self.required_tokens:
            problems.append(f"the world projector's world_token_count grew by {tokens}, expected {self.required_tokens}")
        if forwards != self.feed.projector_calls:
            problems.append(
                f"the world projector's world_forward_count grew by {forwards}, expected {self.feed.projector_calls} "
                "(one per clip length in each forward with world inputs)"
            )
        if problems:
            message = "world-enabled evaluation did not feed the world path as required: " + "; ".join(problems)
            raise WorldInputsMissingError(message + ". No metrics were written.")


# ------------------------------------------------------------------------------------ metrics


def _accuracy_block(values: Sequence[bool], n_boot: int, seed: int) -> dict[str, Any]:
    if not values:
        return {"accuracy": None, "n": 0, "ci95": None}
    lo, hi = bootstrap_ci([float(v) for v in values], n_boot=n_boot, seed=seed)
    return {"accuracy": sum(values) / len(values), "n": len(values), "ci95": [lo, hi]}


def compute_metrics(records: Iterable[Mapping[str, Any]], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Accuracy with a bootstrap 95% interval, by category and kind; unscored records are only counted."""
    records = list(records)
    scored = [r for r in records if r.get("correct") is not None]
    correct = [bool(r["correct"]) for r in scored]
    metrics = _accuracy_block(correct, n_boot, seed)
    for name, key, missing in (("per_category", "category", "(none)"), ("per_kind", "kind", "None")):
        groups: dict[str, list[bool]] = defaultdict(list)
        for r in scored:
            groups[str(r.get(key) or missing)].append(bool(r["correct"]))
        metrics[name] = {g: _accuracy_block(v, n_boot, seed) for g, v in sorted(groups.items())}
    reasons = [r.get("unscored_reason") for r in records if r.get("correct") is None]
    metrics["n_items"] = len(records)
    metrics["unjudged"] = reasons.count("unjudged")
    metrics["no_reference"] = reasons.count("no reference answer")
    numeric = [r["score"] for r in scored if r.get("kind") == "numeric" and isinstance(r.get("score"), dict)]
    if numeric:
        metrics["numeric_success"] = {
            f"within_{pct}pct": sum(bool(s.get(f"success_{pct}")) for s in numeric) / len(numeric) for pct in (10, 25, 50)
        }
    return metrics


# ------------------------------------------------------------------------------------ the harness


@dataclass
class _Runner:
    """State shared by the batches of one `evaluate` call."""

    items: Sequence[EvalItem]
    model: Any
    processor: Any
    settings: EvalSettings
    judge: Any
    audit: WorldAudit

    def __post_init__(self) -> None:
        self.tokenizer = self.processor.tokenizer
        self.world_run = uses_world(self.settings.control)
        shuffled = self.settings.control == "shuffled-world"
        self.donors = shuffled_donors(self.items, self.settings.seed) if shuffled else None
        self.world_token_id = getattr(self.model.config if self.world_run else self.processor, "world_token_id", None)

    def prepare(self, indices: Sequence[int]) -> list[EncodedPrompt]:
        """Encode the items' prompts, check their world blocks, attach (donor) world latents, require their world tokens."""
        prompts = []
        for index in indices:
            item = self.items[index]
            try:
                prompt = encode_prompt(self.processor, item)
            except (OSError, ValueError) as err:  # unreadable image, frame count the processor refuses
                raise TheWorldUserError(f"item {item.id!r}: cannot build its prompt ({err})") from err
            found = count_world_tokens(prompt.input_ids, self.world_token_id)
            # per visual, latent frames x tokens per frame: from the visuals alone, never from the prompt
            expected = sum(map(self.model.config.world_tokens_for_frames, visual_signature(item))) if self.world_run else 0
            if found != expected or (expected and prompt.world is None):
                raise WorldInputsMissingError(
                    f"item {item.id!r}: its prompt holds {found} world tokens"
                    f"{' and no world inputs' if expected and prompt.world is None else ''}, but control "
                    f"{self.settings.control!r} needs {expected} for its {len(item.visuals)} visual(s); is the "
                    "processor's enable_world the model's?"
                )
            if self.world_run and expected and self.donors is not None:
                # the donor's world pixels (visuals, 3, T, S, S), as the processor makes them
                donor = [Clip(v) if isinstance(v, (list, tuple)) else v for v in self.items[self.donors[index]].visuals]
                donor_pixels = torch.from_numpy(np.stack([self.processor.world_pixels(v) for v in donor]))
                if donor_pixels.shape != prompt.world.shape:  # same signature, so this is a bug
                    shapes = f"{tuple(donor_pixels.shape)} != own {tuple(prompt.world.shape)}"
                    raise RuntimeError(f"item {item.id!r}: donor world shape {shapes}")
                prompt.world = donor_pixels
            self.audit.require(expected)
            prompts.append(prompt)
        if self.world_run:
            self._encode_world(prompts)
        return prompts

    def _encode_world(self, prompts: Sequence[EncodedPrompt]) -> None:
        """World pixels -> latents with the model's VAE, once per item (not per choice), batched by shape."""
        encoder = getattr(self.model, "world_encoder", None)
        if encoder is None:
            raise TheWorldUserError(
                "the model has no world encoder (Cosmos VAE) to encode world pixels: load it with a cosmos model name"
            )
        device = next(encoder.parameters()).device
        by_shape: dict[tuple[int, ...], list[EncodedPrompt]] = defaultdict(list)
        for prompt in prompts:
            if prompt.world is not None and prompt.world_key == "world_pixel_values":
                by_shape[tuple(prompt.world.shape[1:])].append(prompt)
        for group in by_shape.values():
            pixels = torch.cat([p.world for p in group]).to(device)
            with torch.no_grad():
                latents = encoder(pixels)
            sizes = [p.world.shape[0] for p in group]
            for prompt, chunk in zip(group, torch.split(latents, sizes)):
                prompt.world, prompt.world_key = chunk, "world_latents"
            if getattr(self.model.config, "world_rollout_frames", 0):  # world rollouts: imagine once per item too
                for prompt, chunk in zip(group, torch.split(self.model.imagine(pixels), sizes)):
                    prompt.world_imagined = chunk

    def _base_record(self, index: int, prompt: EncodedPrompt) -> dict[str, Any]:
        item = self.items[index]
        world_tokens = count_world_tokens(prompt.input_ids, self.world_token_id)
        record: dict[str, Any] = {"id": item.id, "kind": item.kind, "category": item.category, "world_tokens": world_tokens}
        if self.donors is not None and self.donors[index] is not None:
            record["world_from"] = self.items[self.donors[index]].id
        return record

    def run_choices(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        prompts = self.prepare(indices)
        rows: list[tuple[int, list[int]]] = []
        for p, index in enumerate(indices):
            item = self.items[index]
            for choice in item.choices or []:
                ids = self.tokenizer(choice, add_special_tokens=False)["input_ids"]
                if not ids:
                    raise TheWorldUserError(f"item {item.id!r}: choice {choice!r} has no tokens")
                rows.append((p, ids))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        logliks = score_continuations(
            self.model, prompts, rows, self.settings.batch_size, self.settings.padding_side, pad, self.audit.feed
        )
        position = 0
        records = []
        for p, index in enumerate(indices):
            item = self.items[index]
            choices = list(item.choices or [])
            item_scores = logliks[position : position + len(choices)]
            position += len(choices)
            prediction = choices[int(np.argmax(item_scores))]
            correct = None if item.answer is None else prediction == item.answer
            record = self._base_record(index, prompts[p])
            record.update(prediction=prediction, target=item.answer, correct=correct, scores=dict(zip(choices, item_scores)))
            if item.answer is None:
                record["unscored_reason"] = "no reference answer"
            records.append(record)
        return records

    def run_generation(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        prompts = self.prepare(indices)
        answers = generate_answers(
            self.model, self.tokenizer, prompts, self.settings.max_new_tokens, self.settings.batch_size, self.audit.feed
        )
        records = []
        for p, index in enumerate(indices):
            item, answer = self.items[index], answers[p]
            record = self._base_record(index, prompts[p])
            record.update(prediction=answer.text, target=item.answer, generation=answer.raw, stopped=answer.stopped)
            record.update(self._verdict(item, answer.text))
            records.append(record)
        return records

    def _verdict(self, item: EvalItem, prediction: str) -> dict[str, Any]:
        if item.answer is None:
            return {"correct": None, "unscored_reason": "no reference answer"}
        if item.kind in ("numeric", "clock"):
            score = (score_numeric if item.kind == "numeric" else score_clock)(prediction, item.answer)
            return {"correct": score["correct"], "score": score}
        if self.judge is None:
            return {"correct": None, "unscored_reason": "unjudged"}
        verdict = self.judge.judge(item.question, item.answer, prediction)
        return {"correct": verdict.correct, "judge_reason": verdict.reason}


def evaluate(
    items: Sequence[EvalItem],
    model: torch.nn.Module,
    processor: Any,
    output_dir: str | Path,
    settings: EvalSettings | None = None,
    judge: Any = None,
    info: Mapping[str, Any] | None = None,
    processes: Processes | None = None,
) -> dict[str, Any]:
    """Evaluate `items` under `settings.control`, write the output files, return the metrics (docs/evaluation.md)."""
    settings = settings or EvalSettings()
    processes = processes or Processes()
    if not items:
        raise TheWorldUserError("no items to evaluate")
    world_run = uses_world(settings.control)
    has_projector = getattr(model, "world_projector", None) is not None
    if world_run and not has_projector:
        raise TheWorldUserError(f"control {settings.control!r} needs a world-enabled model (it has enable_world=False)")
    if not world_run and has_projector:
        raise TheWorldUserError("control 'world-off' needs the model loaded with enable_world=False")
    order: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.id in order:
            raise TheWorldUserError(f"duplicate item id {item.id!r}")
        order[item.id] = index

    out = Path(output_dir)
    identity = dict(info or {})
    identity.update(control=settings.control, max_new_tokens=settings.max_new_tokens)
    if settings.control == "shuffled-world":
        identity["shuffle_seed"] = settings.seed

    def open_run() -> None:  # the main process alone: the other processes wait, then read
        if out.exists() and not out.is_dir():
            raise TheWorldUserError(f"output folder {out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        check_run_identity(out, identity)
        merged = merge_shards(out, order)  # what an interrupted multi-process run left
        if merged:
            logger.info("%s: %d finished items merged from an interrupted run's shards", out, merged)
        stray = sorted(set(finished_records(out)) - set(order))
        if stray:
            raise TheWorldUserError(
                f"{out} has predictions for {len(stray)} items not in this evaluation (e.g. {stray[0]!r}): "
                "different --data/--limit/--split? use another --output-dir"
            )

    processes.main_first(open_run)
    done = finished_records(out)
    pending = [i for i, item in enumerate(items) if item.id not in done]
    if done and processes.is_main:
        logger.info("resuming in %s: %d items done, %d to go", out, len(done), len(pending))
    mine = processes.share(pending)

    model.eval()
    audit = WorldAudit(WorldUsage(), world_run)
    runner = _Runner(items, model, processor, settings, judge, audit)
    started = time.perf_counter()
    choice_rows = {i: len(items[i].choices or []) for i in mine if items[i].kind == "choice"}
    work = [(runner.run_choices, g) for g in pack_groups(choice_rows, settings.batch_size)]
    free_rows = {i: 1 for i in mine if i not in choice_rows}
    work += [(runner.run_generation, g) for g in pack_groups(free_rows, settings.batch_size)]
    where = "" if processes.count == 1 else f" [process {processes.index + 1}/{processes.count}]"
    writer = Writer(out, rank=None if processes.count == 1 else processes.index)
    try:
        # The audit reads the hook's counter, which starts at 0 as its placeholder did.
        with count_world_usage(model) as audit.usage, control_context(model, settings.control), tqdm(
            total=len(mine), desc=f"eval ({settings.control}){where}", unit="item"
        ) as progress:
            for run, group in work:
                records = run(group)
                audit.verify()  # before writing: a batch that skipped the world path leaves no trace
                for record in records:
                    writer.write(record)
                progress.update(len(group))
    finally:
        writer.close()
    audit.verify()
    projector_calls, tokens = audit.seen()
    tally = {"forwards": audit.feed.forwards, "projector_calls": projector_calls, "tokens": tokens}
    tallies = processes.gather({**tally, "required": audit.required_tokens, "items": len(mine)})
    total = {key: sum(t[key] for t in tallies) for key in tallies[0]}
    wall = time.perf_counter() - started

    def finish() -> dict[str, Any]:  # the main process, once every shard is complete
        merge_shards(out, order)
        records = finished_records(out)
        missing = [item.id for item in items if item.id not in records]
        if missing:  # cannot happen unless the files were changed under us
            raise TheWorldUserError(f"{out}: no prediction for {len(missing)} items (e.g. {missing[0]!r})")
        metrics = compute_metrics((records[item.id] for item in items), n_boot=settings.n_boot, seed=settings.seed)
        world = {"enabled": world_run, "forwards_with_world": total["forwards"], "projector_calls": total["projector_calls"]}
        world.update(tokens_seen=total["tokens"], tokens_required=total["required"], check="passed")
        metrics.update({k: v for k, v in identity.items() if k not in metrics}, settings=asdict(settings), wall_time_s=wall)
        metrics.update(processes=processes.count, items_run=total["items"], items_resumed=len(items) - len(pending))
        metrics.update(world_tokens_seen=total["tokens"], world=world)
        (out / METRICS).write_text(json.dumps(json_safe(metrics), indent=2) + "\n", encoding="utf-8")
        logger.info(
            "%s: accuracy %s over n=%d (%d unjudged) in %.1fs",
            out, "n/a" if metrics["accuracy"] is None else f"{metrics['accuracy']:.4f}", metrics["n"],
            metrics["unjudged"], wall,
        )  # fmt: skip
        return metrics

    processes.wait()  # every shard is complete
    return processes.main_first(finish)
