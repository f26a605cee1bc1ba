"""Turn `Sample`s into training batches through `TheWorldProcessor.apply_chat_template` (the call inference
uses), labels on assistant turns only, found on the token ids; too-long samples are cut, dropped or refused."""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from theworld.data.sample import Sample
from theworld.errors import TheWorldUserError
from theworld.training.loss import IGNORE_INDEX

logger = logging.getLogger(__name__)

START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
ASSISTANT_HEADER = "model\n"


class LatentSource(Protocol):
    """What the collator needs from a latent cache (theworld.training.latent_cache)."""

    def latents_for(self, visual: Any) -> torch.Tensor:  # (16, Tl, h, w), normalised
        ...


@dataclass
class EncodedSample:
    """One sample after the processor: 1-D token tensors plus its visual tensors (or None)."""

    id: str
    input_ids: torch.Tensor
    labels: torch.Tensor
    token_type_ids: torch.Tensor
    pixel_values: torch.Tensor | None
    world_pixel_values: torch.Tensor | None
    world_latents: torch.Tensor | None
    world_imagined_latents: torch.Tensor | None = None  # world rollouts: (visuals, 16, K, h, w) from a rollout cache

    @property
    def num_supervised(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


class TheWorldCollator:
    """`collator(samples) -> batch dict` for `TheWorld.forward` + `labels` (+ `sample_ids` for error messages)."""

    def __init__(
        self,
        processor: Any,
        *,
        max_length: int | None = None,
        on_truncated: str = "drop",
        latent_cache: LatentSource | None = None,
        return_sample_ids: bool = False,
    ) -> None:
        if on_truncated not in ("drop", "error"):
            raise ValueError(f"on_truncated={on_truncated!r}: expected 'drop' or 'error'")
        self.processor = processor
        self.max_length = max_length
        self.on_truncated = on_truncated
        self.return_sample_ids = return_sample_ids
        self.enable_world = bool(getattr(processor, "enable_world", False))
        if latent_cache is not None and not hasattr(latent_cache, "latents_for"):
            raise TypeError("latent_cache must have a latents_for(visual) method")
        self.latent_cache = latent_cache if self.enable_world else None
        if self.latent_cache is not None:
            # The world blocks still need each visual's frame count; its pixels come from the cache.
            self.processor = copy.copy(processor)
            self.processor.world_pixels = lambda visual: np.zeros((3, len(visual) if isinstance(visual, list) else 1, 1, 1), np.float32)
        self.tokenizer = tokenizer = processor.tokenizer
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.start_of_turn_id = tokenizer.convert_tokens_to_ids(START_OF_TURN)
        self.end_of_turn_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.header_ids = tokenizer(ASSISTANT_HEADER, add_special_tokens=False)["input_ids"]
        # Block delimiters: (start marker, end marker) for Gemma's image blocks and TheWorld's world blocks.
        self.blocks: list[tuple[int, int]] = [
            (tokenizer.convert_tokens_to_ids(tokenizer.boi_token), tokenizer.convert_tokens_to_ids(tokenizer.eoi_token))
        ]
        placeholders = {tokenizer.convert_tokens_to_ids(tokenizer.image_token)}
        if self.enable_world:
            start, end = (tokenizer.convert_tokens_to_ids(t) for t in (processor.start_of_world_token, processor.end_of_world_token))
            self.blocks.append((start, end))
            placeholders.add(processor.world_token_id)
        self.never_supervised = torch.tensor(sorted(placeholders | {i for pair in self.blocks for i in pair}))
        self.dropped: list[str] = []

    # ---------------------------------------------------------------------------------------
    # labels

    def _assistant_content_start(self, ids: list[int], turn_start: int) -> int | None:
        """Index of the first answer token of the turn opened at `turn_start`, or None for a non-assistant turn."""
        first = turn_start + 1
        n = len(self.header_ids)
        if ids[first : first + n] == self.header_ids:
            return first + n
        # Slow path: the tokenizer may tokenise the header differently in context.
        decoded = ""
        for k in range(first, min(len(ids), first + 16)):
            if ids[k] in (self.start_of_turn_id, self.end_of_turn_id):
                return None
            decoded = self.tokenizer.decode(ids[first : k + 1], skip_special_tokens=False)
            if decoded == ASSISTANT_HEADER:
                return k + 1
            if decoded.startswith(ASSISTANT_HEADER):
                return k  # token k straddles the header and the answer: it carries answer text
            if not ASSISTANT_HEADER.startswith(decoded):
                return None
        return None

    def assistant_labels(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(L,) labels: token ids on assistant content + end-of-turn, -100 elsewhere."""
        ids = input_ids.tolist()
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        i = 0
        while i < len(ids):
            if ids[i] != self.start_of_turn_id:
                i += 1
                continue
            start = self._assistant_content_start(ids, i)
            end = i + 1
            while end < len(ids) and ids[end] != self.end_of_turn_id:
                end += 1
            if start is not None:
                stop = min(end + 1, len(ids))  # include <end_of_turn>
                labels[start:stop] = input_ids[start:stop]
            i = end + 1
        labels[torch.isin(input_ids, self.never_supervised)] = IGNORE_INDEX
        labels[0] = IGNORE_INDEX  # position 0 is never a prediction target
        return labels

    # ---------------------------------------------------------------------------------------
    # one sample

    def _block_ends(self, ids: torch.Tensor) -> list[tuple[int, int]]:
        spans = []
        for start_id, end_id in self.blocks:
            starts = (ids == start_id).nonzero().flatten().tolist()
            ends = (ids == end_id).nonzero().flatten().tolist()
            spans += list(zip(starts, ends))
        return spans

    def _reject(self, sample_id: str, reason: str) -> None:
        if self.on_truncated == "error":
            raise TheWorldUserError(
                f"sample {sample_id}: {reason}; raise max_length or set on_truncated=drop to skip such samples"
            )
        if sample_id not in self.dropped:
            self.dropped.append(sample_id)
            logger.warning("dropped sample %s: %s", sample_id, reason)

    def encode(self, sample: Sample) -> EncodedSample | None:
        """Build one sample through the processor; None when it is dropped for length."""
        messages = sample.messages if self.latent_cache is None else [self._gemma_frames_only(m) for m in sample.messages]
        out = self.processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
        input_ids = out["input_ids"][0]
        token_type_ids = out.get("token_type_ids")
        token_type_ids = token_type_ids[0] if token_type_ids is not None else torch.zeros_like(input_ids)
        labels = self.assistant_labels(input_ids)

        if self.max_length is not None and len(input_ids) > self.max_length:
            cut = self.max_length
            broken = [(s, e) for s, e in self._block_ends(input_ids) if e >= cut]
            if broken:
                s, e = broken[0]
                self._reject(
                    sample.id,
                    f"{len(input_ids)} tokens > max_length={cut}, and truncation would cut the image/world block at "
                    f"tokens {s}..{e}",
                )
                return None
            if not (labels[:cut] != IGNORE_INDEX).any():
                self._reject(sample.id, f"{len(input_ids)} tokens > max_length={cut}, and no answer token is left")
                return None
            input_ids, labels, token_type_ids = input_ids[:cut], labels[:cut], token_type_ids[:cut]

        world_pixels = out.get("world_pixel_values") if self.enable_world else None
        world_latents = None
        if self.latent_cache is not None and world_pixels is not None:
            world_latents = torch.stack([self.latent_cache.latents_for(v) for v in sample.visuals()])
            world_pixels = None
        world_imagined = None
        if world_latents is not None and hasattr(self.latent_cache, "imagined_for"):  # world_model.rollout_cache
            world_imagined = torch.stack([self.latent_cache.imagined_for(v) for v in sample.visuals()])
        return EncodedSample(
            id=sample.id,
            input_ids=input_ids,
            labels=labels,
            token_type_ids=token_type_ids,
            pixel_values=out.get("pixel_values"),
            world_pixel_values=world_pixels,
            world_latents=world_latents,
            world_imagined_latents=world_imagined,
        )

    def _gemma_frames_only(self, message: dict[str, Any]) -> dict[str, Any]:
        """The message with each clip's frames all standing for the one frame Gemma sees (decoded once)."""
        from theworld.processing.processor import Clip, load_image_source

        if not isinstance(message.get("content"), list):
            return message
        content = []
        for item in message["content"]:
            if item.get("type") == "video":
                frame = self.processor.gemma_image(Clip(item["video"]))
                frame = load_image_source(str(frame)) if isinstance(frame, (str, os.PathLike)) else frame
                item = {**item, "video": [frame] * len(item["video"])}
            content.append(item)
        return {**message, "content": content}

    # ---------------------------------------------------------------------------------------
    # batch

    def __call__(self, features: list[Sample | EncodedSample]) -> dict[str, torch.Tensor]:
        encoded = [f if isinstance(f, EncodedSample) else self.encode(f) for f in features]
        kept = [e for e in encoded if e is not None]
        if not kept:
            return self._empty_batch()
        return self.pad(kept)

    def pad(self, items: list[EncodedSample]) -> dict[str, torch.Tensor]:
        """Right-padded (B, L) tensors, plus the samples' visual tensors."""
        ids = [e.input_ids.long() for e in items]
        batch = {
            "input_ids": pad_sequence(ids, batch_first=True, padding_value=self.pad_token_id),
            "attention_mask": pad_sequence([torch.ones_like(i) for i in ids], batch_first=True),
            "token_type_ids": pad_sequence([e.token_type_ids.long() for e in items], batch_first=True),
            "labels": pad_sequence([e.labels.long() for e in items], batch_first=True, padding_value=IGNORE_INDEX),
        }
        pixels = [e.pixel_values for e in items if e.pixel_values is not None]
        if pixels:
            batch["pixel_values"] = torch.cat(pixels)
        for key in ("world_pixel_values", "world_latents", "world_imagined_latents"):
            tensors = [(e.id, getattr(e, key)) for e in items if getattr(e, key) is not None]
            if not tensors:
                continue
            frames = {t.shape[2] for _, t in tensors}
            if len(frames) > 1:
                detail = ", ".join(f"{sid}: {t.shape[2]}" for sid, t in tensors)
                raise TheWorldUserError(
                    f"one batch mixes clips of different lengths ({key} frames per sample: {detail}); use "
                    "per_device_train_batch_size=1 or give every clip the same number of frames"
                )
            batch[key] = torch.cat([t for _, t in tensors])
        if self.return_sample_ids:
            batch["sample_ids"] = [item.id for item in items]
        return batch

    def _empty_batch(self) -> dict[str, torch.Tensor]:
        """Every sample of a micro-batch was dropped: one BOS-only row with nothing to learn (loss 0)."""
        bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.pad_token_id
        one = torch.tensor([bos], dtype=torch.long)
        empty = EncodedSample("", one, torch.full_like(one, IGNORE_INDEX), torch.zeros_like(one), None, None, None)
        batch = self.pad([empty])
        return {**batch, "sample_ids": []} if self.return_sample_ids else batch
