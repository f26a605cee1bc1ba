"""Training stages (Prismatic-style, the table in docs/training.md): a named stage decides exactly which parts
of TheWorld learn, through `model.parameters.set_trainable`, the one function that sets `requires_grad`."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field

import torch

from theworld.errors import TheWorldUserError
from theworld.model.parameters import set_trainable
from theworld.training.config import DEFAULT_LORA_TARGETS, STAGES

logger = logging.getLogger(__name__)

LORA_ADAPTER_NAME = "default"
# Which stages train which part of Gemma (the world projector trains in every stage).
LANGUAGE_STAGES = ("finetune", "full")
VISION_STAGES = ("vision", "full")


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))

    def to_dict(self) -> dict:
        return asdict(self)


def _inject_lora(model: torch.nn.Module, settings: LoraSettings) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    # Only the language model's linear layers: SigLIP has q_proj/k_proj too, and they must stay untouched.
    names = "|".join(re.escape(name) for name in settings.target_modules)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=rf"model\.language_model\..*\.({names})",
        bias="none",
    )
    try:
        inject_adapter_in_model(config, model, adapter_name=LORA_ADAPTER_NAME)
    except ValueError as err:  # peft: "Target modules ... not found in the base model"
        raise TheWorldUserError(f"lora_target_modules={settings.target_modules}: {err}") from None


def has_lora(model: torch.nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in model.modules())


def merge_lora(model: torch.nn.Module) -> list[str]:
    """Fold every LoRA adapter into its base layer; returns the changed base weights (the saved adapter holds them)."""
    from peft.tuners.lora import LoraLayer

    merged: list[str] = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        module.merge(safe_merge=True)
        base = module.get_base_layer()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, base)
        merged.append(f"{name}.weight")
    return merged


def lora_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if ".lora_" in k}


def stage_parts(stage: str, use_lora: bool = False, train_cosmos_vae: bool = False) -> set[str]:
    """The parts (`theworld.model.parameters.PARTS`) a stage trains; errors name what does not fit."""
    if stage not in STAGES:
        raise TheWorldUserError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
    if use_lora and stage not in LANGUAGE_STAGES:
        raise TheWorldUserError(f"use_lora needs stage finetune or full: stage {stage} trains no language model")
    if train_cosmos_vae and stage != "full":
        raise TheWorldUserError("train_cosmos_vae is only allowed with stage full")
    parts = {"world_projector"}
    if stage in LANGUAGE_STAGES:
        parts.add("lora" if use_lora else "gemma_language")
    if stage in VISION_STAGES:
        parts.add("gemma_vision")
    if train_cosmos_vae:
        parts.add("cosmos_vae")
    return parts


def apply_stage(
    model: torch.nn.Module,
    stage: str,
    *,
    use_lora: bool = False,
    lora: LoraSettings | None = None,
    train_cosmos_vae: bool = False,
) -> list[str]:
    """Exactly what `stage` trains becomes trainable (LoRA injected first); returns the ordered trainable names."""
    parts = stage_parts(stage, use_lora, train_cosmos_vae)
    if stage == "align" and getattr(model, "world_projector", None) is None:
        raise TheWorldUserError(
            "stage align trains only the world projector, but this model has enable_world=False: "
            "train the Gemma control with stage finetune"
        )
    if train_cosmos_vae and getattr(model, "world_encoder", None) is None:
        raise TheWorldUserError("train_cosmos_vae needs the VAE loaded (cosmos_model_name set)")
    if use_lora and not has_lora(model):
        _inject_lora(model, lora or LoraSettings())
    names = set_trainable(model, parts)
    breakdown = model.parameter_breakdown()  # the counts `theworld params` and get_trainable_parameters report
    trained = ", ".join(c.name for c in breakdown.components if c.trainable)
    logger.info(
        "stage %s%s: %d trainable tensors, %s of %s parameters (%.3f%%): %s",
        stage, " + LoRA" if use_lora else "", len(names), f"{breakdown.trainable:,}", f"{breakdown.total:,}",
        breakdown.trainable_percent, trained,
    )  # fmt: skip
    logger.debug("parameters by component:\n%s", breakdown.table())
    return names


def cast_trainable_to_fp32(model: torch.nn.Module) -> int:
    """Trainable weights become fp32 master copies (the frozen rest keeps its dtype, e.g. bf16)."""
    params = [p for p in model.parameters() if p.requires_grad and p.dtype != torch.float32]
    for param in params:
        param.data = param.data.float()
    return len(params)
