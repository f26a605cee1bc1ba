"""Running a model on evaluation prompts: choice log-likelihoods and greedy answers, each prompt computed once.

Model-agnostic (`TheWorld` and plain Gemma 3 alike, so world-off can be checked against Gemma 3).
A batch of prompts is prefilled once and keeps its KV cache; each choice then runs only its own
tokens from that cache, and free-form answers decode greedily from it (docs/evaluation.md,
"Scoring"). Every forward carrying world inputs is tallied in a `WorldFeed` for the harness's audit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from theworld.evaluation.items import EvalItem, to_sample

WORLD_KEYS = ("world_pixel_values", "world_latents")


@dataclass
class EncodedPrompt:
    """One item's encoded generation prompt; `world` holds its world inputs under `world_key` (None: no world block)."""

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
    """What was fed with world inputs: forwards, the projector calls they imply, world placeholder tokens."""

    forwards: int = 0
    projector_calls: int = 0
    tokens: int = 0

    def add(self, tokens: int, projector_calls: int = 1) -> None:
        self.forwards += 1
        self.projector_calls += projector_calls
        self.tokens += tokens


def encode_prompt(processor: Any, item: EvalItem) -> EncodedPrompt:
    """The item's generation prompt through `processor.apply_chat_template` (batch of one)."""
    sample = to_sample(item)
    out = processor.apply_chat_template(
        sample.messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    input_ids, token_type_ids, world = out["input_ids"][0], out.get("token_type_ids"), out.get("world_pixel_values")
    token_type_ids = token_type_ids[0] if token_type_ids is not None else torch.zeros_like(input_ids)
    world = world if world is None else torch.as_tensor(world)
    return EncodedPrompt(item.id, input_ids, token_type_ids, out.get("pixel_values"), world)


def count_world_tokens(input_ids: torch.Tensor, world_token_id: int | None) -> int:
    return 0 if world_token_id is None else int((input_ids == world_token_id).sum())


# ------------------------------------------------------------------------------------------------
# batching prompts


def _world_inputs(model: torch.nn.Module, prompts: Sequence[EncodedPrompt]) -> dict[str, torch.Tensor]:
    """The prompts' world inputs as one tensor; shorter clips are zero-padded, `world_latent_frames` says by how much."""
    worlds = [p for p in prompts if p.world is not None]
    if not worlds:
        return {}
    keys = {p.world_key for p in worlds}
    if len(keys) != 1 or next(iter(keys)) not in WORLD_KEYS:
        raise ValueError(f"prompts of one batch must share one world input kind, got {sorted(keys)}")
    key = keys.pop()
    imagined = {}
    if any(p.world_imagined is not None for p in worlds):
        if any(p.world_imagined is None for p in worlds):
            raise ValueError("prompts of one batch must all carry imagined world latents, or none")
        imagined = {"world_imagined_latents": torch.cat([p.world_imagined for p in worlds])}  # (N, 16, K, h, w)
    tensors = [p.world for p in worlds]  # each (visuals, C, T, H, W)
    if len({tuple(t.shape[1:2]) + tuple(t.shape[3:]) for t in tensors}) != 1:
        raise ValueError(f"world inputs of one batch differ beyond their length: {[tuple(t.shape) for t in tensors]}")
    longest = max(t.shape[2] for t in tensors)
    if all(t.shape[2] == longest for t in tensors):
        return {key: torch.cat(tensors), **imagined}
    geometry = model.config.world_geometry
    lengths = [t.shape[2] if key == "world_latents" else geometry.latent_frames(t.shape[2]) for t in tensors]
    frames = [length for t, length in zip(tensors, lengths) for _ in range(t.shape[0])]
    padded = torch.cat([F.pad(t, (0, 0, 0, 0, 0, longest - t.shape[2])) for t in tensors])  # (N, C, longest, H, W)
    return {key: padded, "world_latent_frames": torch.tensor(frames, dtype=torch.long), **imagined}


def collate(
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
    for r, ((p, cont), length) in enumerate(zip(rows, lengths)):
        prompt = prompts[p]
        start = width - length if padding_side == "left" else 0
        offsets.append(start)
        cont_ids = torch.as_tensor(list(cont), dtype=torch.long)
        input_ids[r, start : start + length] = torch.cat([prompt.input_ids.long(), cont_ids])
        token_type_ids[r, start : start + len(prompt)] = prompt.token_type_ids.long()
        attention_mask[r, start : start + length] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    inputs: dict[str, Any] = {name: t.to(device) for name, t in {**tensors, "position_ids": position_ids}.items()}
    row_prompts = [prompts[p] for p, _ in rows]
    # Image and world features are scattered in row-major placeholder order: concatenating them
    # in row order keeps every row with its own visuals.
    pixels = [p.pixel_values for p in row_prompts if p.pixel_values is not None]
    if pixels:
        inputs["pixel_values"] = torch.cat(pixels).to(device=device, dtype=dtype)
    inputs.update({k: v.to(device) for k, v in _world_inputs(model, row_prompts).items()})
    return inputs, offsets


# ------------------------------------------------------------------------------------------------
# prefill


@dataclass
class Prefill:
    """A batch of prompts after one forward: its KV cache and what the next tokens need."""

    cache: Any  # transformers `Cache` (Gemma 3: full-attention and sliding-window layers)
    attention_mask: torch.Tensor  # (B, W) long: the prompts' keys in the cache (0 on padding)
    next_positions: torch.Tensor  # (B,) long: position id of the token after each prompt (its length)
    last_logits: torch.Tensor  # (B, V) float32: logits at each prompt's last token


def prefill(
    model: torch.nn.Module,
    prompts: Sequence[EncodedPrompt],
    padding_side: str = "left",
    pad_token_id: int = 0,
    feed: WorldFeed | None = None,
) -> Prefill:
    """Run the prompts once and keep their cache and last-token logits (`logits_to_keep`: the vocabulary is 262k)."""
    inputs, offsets = collate(model, prompts, [(p, ()) for p in range(len(prompts))], padding_side, pad_token_id)
    last = [start + len(prompt) - 1 for start, prompt in zip(offsets, prompts)]  # each prompt's last token
    keep = sorted(set(last))  # left padding: one column for every row
    with torch.no_grad():
        out = model(**inputs, use_cache=True, logits_to_keep=torch.tensor(keep, device=inputs["input_ids"].device))
    if feed is not None and any(k in inputs for k in WORLD_KEYS):
        lengths = inputs.get("world_latent_frames")
        tokens = count_world_tokens(inputs["input_ids"], getattr(model.config, "world_token_id", None))
        feed.add(tokens, projector_calls=1 if lengths is None else len(set(lengths.tolist())))
    next_positions = torch.tensor([len(p) for p in prompts], device=inputs["input_ids"].device)
    last_logits = out.logits[torch.arange(len(prompts)), torch.tensor([keep.index(t) for t in last])].float()  # (B, V)
    return Prefill(out.past_key_values, inputs["attention_mask"], next_positions, last_logits)


# ------------------------------------------------------------------------------------------------
# choices


def pack_groups(sizes: dict[int, int], batch_size: int) -> list[list[int]]:
    """Consecutive keys whose sizes sum to at most `batch_size` (a larger one alone): an item's rows are never split."""
    groups: list[list[int]] = [[]]
    filled = 0
    for key, size in sizes.items():
        if groups[-1] and filled + size > batch_size:
            groups.append([])
            filled = 0
        groups[-1].append(key)
        filled += size
    return [group for group in groups if group]


def _from_cache(model: torch.nn.Module, state: Prefill, ids: torch.Tensor, mask: Any, positions: Any) -> torch.Tensor:
    """Logits of `ids` run after the prefill's cache (which they extend), at `positions`."""
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=state.cache, use_cache=True)
    return out.logits


def _continuation_logprobs(
    model: torch.nn.Module, state: Prefill, owners: Sequence[int], continuations: Sequence[Sequence[int]], pad_token_id: int
) -> list[float]:
    """Summed log-probabilities of each continuation after its prompt (row `owners[r]` of the prefill)."""
    device = state.last_logits.device
    index = torch.tensor(list(owners), device=device)
    targets = [torch.as_tensor(list(c), dtype=torch.long, device=device) for c in continuations]
    first = state.last_logits[index].log_softmax(-1)  # (R, V)
    totals = [first[r, t[0]].double() for r, t in enumerate(targets)]
    width = max(len(c) for c in continuations) - 1
    if width > 0:  # some continuation has more than one token
        ids = torch.full((len(targets), width), pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(targets), width), dtype=torch.long, device=device)
        for r, t in enumerate(targets):
            ids[r, : len(t) - 1] = t[:-1]
            mask[r, : len(t) - 1] = 1
        state.cache.batch_select_indices(index.to(state.attention_mask.device))
        positions = state.next_positions[index][:, None] + torch.arange(width, device=device)
        mask = torch.cat([state.attention_mask[index], mask], dim=1)
        logits = _from_cache(model, state, ids, mask, positions)  # (R, width, V)
        for r, t in enumerate(targets):
            if len(t) > 1:
                rest = logits[r, : len(t) - 1].float().log_softmax(-1).gather(-1, t[1:, None]).squeeze(-1)
                totals[r] = totals[r] + rest.double().sum()
    return [float(x) for x in totals]


