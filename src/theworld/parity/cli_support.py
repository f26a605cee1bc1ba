"""What `theworld parity` needs around the parity core: which model a name means, loading it,
building the inputs, and running the comparison into one report.

A model is named by a checkpoint directory or hub id, loaded as `TheWorld` (a Gemma 3
checkpoint, a saved TheWorld directory or a world adapter directory), or as plain
`Gemma3ForConditionalGeneration` with a `gemma:` prefix. As the reference, `gemma` alone means
Gemma 3 from model A's own base checkpoint. Everything here also runs under transformers 4.57.

Inputs are built with the processor saved in model A's directory (or its base checkpoint's):
`text` (a text-only chat) and `image` (an image chat) in Gemma's own prompt format, so a TheWorld
can be compared with plain Gemma; `world` (a 5-frame clip with its world block), which needs two
world-enabled TheWorld models; or a JSON file holding a list of chat messages, whose image paths
are read relative to the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from theworld.errors import TheWorldUserError
from theworld.model.checkpoints import looks_local, resolve_base_checkpoint
from theworld.parity.buffers import BufferIssue, audit_buffers
from theworld.parity.divergence import Divergence, find_first_divergence
from theworld.parity.logits import LogitReport, compare_logits
from theworld.parity.report import NOT_RUN, render_parity_report

logger = logging.getLogger(__name__)

__all__ = [
    "BUILTIN_INPUTS",
    "GEMMA_PREFIX",
    "ModelSpec",
    "ParityResult",
    "build_inputs",
    "load_model",
    "parse_model_spec",
    "run_parity",
    "theworld_name_map",
]

GEMMA_PREFIX = "gemma:"
GEMMA_REFERENCE = "gemma"
BUILTIN_INPUTS = ("text", "image", "world")
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


# --------------------------------------------------------------------------------------------
# which model a name means


def parse_model_spec(text: str, *, model_a: ModelSpec | None = None) -> ModelSpec:
    """`DIR_OR_ID` -> TheWorld, `gemma:DIR_OR_ID` -> plain Gemma 3; as the reference (`model_a`
    given), `gemma` alone -> plain Gemma 3 from model A's base checkpoint."""
    text = text.strip()
    if not text:
        raise TheWorldUserError("an empty model name was given")
    if model_a is not None and text == GEMMA_REFERENCE:
        return ModelSpec(text, "gemma", gemma_base_of(model_a.source))
    if text.startswith(GEMMA_PREFIX):
        source = text[len(GEMMA_PREFIX) :]
        if not source:
            raise TheWorldUserError(f"{text!r}: give a checkpoint after '{GEMMA_PREFIX}'")
        _check_exists(source)
        return ModelSpec(text, "gemma", source)
    _check_exists(text)
    return ModelSpec(text, "theworld", text)


def _check_exists(source: str) -> None:
    """A local path must exist; anything else must look like a hub id (owner/name)."""
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "config.json")):
            raise TheWorldUserError(f"{source} is a directory without config.json: not a checkpoint")
        return
    if looks_local(source):
        raise TheWorldUserError(f"no checkpoint directory at {source}")


def read_config_dict(source: str) -> dict[str, Any]:
    from transformers import PretrainedConfig

    try:
        config_dict, _ = PretrainedConfig.get_config_dict(source)
    except OSError as err:
        raise TheWorldUserError(f"cannot read the config of {source}: {err}") from err
    return config_dict


def gemma_base_of(source: str) -> str:
    """The Gemma 3 checkpoint a model comes from: itself for a Gemma 3 checkpoint, else the
    `base_model_name_or_path` of its TheWorld config."""
    config = read_config_dict(source)
    model_type = config.get("model_type")
    if model_type == "gemma3":
        return source
    base = config.get("base_model_name_or_path")
    if model_type == "theworld" and base:
        base = resolve_base_checkpoint(base, source)
        _check_exists(base)
        return base
    raise TheWorldUserError(
        f"--reference gemma needs model A's base Gemma 3 checkpoint, but {source} "
        + ("has no base_model_name_or_path in its config" if model_type == "theworld" else f"is a {model_type!r} model")
        + ": name the reference explicitly with 'gemma:PATH'"
    )


# --------------------------------------------------------------------------------------------
# loading


