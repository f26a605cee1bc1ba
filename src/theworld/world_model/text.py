"""The world model's fixed text condition: T5 embeddings computed once, stored, T5 released.

Cosmos-Predict2's DiT cross-attends to T5 embeddings of a prompt. TheWorld's world model always
uses one fixed prompt (and, with guidance, one negative prompt), so their embeddings are
computed once by the pipeline's own `encode_prompt` and kept as two small tensors; the T5 encoder
(an 11B model's encoder for the real Cosmos-Predict2) is loaded only for that and released.
`WorldTextCondition.save`/`load` store them (safetensors) with a model or a latent cache.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import Cosmos2VideoToWorldPipeline
from safetensors import safe_open
from safetensors.torch import save_file

from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)

TEXT_CONDITION_NAME = "world_text_condition.safetensors"
"""The file a saved TheWorld folder keeps its world model's text condition in (one prompt per model)."""


def stored_condition_name(prompt: str, negative_prompt: str, max_sequence_length: int) -> str:
    """The file a rollout cache keeps one prompt's text condition in: several prompts share a folder."""
    text = json.dumps([prompt, negative_prompt, max_sequence_length])
    return f"world_text_condition-{hashlib.sha256(text.encode()).hexdigest()[:16]}.safetensors"


@dataclass
class WorldTextCondition:
    """Embeddings of the prompt and negative prompt, each (1, max_sequence_length, text_dim).

    Padding positions are zero, as the pipeline leaves them. `text_encoder` names the T5 they came
    from (a hash of its config and tokenizer), so embeddings of another T5 are never reused.
    """

    prompt: str
    negative_prompt: str
    max_sequence_length: int
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    text_encoder: str

    def describes(self, prompt: str, negative_prompt: str, max_sequence_length: int) -> bool:
        return (self.prompt, self.negative_prompt, self.max_sequence_length) == (
            prompt, negative_prompt, max_sequence_length,
        )  # fmt: skip

    def save(self, path: str | os.PathLike) -> Path:
        """One safetensors file; a folder gets `world_text_condition.safetensors` inside it."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path.mkdir(parents=True, exist_ok=True)
            path = path / TEXT_CONDITION_NAME
        tensors = {
            "prompt_embeds": self.prompt_embeds.detach().float().cpu().contiguous(),
            "negative_prompt_embeds": self.negative_prompt_embeds.detach().float().cpu().contiguous(),
        }
        meta = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "max_sequence_length": str(self.max_sequence_length),
            "text_encoder": self.text_encoder,
        }
        save_file(tensors, str(path), metadata=meta)
        return path

    def save_for_prompt(self, folder: str | os.PathLike) -> Path:
        """Save under this prompt's own name in `folder` (`stored_condition_name`), beside other prompts'."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        name = stored_condition_name(self.prompt, self.negative_prompt, self.max_sequence_length)
        return self.save(Path(folder) / name)

    @classmethod
    def find(
        cls, folder: str | os.PathLike, prompt: str, negative_prompt: str, max_sequence_length: int
    ) -> WorldTextCondition | None:
        """The condition stored in `folder` for this prompt (its own name, else the folder's one
        `world_text_condition.safetensors` when that describes it); None when there is none."""
        for name in (stored_condition_name(prompt, negative_prompt, max_sequence_length), TEXT_CONDITION_NAME):
            path = Path(folder) / name
            if path.is_file():
                condition = cls.load(path)
                if condition.describes(prompt, negative_prompt, max_sequence_length):
                    return condition
        return None

    @classmethod
    def load(cls, path: str | os.PathLike) -> WorldTextCondition:
        path = Path(path)
        if path.is_dir():
            path = path / TEXT_CONDITION_NAME
        if not path.is_file():
            raise TheWorldUserError(f"no stored world text condition at {path}")
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            missing = {"prompt", "negative_prompt", "max_sequence_length", "text_encoder"} - set(meta)
            if missing:
                raise TheWorldUserError(f"{path} is not a world text condition (metadata lacks {sorted(missing)})")
            return cls(
                prompt=meta["prompt"],
                negative_prompt=meta["negative_prompt"],
                max_sequence_length=int(meta["max_sequence_length"]),
                prompt_embeds=handle.get_tensor("prompt_embeds"),
                negative_prompt_embeds=handle.get_tensor("negative_prompt_embeds"),
                text_encoder=meta["text_encoder"],
            )


