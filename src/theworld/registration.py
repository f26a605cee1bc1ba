"""Registers TheWorld with the transformers Auto classes and Gemma 3's checkpoint key renaming.

As Gemma 3 is registered: `AutoModel` -> the base model (`TheWorldModel`, Gemma 3's trunk),
`AutoModelForCausalLM` and `AutoModelForImageTextToText` -> `TheWorld`, `AutoProcessor` ->
`TheWorldProcessor`.

transformers 5 renames on-disk Gemma 3 keys through a table keyed by `model_type` (and, for base
models, by class name); a new model type gets no renaming and every Gemma weight would load as
missing (random) with only a warning. TheWorld therefore registers Gemma 3's own tables.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

from theworld.model.configuration import TheWorldConfig
from theworld.model.modeling import TheWorld, TheWorldModel
from theworld.processing.processor import TheWorldProcessor

__all__ = ["TheWorld", "TheWorldConfig", "TheWorldModel", "TheWorldProcessor", "register_auto_classes"]

# Auto class -> the TheWorld class it loads (Gemma 3: Gemma3Model, Gemma3ForConditionalGeneration x2).
AUTO_MODEL_CLASSES = ((AutoModel, TheWorldModel), (AutoModelForCausalLM, TheWorld), (AutoModelForImageTextToText, TheWorld))

_registered = False


def register_auto_classes() -> None:
    global _registered
    if _registered:
        return
    AutoConfig.register(TheWorldConfig.model_type, TheWorldConfig, exist_ok=True)
    for auto_class, model_class in AUTO_MODEL_CLASSES:
        auto_class.register(TheWorldConfig, model_class, exist_ok=True)
    AutoProcessor.register(TheWorldConfig, TheWorldProcessor, exist_ok=True)
    _register_key_renaming()
    _registered = True


def _register_key_renaming() -> None:
    try:
        from transformers.conversion_mapping import (
            get_checkpoint_conversion_mapping,
            register_checkpoint_conversion_mapping,
        )
    except ImportError:  # transformers 4.x: the class attribute `_checkpoint_conversion_mapping` is inherited
        return
    for ours, gemmas in ((TheWorldConfig.model_type, "gemma3"), (TheWorldModel.__name__, "Gemma3Model")):
        mapping = get_checkpoint_conversion_mapping(gemmas)
        if mapping is not None:
            register_checkpoint_conversion_mapping(ours, mapping, overwrite=True)