def load_model(
    spec: ModelSpec,
    *,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "eager",
    cosmos_model_name: str | None = None,
) -> nn.Module:
    """Load a model for comparison (eval mode). Loading errors become `TheWorldUserError`."""
    from theworld import TheWorld

    common = dict(dtype=dtype, attn_implementation=attn_implementation)
    try:
        if spec.kind == "gemma":
            model = _load_gemma(spec.source, **common)
        else:
            _check_theworld_loadable(spec.source)
            world_kwargs = {"cosmos_model_name": cosmos_model_name} if cosmos_model_name else {}
            model = TheWorld.from_pretrained(spec.source, **world_kwargs, **common)
    except TheWorldUserError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise TheWorldUserError(f"cannot load {spec.text}: {type(err).__name__}: {err}") from err
    # Both sides frozen: torch.matmul picks its kernel by requires_grad (Gemma's image projector
    # runs mm or bmm), so a trainable and a frozen copy of the same weights can differ in the last bits.
    return model.eval().requires_grad_(False)


def _check_theworld_loadable(source: str) -> None:
    """TheWorld built from a Gemma 3 checkpoint takes its world token ids from the tokenizer there."""
    if os.path.isdir(source) and not _has_processor_files(source):
        if read_config_dict(source).get("model_type") == "gemma3":
            raise TheWorldUserError(
                f"{source} has no tokenizer files: TheWorld needs them to resolve its world token ids "
                f"(load it as plain Gemma 3 with '{GEMMA_PREFIX}{source}')"
            )


def _load_gemma(source: str, **kwargs: Any) -> nn.Module:
    """Plain Gemma 3. Under transformers 4.x, with the key mapping and rope fields that let it read
    a checkpoint written by transformers 5 (which 4.x would otherwise load with a random vision
    tower and default rope, warning only)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from theworld.model.configuration import add_legacy_rope_fields
    from theworld.model.compat import gemma3_key_mapping

    config_dict = read_config_dict(source)
    if config_dict.get("model_type") != "gemma3":
        raise TheWorldUserError(
            f"{source} holds a {config_dict.get('model_type')!r} model, not Gemma 3: load it without "
            f"'{GEMMA_PREFIX}' (as TheWorld), or use --reference gemma for its base checkpoint"
        )
    key_mapping = gemma3_key_mapping()
    if key_mapping is not None:  # transformers 4.x
        config = Gemma3Config.from_dict(add_legacy_rope_fields(config_dict))
        return Gemma3ForConditionalGeneration.from_pretrained(source, config=config, key_mapping=key_mapping, **kwargs)
    return Gemma3ForConditionalGeneration.from_pretrained(source, **kwargs)


def is_world_model(model: nn.Module) -> bool:
    """A TheWorld with its world path built."""
    return getattr(model, "world_projector", None) is not None


# --------------------------------------------------------------------------------------------
# inputs


def processor_source(spec: ModelSpec) -> str:
    """Model A's directory if it holds processor files, else its base checkpoint."""
    source = spec.source
    if os.path.isdir(source) and not _has_processor_files(source):
        config = read_config_dict(source)
        base = config.get("base_model_name_or_path")
        if base:
            return resolve_base_checkpoint(base, source)
        raise TheWorldUserError(f"{source} holds no tokenizer/processor files and names no base checkpoint")
    return source


def _has_processor_files(directory: str) -> bool:
    return any(os.path.isfile(os.path.join(directory, name)) for name in ("tokenizer.json", "tokenizer_config.json"))


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
        if "://" in value:
            return value
        file = (path.parent / value).expanduser()
        if not file.is_file():
            raise TheWorldUserError(f"inputs file {path}: image {value} not found (looked at {file})")
        return str(file)

    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for item in content:
            if not isinstance(item, dict):
                raise TheWorldUserError(f"inputs file {path}: a content item must be an object, got {item!r}")
            if item.get("type") == "image":
                for key in ("image", "path", "url"):
                    if key in item:
                        item[key] = resolve(item[key])
            elif item.get("type") == "video":
                frames = item.get("video")
                if isinstance(frames, str):  # a video file
                    item["video"] = resolve(frames)
                    continue
                if not isinstance(frames, list):
                    raise TheWorldUserError(f"inputs file {path}: a video item needs a list of frame paths or a video file")
                item["video"] = [resolve(frame) for frame in frames]
    return messages


