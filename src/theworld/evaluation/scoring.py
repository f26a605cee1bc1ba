"""Running a model on evaluation prompts: choice log-likelihoods and greedy answers.

These functions know nothing about controls or benchmarks: they take prompts a processor encoded
(`encode_prompt`) and work for `TheWorld` and plain `Gemma3ForConditionalGeneration` alike, which
lets a test check that the world-off control scores exactly like Gemma 3.

A choice's score is the summed log-probability of its tokens (tokenized on their own, appended to
the generation prompt) as the assistant's answer. Rows from several items share a forward; left
padding puts every continuation at the end, so only the last positions' logits are computed
(`logits_to_keep`: a 262k vocabulary stays affordable). Position ids are explicit, so a row scores
the same whatever its padding (tested at 1e-4). Every forward carrying world inputs is tallied in
a `WorldFeed`, which the harness compares with what reached the model and what the items need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from theworld.evaluation.items import EvalItem, to_sample

WORLD_KEYS = ("world_pixel_values", "world_latents")


@dataclass
class EncodedPrompt:
    """One item's generation prompt as the processor encoded it, and the inputs its forward needs.

    `world` holds the item's world inputs under `world_key` (the processor's world pixels, or
    latents the harness computed from them); None when the prompt has no world block.
    """

    id: str
    input_ids: torch.Tensor  # (L,) long
    token_type_ids: torch.Tensor  # (L,) long, 1 on image (and world) placeholders
    pixel_values: torch.Tensor | None = None  # (images, 3, H, W)
    world: torch.Tensor | None = None  # (visuals, ...) world pixels or latents
    world_key: str = "world_pixel_values"
    world_imagined: torch.Tensor | None = None  # world rollouts: (visuals, 16, K, h, w), beside world latents

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class WorldFeed:
    """What was fed to the model with world inputs: forwards (a generate call's prefill counts once)
    and world placeholder tokens in those forwards' input ids."""

    forwards: int = 0
    tokens: int = 0

    def add(self, tokens: int) -> None:
        self.forwards += 1
        self.tokens += tokens


def encode_prompt(processor: Any, item: EvalItem) -> EncodedPrompt:
    """The item's generation prompt through `processor.apply_chat_template` (batch of one)."""
    sample = to_sample(item)
    out = processor.apply_chat_template(
        sample.messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    input_ids = out["input_ids"][0]
    token_type_ids = out.get("token_type_ids")
    world = out.get("world_pixel_values")
    return EncodedPrompt(
        id=item.id,
        input_ids=input_ids,
        token_type_ids=token_type_ids[0] if token_type_ids is not None else torch.zeros_like(input_ids),
        pixel_values=out.get("pixel_values"),
        world=world if world is None else torch.as_tensor(world),
    )


def count_world_tokens(input_ids: torch.Tensor, world_token_id: int | None) -> int:
    return 0 if world_token_id is None else int((input_ids == world_token_id).sum())


def _shape_key(prompt: EncodedPrompt) -> tuple[Any, ...] | None:
    """Rows whose world inputs have different per-visual shapes cannot share one tensor."""
    return None if prompt.world is None else (prompt.world_key, tuple(prompt.world.shape[1:]))


def _batches(row_prompts: Sequence[int], prompts: Sequence[EncodedPrompt], batch_size: int) -> list[list[int]]:
    """Row indices in chunks of at most `batch_size`, never mixing world-input shapes."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches: list[list[int]] = []
    current: list[int] = []
    current_key: Any = None
    for row, p in enumerate(row_prompts):
        key = _shape_key(prompts[p])
        clash = key is not None and current_key is not None and key != current_key
        if current and (len(current) >= batch_size or clash):
            batches.append(current)
            current, current_key = [], None
        current.append(row)
        current_key = current_key if key is None else key
    if current:
        batches.append(current)
    return batches


def _collate(
    model: torch.nn.Module,
    prompts: Sequence[EncodedPrompt],
    rows: Sequence[tuple[int, Sequence[int]]],
    padding_side: str,
    pad_token_id: int,
) -> tuple[dict[str, Any], list[int]]:
    """Model inputs for rows (prompt index, continuation ids), and each row's start offset."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    param = model.get_input_embeddings().weight
    device, dtype = param.device, param.dtype
    lengths = [len(prompts[p]) + len(cont) for p, cont in rows]
    width = max(lengths)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
    offsets = []
    pixels, world, imagined = [], [], []
    for r, ((p, cont), length) in enumerate(zip(rows, lengths)):
        prompt = prompts[p]
        start = width - length if padding_side == "left" else 0
        offsets.append(start)
        cont_ids = torch.as_tensor(list(cont), dtype=torch.long)
        input_ids[r, start : start + length] = torch.cat([prompt.input_ids.long(), cont_ids])
        token_type_ids[r, start : start + len(prompt)] = prompt.token_type_ids.long()
        attention_mask[r, start : start + length] = 1
        # Image and world features are scattered in row-major placeholder order: concatenating
        # them in row order (each row its own copy) keeps every row with its own visuals.
        if prompt.pixel_values is not None:
            pixels.append(prompt.pixel_values)
        if prompt.world is not None:
            world.append(prompt.world)
        if prompt.world_imagined is not None:
            imagined.append(prompt.world_imagined)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    inputs: dict[str, Any] = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "token_type_ids": token_type_ids.to(device),
        "position_ids": position_ids.to(device),
    }
    if pixels:
        inputs["pixel_values"] = torch.cat(pixels).to(device=device, dtype=dtype)
    if world:
        keys = {prompts[p].world_key for p, _ in rows if prompts[p].world is not None}
        if len(keys) != 1 or next(iter(keys)) not in WORLD_KEYS:
            raise ValueError(f"rows of one batch must share one world input kind, got {sorted(keys)}")
        inputs[keys.pop()] = torch.cat(world).to(device)
    if imagined:
        if len(imagined) != len(world):
            raise ValueError("rows of one batch must all carry imagined world latents, or none")
        inputs["world_imagined_latents"] = torch.cat(imagined).to(device)
    return inputs, offsets


def score_continuations(
    model: torch.nn.Module,
    prompts: Sequence[EncodedPrompt],
    rows: Sequence[tuple[int, Sequence[int]]],
    batch_size: int = 8,
    padding_side: str = "left",
    pad_token_id: int = 0,
    feed: WorldFeed | None = None,
) -> list[float]:
    """Summed log-probability of each row's continuation ids after its prompt (float64 sums).

    `rows` are (index into `prompts`, continuation token ids); at most `batch_size` rows go
    through one forward.
    """
    for p, cont in rows:
        if len(cont) == 0:
            raise ValueError(f"item {prompts[p].id!r}: an empty continuation has no tokens to score")
    world_token_id = getattr(model.config, "world_token_id", None)
    scores: list[float] = [0.0] * len(rows)
    for batch in _batches([p for p, _ in rows], prompts, batch_size):
        batch_rows = [rows[i] for i in batch]
        inputs, offsets = _collate(model, prompts, batch_rows, padding_side, pad_token_id)
        width = inputs["input_ids"].shape[1]
        # Position t's logits predict token t + 1: continuation token j of a row sits at
        # start + len(prompt) + j and is predicted at start + len(prompt) + j - 1.
        first_needed = min(start + len(prompts[p]) - 1 for start, (p, _) in zip(offsets, batch_rows))
        keep = width - first_needed
        with torch.no_grad():
            logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits  # (B, keep, V)
        if any(k in inputs for k in WORLD_KEYS) and feed is not None:
            feed.add(count_world_tokens(inputs["input_ids"], world_token_id))
        base = width - keep
        for r, (i, start, (p, cont)) in enumerate(zip(batch, offsets, batch_rows)):
            targets = torch.as_tensor(list(cont), dtype=torch.long, device=logits.device)
            first = start + len(prompts[p]) - 1 - base
            row_logits = logits[r, first : first + len(cont)].float()
            logprobs = row_logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
            scores[i] = float(logprobs.double().sum())
    return scores


def stop_token_ids(tokenizer: Any) -> list[int]:
    """End of sequence and, where the tokenizer has it, Gemma's end of turn."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id and end_of_turn not in ids:
        ids.append(end_of_turn)
    return ids


@dataclass
class Generation:
    """A greedy answer: `text` (special tokens removed, stripped) and `raw` (as generated, up to the stop)."""

    text: str
    raw: str
    num_tokens: int
    stopped: bool  # False when max_new_tokens ran out first


def generate_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[EncodedPrompt],
    max_new_tokens: int = 64,
    batch_size: int = 8,
    feed: WorldFeed | None = None,
) -> list[Generation]:
    """Greedy answers (`do_sample=False`) to each prompt, left-padded batches of `batch_size`."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    world_token_id = getattr(model.config, "world_token_id", None)
    answers: list[Generation | None] = [None] * len(prompts)
    for batch in _batches(list(range(len(prompts))), prompts, batch_size):
        inputs, _ = _collate(model, prompts, [(p, ()) for p in batch], "left", pad)
        inputs.pop("position_ids")  # generate derives them from the attention mask
        width = inputs["input_ids"].shape[1]
        with torch.no_grad():
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=pad,
            )
        if any(k in inputs for k in WORLD_KEYS) and feed is not None:
            feed.add(count_world_tokens(inputs["input_ids"], world_token_id))  # the prefill
        for row, p in enumerate(batch):
            new = out[row, width:].tolist()
            stop_at = next((j for j, tok in enumerate(new) if tok in stops), None)
            kept = new if stop_at is None else new[:stop_at]
            answers[p] = Generation(
                text=tokenizer.decode(kept, skip_special_tokens=True).strip(),
                raw=tokenizer.decode(kept, skip_special_tokens=False),
                num_tokens=len(kept),
                stopped=stop_at is not None,
            )
    return [a for a in answers if a is not None]