def text_encoder_id(folder: str | os.PathLike) -> str:
    """A short hash of the T5 encoder's config and the tokenizer files (what decides the embeddings,
    short of hashing the weights)."""
    digest = hashlib.sha256()
    folder = Path(folder)
    for part in ("text_encoder/config.json", "tokenizer/tokenizer.json", "tokenizer/spiece.model"):
        file = folder / part
        if file.is_file():
            digest.update(part.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


class _PipelineText:
    """The attributes `Cosmos2VideoToWorldPipeline.encode_prompt` reads, so that its own code
    (tokenise to max_sequence_length, T5, zero the padding; the default negative prompt) embeds
    the prompts without a pipeline instance."""

    encode_prompt = Cosmos2VideoToWorldPipeline.encode_prompt
    _get_t5_prompt_embeds = Cosmos2VideoToWorldPipeline._get_t5_prompt_embeds
    _execution_device = torch.device("cpu")

    def __init__(self, text_encoder: Any, tokenizer: Any) -> None:
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer


@torch.no_grad()
def encode_text_condition(
    folder: str | os.PathLike,
    prompt: str,
    negative_prompt: str,
    max_sequence_length: int,
    dtype: torch.dtype | None = None,
) -> WorldTextCondition:
    """Load T5 + tokenizer from a Cosmos repo folder, embed both prompts with the pipeline's own
    `encode_prompt`, then release T5 (nothing keeps a reference to it).

    Embedding a prompt generates nothing, so no guardrail runs here: it runs when a world model is
    set up to roll out (`WorldModel.from_pretrained`), on every set-up.
    """
    from transformers import T5EncoderModel, T5TokenizerFast

    folder = Path(folder)
    for part in ("text_encoder", "tokenizer"):
        if not (folder / part).is_dir():
            raise TheWorldUserError(
                f"{folder} has no {part}/ folder: the world model's text condition is computed once with the "
                "repo's T5 (text_encoder/ + tokenizer/), or pass a stored WorldTextCondition"
            )
    tokenizer = T5TokenizerFast.from_pretrained(folder / "tokenizer")
    text_encoder = T5EncoderModel.from_pretrained(folder / "text_encoder", dtype=dtype or torch.float32).eval()
    pipe = _PipelineText(text_encoder, tokenizer)
    prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(
        prompt=prompt,
        negative_prompt=negative_prompt,
        do_classifier_free_guidance=True,
        num_videos_per_prompt=1,
        max_sequence_length=max_sequence_length,
        device=torch.device("cpu"),
    )
    condition = WorldTextCondition(
        prompt=prompt,
        negative_prompt=negative_prompt,
        max_sequence_length=max_sequence_length,
        prompt_embeds=prompt_embeds.float().clone(),
        negative_prompt_embeds=negative_prompt_embeds.float().clone(),
        text_encoder=text_encoder_id(folder),
    )
    del pipe, text_encoder, tokenizer
    gc.collect()
    logger.info(
        "embedded the world model's text condition (%d tokens, dim %d); T5 released",
        max_sequence_length, condition.prompt_embeds.shape[-1],
    )  # fmt: skip
    return condition


def describe(condition: WorldTextCondition) -> dict[str, Any]:
    """The condition's identity for cache keys: prompts, length, T5, and a hash of the embeddings."""
    digest = hashlib.sha256()
    for tensor in (condition.prompt_embeds, condition.negative_prompt_embeds):
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return {
        "prompt": condition.prompt,
        "negative_prompt": condition.negative_prompt,
        "max_sequence_length": condition.max_sequence_length,
        "text_encoder": condition.text_encoder,
        "embeddings_sha256": digest.hexdigest()[:16],
    }