def build_inputs(
    inputs: str,
    spec_a: ModelSpec,
    model_a: nn.Module,
    model_b: nn.Module,
    *,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, torch.Tensor], str]:
    """(model inputs, a one-line description) for `inputs` = text | image | world | FILE.json."""
    from theworld import TheWorldProcessor
    from theworld.testing.inputs import clip_chat, image_chat

    world_a, world_b = is_world_model(model_a), is_world_model(model_b)
    if inputs == "world":
        if not world_a:
            raise TheWorldUserError("--inputs world needs model A to be a world-enabled TheWorld (enable_world=True)")
        if not world_b:
            raise TheWorldUserError("--inputs world needs the reference to be a world-enabled TheWorld too")
        for label, model in (("A", model_a), ("B", model_b)):
            if model.world_encoder is None:
                raise TheWorldUserError(
                    f"--inputs world: model {label} has no world encoder: pass --cosmos-model-name, or save the "
                    "model with its world_encoder/ folder"
                )
        chat, with_world, what = clip_chat(0, frames=5), True, "world: a 5-frame clip with its world block"
    elif inputs == "text":
        chat, with_world, what = TEXT_CHAT, False, "text: a text-only chat"
    elif inputs == "image":
        chat, with_world, what = image_chat(0, question="Describe this scene."), False, "image: an image chat (Gemma's prompt format)"
    elif inputs.endswith(".json") or os.path.exists(inputs):
        chat = load_chat_file(inputs)
        # World blocks only when both models can take them; otherwise Gemma's own format.
        with_world = world_a and world_b and model_a.world_encoder is not None and model_b.world_encoder is not None
        what = f"{inputs}: {len(chat)} chat message(s)" + (" with world blocks" if with_world else " (Gemma's prompt format)")
    else:
        raise TheWorldUserError(f"--inputs {inputs!r}: expected one of {', '.join(BUILTIN_INPUTS)} or a .json file")

    source = processor_source(spec_a)
    try:
        if world_a:
            processor = TheWorldProcessor.from_model_config(source, model_a.config)
        else:
            processor = TheWorldProcessor.from_pretrained(source, enable_world=False)
    except (OSError, ValueError) as err:
        raise TheWorldUserError(f"cannot load the processor of {source}: {type(err).__name__}: {err}") from err
    processor.enable_world = with_world
    try:
        batch = processor.apply_chat_template(
            chat, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True
        )
    except (OSError, ValueError, TypeError) as err:
        raise TheWorldUserError(f"cannot build inputs from {inputs}: {type(err).__name__}: {err}") from err
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    if "pixel_values" in tensors:
        tensors["pixel_values"] = tensors["pixel_values"].to(dtype)
    return tensors, what


# --------------------------------------------------------------------------------------------
# comparing


def theworld_name_map(model_a: nn.Module, model_b: nn.Module):
    """Module names of B as A's: TheWorld and Gemma 3 share every Gemma module name; the world
    modules exist only in TheWorld and are left out when the other model has none."""
    drop = not (is_world_model(model_a) and is_world_model(model_b))

    def name_map(name: str) -> str | None:
        if drop and name.split(".", 1)[0] in WORLD_MODULES:
            return None
        return name

    return name_map


def _drop_world_modules(divergence: Divergence) -> list[str]:
    """Remove world modules from the 'only in A/B' lists (expected when one side is plain Gemma)."""
    dropped = []
    for attr in ("only_in_a", "only_in_b"):
        kept = []
        for name in getattr(divergence, attr):
            (dropped if name.split(".", 1)[0] in WORLD_MODULES else kept).append(name)
        setattr(divergence, attr, kept)
    return dropped


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
        body = render_parity_report(
            logits=self.logits, divergence=self.divergence, buffer_issues=self.buffer_issues, labels=labels
        )
        head, _, rest = body.partition("\n\n")
        extra = []
        if inputs:
            extra.append(f"- inputs: {inputs}")
        extra += [f"- note: {note}" for note in self.notes]
        if extra:
            # after the model lines of the header
            lines = rest.split("\n")
            insert = next((i for i, line in enumerate(lines) if not line.startswith("- ")), len(lines))
            rest = "\n".join(lines[:insert] + extra + lines[insert:])
        verdict = "PASS" if self.passed else "FAIL"
        summary = f"**{verdict}**: {self.logits.message}"
        if self.buffer_issues:
            summary += f"; {self.buffer_errors} buffer error(s)"
        return f"{head}\n\n{rest.rstrip()}\n\n{summary}\n"


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
    """Compare logits; on a difference find the first divergent module (model A's names);
    with `audit`, audit both models' buffers."""
    report = compare_logits(model_a, model_b, inputs, atol=atol)
    result = ParityResult(logits=report)
    if divergence and not report.passed:
        found = find_first_divergence(model_a, model_b, inputs, atol=atol, name_map=theworld_name_map(model_a, model_b))
        if found is not None:
            dropped = _drop_world_modules(found)
            if dropped:
                result.notes.append(
                    f"{len(dropped)} world module(s) exist in only one model (TheWorld vs plain Gemma) and were not compared"
                )
        elif report.shape_match:
            result.notes.append(
                "no module output differs although the logits do: the difference arises outside the modules "
                "(input preparation, masks, or the top-level forward)"
            )
        result.divergence = found
    if audit:
        result.buffer_issues = {labels[0]: audit_buffers(model_a), labels[1]: audit_buffers(model_b)}
    return result
