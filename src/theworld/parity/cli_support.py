"""`theworld parity` around the parity core: model names, loading, inputs from model A's processor,
and one report (docs/parity.md). Runs under transformers 4.57 too."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from theworld.errors import TheWorldUserError
from theworld.model.checkpoints import check_model_path, has_tokenizer, read_config_dict
from theworld.parity.buffers import BufferIssue, audit_buffers
from theworld.parity.divergence import Divergence, find_first_divergence
from theworld.parity.logits import LogitReport, compare_logits
from theworld.parity.report import NOT_RUN, render_parity_report

GEMMA_PREFIX = "gemma:"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Modules TheWorld has and Gemma 3 does not: never compared against a plain Gemma model.
WORLD_MODULES = ("world_projector", "world_encoder")
TEXT_CHAT = [{"role": "user", "content": [{"type": "text", "text": "Which way is the ball moving? Describe the scene."}]}]


@dataclass(frozen=True)
class ModelSpec:
    """A model as named on the command line, resolved: `kind` is "theworld" or "gemma"."""

    text: str
    kind: str
    source: str

    @property
    def label(self) -> str:
        return f"{self.source} ({'Gemma3ForConditionalGeneration' if self.kind == 'gemma' else 'TheWorld'})"


def _existing(source: str) -> str:
    return check_model_path(source, not_found="no checkpoint directory at {name}")


def parse_model_spec(text: str, *, model_a: tuple[ModelSpec, nn.Module] | None = None) -> ModelSpec:
    """`DIR_OR_ID` -> TheWorld, `gemma:DIR_OR_ID` -> plain Gemma 3; as the reference (`model_a`, its
    spec and the loaded model, given), `gemma` alone -> plain Gemma 3 from model A's base checkpoint."""
    text = text.strip()
    if not text:
        raise TheWorldUserError("an empty model name was given")
    if model_a is not None and text == "gemma":
        spec, model = model_a
        # The loaded config already names the base (absolute, as resolved); nothing is read again.
        base = spec.source if spec.kind == "gemma" else model.config.base_model_name_or_path
        if not base:
            raise TheWorldUserError(
                f"--reference gemma needs model A's base Gemma 3 checkpoint, but {spec.source} has no "
                f"base_model_name_or_path in its config: name the reference explicitly with '{GEMMA_PREFIX}PATH'"
            )
        return ModelSpec(text, "gemma", _existing(base))
    if text.startswith(GEMMA_PREFIX):
        if text == GEMMA_PREFIX:
            raise TheWorldUserError(f"{text!r}: give a checkpoint after '{GEMMA_PREFIX}'")
        return ModelSpec(text, "gemma", _existing(text[len(GEMMA_PREFIX) :]))
    return ModelSpec(text, "theworld", _existing(text))


def load_model(
    spec: ModelSpec, *, dtype: torch.dtype = torch.float32, attn_implementation: str = "eager", cosmos_model_name: str | None = None
) -> nn.Module:
    """Load a model for comparison, in eval mode and frozen: torch.matmul picks its kernel by
    requires_grad, so a trainable and a frozen copy of the same weights can differ in the last bits."""
    from theworld import TheWorld

    common = dict(dtype=dtype, attn_implementation=attn_implementation)
    try:
        if spec.kind == "gemma":
            model = _load_gemma(spec.source, **common)
        else:
            world = {"cosmos_model_name": cosmos_model_name} if cosmos_model_name else {}
            model = TheWorld.from_pretrained(spec.source, **world, **common)
    except (OSError, ValueError, KeyError) as err:
        raise TheWorldUserError(f"cannot load {spec.text}: {type(err).__name__}: {err}") from err
    return model.eval().requires_grad_(False)


