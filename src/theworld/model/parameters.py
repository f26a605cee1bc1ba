"""Which parts of TheWorld train (`set_trainable`, the one setter of `requires_grad`), and their parameter counts."""

from collections.abc import Collection
from dataclasses import dataclass, field

from torch import nn

# Trainable part -> its modules. Each part with a freeze flag (`freeze_<part>`) is recorded in the config.
PARTS: dict[str, tuple[str, ...]] = {
    "world_projector": ("world_projector",),
    "gemma_vision": ("model.vision_tower", "model.multi_modal_projector"),
    "gemma_language": ("model.language_model", "lm_head"),
    "cosmos_vae": ("world_encoder",),
    "lora": (),  # LoRA adapters on the language model: the parameters named `*.lora_*`
}
FLAGGED_PARTS = ("gemma_vision", "gemma_language", "cosmos_vae")


def trainable_parts(config) -> set[str]:
    """The parts `from_pretrained` leaves trainable: the world projector, and what the freeze flags free."""
    return {"world_projector"} | {part for part in FLAGGED_PARTS if not getattr(config, f"freeze_{part}")}


def set_trainable(model: nn.Module, parts: Collection[str]) -> list[str]:
    """Exactly the named parts train (parts the model lacks are skipped); returns the trainable names."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown trainable parts {unknown}; known: {sorted(PARTS)}")
    model.requires_grad_(False)
    for part in parts:
        for path in PARTS[part]:
            module = getattr(model, path) if "." not in path else model.get_submodule(path)
            if module is not None:
                module.requires_grad_(True)
    if "lora" in parts:
        for name, param in model.named_parameters():
            param.requires_grad_(param.requires_grad or ".lora_" in name)
    for part in FLAGGED_PARTS:
        setattr(model.config, f"freeze_{part}", part not in parts)
    return [name for name, param in model.named_parameters() if param.requires_grad]

# (component, parameter-name prefixes); the first match wins, so the narrower rows come first.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SigLIP vision tower", ("model.vision_tower.",)),
    ("image projector", ("model.multi_modal_projector.",)),
    ("embeddings / LM head", ("model.language_model.embed_tokens.", "lm_head.")),
    ("language model", ("model.language_model.",)),
    ("VAE encoder", ("world_encoder.",)),
    ("temporal embeddings", ("world_projector.temporal_embedding", "world_projector.rollout_temporal_embedding")),
    ("world projector", ("world_projector.",)),
)
LORA = "LoRA adapters"
OTHER = "other"


@dataclass
class ComponentCount:
    name: str
    total: int = 0
    trainable: int = 0

    @property
    def status(self) -> str:
        if self.trainable == 0:
            return "frozen"
        return "trainable" if self.trainable == self.total else f"partly ({self.trainable:,} trainable)"


@dataclass
class ParameterBreakdown:
    """Per-component parameter counts; `total` and `trainable` are over unique parameters."""

    components: list[ComponentCount] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(c.total for c in self.components)

    @property
    def trainable(self) -> int:
        return sum(c.trainable for c in self.components)

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def __getitem__(self, name: str) -> ComponentCount:
        return {component.name: component for component in self.components}[name]

    def to_dict(self) -> dict:
        return {
            "components": [
                {"name": c.name, "parameters": c.total, "trainable": c.trainable, "status": c.status}
                for c in self.components
            ],
            "total": self.total,
            "trainable": self.trainable,
        }

    def table(self) -> str:
        """A plain-text table: component, parameters, trainable or frozen, share of all parameters."""
        total = max(self.total, 1)
        rows = [(c.name, f"{c.total:,}", c.status, f"{100.0 * c.total / total:.2f}%") for c in self.components]
        rows.append(("total", f"{self.total:,}", f"{self.trainable:,} trainable ({self.trainable_percent:.3f}%)", "100.00%"))
        header = ("component", "parameters", "trainable", "share")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]

        def line(row: tuple[str, ...]) -> str:
            return "  ".join(
                cell.rjust(width) if i in (1, 3) else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))
            ).rstrip()

        rule = "  ".join("-" * width for width in widths)
        return "\n".join([line(header), rule, *(line(row) for row in rows[:-1]), rule, line(rows[-1])])


def parameter_breakdown(model: nn.Module) -> ParameterBreakdown:
    """Count `model`'s unique parameters per component, in `COMPONENTS` order (empty ones left out)."""
    counts = {name: ComponentCount(name) for name in [c for c, _ in COMPONENTS] + [LORA, OTHER]}
    for name, param in model.named_parameters():  # tied parameters appear once, under their first name
        component = next((c for c, prefixes in COMPONENTS if name.startswith(prefixes)), OTHER)
        count = counts[LORA if ".lora_" in name else component]
        count.total += param.numel()
        count.trainable += param.numel() if param.requires_grad else 0
    embeddings = counts["embeddings / LM head"]
    lm_head = getattr(model, "lm_head", None)
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if lm_head is not None and embed is not None:
        embeddings.name += " (tied)" if lm_head.weight is embed.weight else " (untied)"
    return ParameterBreakdown([c for c in counts.values() if c.total])