def score_continuations(
    model: torch.nn.Module,
    prompts: Sequence[EncodedPrompt],
    rows: Sequence[tuple[int, Sequence[int]]],
    batch_size: int = 8,
    padding_side: str = "left",
    pad_token_id: int = 0,
    feed: WorldFeed | None = None,
) -> list[float]:
    """Summed log-probability (float64) of each row's (prompt index, token ids) continuation after its prompt."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows_per_prompt: dict[int, list[int]] = {}
    for i, (p, cont) in enumerate(rows):
        if len(cont) == 0:
            raise ValueError(f"item {prompts[p].id!r}: an empty continuation has no tokens to score")
        rows_per_prompt.setdefault(p, []).append(i)
    scores: list[float] = [0.0] * len(rows)
    for group in pack_groups({p: len(r) for p, r in rows_per_prompt.items()}, batch_size):
        state = prefill(model, [prompts[p] for p in group], padding_side, pad_token_id, feed)
        row_ids = [i for p in group for i in rows_per_prompt[p]]
        owners = [g for g, p in enumerate(group) for _ in rows_per_prompt[p]]
        values = _continuation_logprobs(model, state, owners, [rows[i][1] for i in row_ids], pad_token_id)
        for i, value in zip(row_ids, values):
            scores[i] = value
    return scores


# ------------------------------------------------------------------------------------------------
# free-form answers


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


def greedy_tokens(model: torch.nn.Module, state: Prefill, max_new_tokens: int, stops: Sequence[int]) -> list[list[int]]:
    """Greedy decoding from a prefill: each row's new tokens up to its first stop token, as `generate` gives."""
    tokens = state.last_logits.argmax(-1)  # (B,)
    mask, positions = state.attention_mask, state.next_positions
    out: list[list[int]] = [[] for _ in range(tokens.shape[0])]
    done = [False] * len(out)
    for step in range(max_new_tokens):
        for r, token in enumerate(tokens.tolist()):
            if not done[r]:
                out[r].append(token)
                done[r] = token in stops
        if all(done) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        logits = _from_cache(model, state, tokens[:, None], mask, positions[:, None] + step)[:, -1]  # (B, V)
        tokens = logits.float().argmax(-1)
    return out


def generate_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[EncodedPrompt],
    max_new_tokens: int = 64,
    batch_size: int = 8,
    feed: WorldFeed | None = None,
) -> list[Generation]:
    """Greedy answers to each prompt: left-padded batches of `batch_size`, each prompt prefilled once."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    answers: list[Generation] = []
    for start in range(0, len(prompts), batch_size):
        state = prefill(model, prompts[start : start + batch_size], "left", pad, feed)
        for new in greedy_tokens(model, state, max_new_tokens, stops):
            stopped = bool(new) and new[-1] in stops
            kept = new[:-1] if stopped else new
            text = tokenizer.decode(kept, skip_special_tokens=True).strip()
            answers.append(Generation(text, tokenizer.decode(kept, skip_special_tokens=False), len(kept), stopped))
    return answers