def _load_gemma(source: str, **kwargs: Any) -> nn.Module:
    """Plain Gemma 3; under transformers 4.x with the key mapping and rope fields that let it read
    a transformers 5 checkpoint (4.x would load a random vision tower, warning only)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from theworld.model.compat import gemma3_key_mapping
    from theworld.model.configuration import add_legacy_rope_fields

    config_dict = read_config_dict(source)
    if config_dict.get("model_type") != "gemma3":
        raise TheWorldUserError(
            f"{source} holds a {config_dict.get('model_type')!r} model, not Gemma 3: load it without "
            f"'{GEMMA_PREFIX}' (as TheWorld), or use --reference gemma for its base checkpoint"
        )
    key_mapping = gemma3_key_mapping()
    if key_mapping is not None:  # transformers 4.x
        kwargs.update(config=Gemma3Config.from_dict(add_legacy_rope_fields(config_dict)), key_mapping=key_mapping)
    return Gemma3ForConditionalGeneration.from_pretrained(source, **kwargs)


def load_chat_file(path: str | os.PathLike) -> list[dict]:
    """A JSON list of chat messages; image (and clip frame) paths relative to the file are resolved."""
    path = Path(path)
    try:
        messages = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TheWorldUserError(f"cannot read inputs file {path}: {err}") from err
    except json.JSONDecodeError as err:
        raise TheWorldUserError(f"inputs file {path} is not valid JSON: {err}") from err
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise TheWorldUserError(f"inputs file {path} must hold a non-empty list of chat messages ({{'role': ..., 'content': ...}})")

    def resolve(value: Any) -> str:
        if not isinstance(value, str):
            raise TheWorldUserError(f"inputs file {path}: an image must be given as a path, got {value!r}")
        file = (path.parent / value).expanduser()
        if "://" not in value and not file.is_file():
            raise TheWorldUserError(f"inputs file {path}: image {value} not found (looked at {file})")
        return value if "://" in value else str(file)

    for item in (i for m in messages if isinstance(m.get("content"), list) for i in m["content"]):
        if not isinstance(item, dict):
            raise TheWorldUserError(f"inputs file {path}: a content item must be an object, got {item!r}")
        if item.get("type") == "image":
            item.update({key: resolve(item[key]) for key in ("image", "path", "url") if key in item})
        elif item.get("type") == "video":
            frames = item.get("video")  # a video file or a list of frames
            if not isinstance(frames, (str, list)):
                raise TheWorldUserError(f"inputs file {path}: a video item needs a list of frame paths or a video file")
            item["video"] = resolve(frames) if isinstance(frames, str) else [resolve(frame) for frame in frames]
    return messages


def build_inputs(
    inputs: str, spec_a: ModelSpec, model_a: nn.Module, model_b: nn.Module, *, dtype: torch.dtype = torch.float32
) -> tuple[dict[str, torch.Tensor], str]:
    """(model inputs, a one-line description) for `inputs` = text | image | world | FILE.json."""
    from theworld import TheWorldProcessor
    from theworld.testing.inputs import clip_chat, image_chat

    builtin = {
        "text": (TEXT_CHAT, False, "text: a text-only chat"),
        "image": (image_chat(0, question="Describe this scene."), False, "image: an image chat (Gemma's prompt format)"),
        "world": (clip_chat(0, frames=5), True, "world: a 5-frame clip with its world block"),
    }
    if inputs == "world":
        for label, model in (("model A", model_a), ("the reference", model_b)):
            if getattr(model, "world_projector", None) is None:
                raise TheWorldUserError(f"--inputs world needs {label} to be a world-enabled TheWorld (enable_world=True)")
            if model.world_encoder is None:
                raise TheWorldUserError(
                    f"--inputs world: {label} has no world encoder: pass --cosmos-model-name, or save the "
                    "model with its world_encoder/ folder"
                )
    if inputs in builtin:
        chat, with_world, what = builtin[inputs]
    elif inputs.endswith(".json") or os.path.exists(inputs):
        chat = load_chat_file(inputs)
        with_world = all(getattr(m, "world_encoder", None) is not None for m in (model_a, model_b))  # both must take them
        what = f"{inputs}: {len(chat)} chat message(s)" + (" with world blocks" if with_world else " (Gemma's prompt format)")
    else:
        raise TheWorldUserError(f"--inputs {inputs!r}: expected one of {', '.join(builtin)} or a .json file")

    # Model A's tokenizer; a folder without one (a saved model, an adapter) uses its base checkpoint's.
    source = spec_a.source
    if not has_tokenizer(source):
        source = getattr(model_a.config, "base_model_name_or_path", None)
        if not source:
            raise TheWorldUserError(f"{spec_a.source} holds no tokenizer/processor files and names no base checkpoint")
    try:
        if getattr(model_a, "world_projector", None) is not None:
            processor = TheWorldProcessor.from_model_config(source, model_a.config)
        else:
            processor = TheWorldProcessor.from_pretrained(source, enable_world=False)
        processor.enable_world = with_world
        batch = processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True)
    except (OSError, ValueError, TypeError) as err:
        raise TheWorldUserError(f"cannot build inputs from {inputs} with the processor of {source}: {type(err).__name__}: {err}") from err
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    if "pixel_values" in tensors:
        tensors["pixel_values"] = tensors["pixel_values"].to(dtype)
    return tensors, what


@dataclass
class ParityResult:
    logits: LogitReport
    divergence: Divergence | None | object = NOT_RUN
    buffer_issues: dict[str, list[BufferIssue]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def buffer_errors(self) -> int:
        return sum(1 for issues in self.buffer_issues.values() for i in issues if i.severity == "error")

    @property
    def passed(self) -> bool:
        """Logits within the tolerance and, when buffers were audited, no buffer error."""
        return self.logits.passed and self.buffer_errors == 0

    def render(self, labels: tuple[str, str] | None = None, inputs: str | None = None) -> str:
        extra = ([f"- inputs: {inputs}"] if inputs else []) + [f"- note: {note}" for note in self.notes]
        body = render_parity_report(
            logits=self.logits, divergence=self.divergence, buffer_issues=self.buffer_issues, labels=labels, extra=extra
        )
        summary = f"**{'PASS' if self.passed else 'FAIL'}**: {self.logits.message}"
        if self.buffer_issues:
            summary += f"; {self.buffer_errors} buffer error(s)"
        return f"{body.rstrip()}\n\n{summary}\n"


def run_parity(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: Mapping[str, Any],
    *,
    atol: float = 0.0,
    divergence: bool = True,
    audit: bool = False,
    labels: tuple[str, str] = ("A", "B"),
) -> ParityResult:
    """Compare logits; on a difference find the first divergent module (TheWorld and Gemma 3 share
    every Gemma module name); with `audit`, audit both models' buffers."""
    result = ParityResult(logits=compare_logits(model_a, model_b, inputs, atol=atol))
    if divergence and not result.logits.passed:
        found = find_first_divergence(model_a, model_b, inputs, atol=atol)
        if found is not None:
            # World modules exist in only one model when the other is plain Gemma: expected, not a finding.
            dropped = [n for n in found.only_in_a + found.only_in_b if n.split(".", 1)[0] in WORLD_MODULES]
            found.only_in_a = [n for n in found.only_in_a if n not in dropped]
            found.only_in_b = [n for n in found.only_in_b if n not in dropped]
            if dropped:
                result.notes.append(
                    f"{len(dropped)} world module(s) exist in only one model (TheWorld vs plain Gemma) and were not compared"
                )
        elif result.logits.shape_match:
            result.notes.append(
                "no module output differs although the logits do: the difference arises outside the modules "
                "(input preparation, masks, or the top-level forward)"
            )
        result.divergence = found
    if audit:
        result.buffer_issues = {labels[0]: audit_buffers(model_a), labels[1]: audit_buffers(model_b)}
    return result
