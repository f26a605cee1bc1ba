"""What differs between transformers 4.57 and 5.x, in one place: TheWorld runs under both, and both read its saves."""

from __future__ import annotations

import inspect

import torch
from transformers import Gemma3ForConditionalGeneration, GenerationMixin

try:  # transformers 5: init helpers that skip tensors already loaded from the checkpoint
    from transformers import initialization as init
except ImportError:  # transformers 4.x initialises only modules with missing weights: torch's own init
    from torch.nn import init

__all__ = ["GENERATE_PASSES_FIRST_ITERATION", "LEGACY_KEY_MAPPING", "gemma3_key_mapping", "init", "use_portable_key_layout"]

# transformers 5's `generate` tells `prepare_inputs_for_generation` which step is the prefill.
GENERATE_PASSES_FIRST_ITERATION = "is_first_iteration" in inspect.signature(
    GenerationMixin.prepare_inputs_for_generation
).parameters

# --------------------------------------------------------------------------------------------
# checkpoints both transformers 4.57 and 5 read
#
# Gemma 3 checkpoints on the Hub name SigLIP's weights `vision_tower.vision_model.*`. transformers 5
# reads that, but a model it builds from scratch saves `vision_tower.*` without `vision_model`,
# which 4.57 does not recognise: it re-initialises the vision tower with only a warning. So saves
# are made in the original layout, and under 4.x loads also accept the other one.

# transformers 4.x renames checkpoint keys on load through `key_mapping` (regex -> replacement,
# first match wins); 5.x has its own conversion tables and no such attribute to extend.
LEGACY_KEY_MAPPING = bool(getattr(Gemma3ForConditionalGeneration, "_checkpoint_conversion_mapping", None))
_VISION_TOWER_WITHOUT_VISION_MODEL = r"^(?:model\.)?vision_tower\.(?!vision_model\.)"


def gemma3_key_mapping(model_class: type = Gemma3ForConditionalGeneration) -> dict[str, str] | None:
    """Under 4.x, the `key_mapping` that loads Gemma 3 weights saved in either layout; None under 5.x."""
    if not LEGACY_KEY_MAPPING:
        return None
    mapping = {_VISION_TOWER_WITHOUT_VISION_MODEL: "model.vision_tower.vision_model."}
    mapping.update(model_class._checkpoint_conversion_mapping)
    return mapping


def use_portable_key_layout(model: torch.nn.Module) -> None:
    """Make transformers 5's `save_pretrained` write Gemma 3's original key layout; no-op under 4.x."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
    except ImportError:
        return
    model._weight_conversions = get_model_conversion_mapping(model, add_legacy=False)
