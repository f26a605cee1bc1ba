"""Registers TheWorld with the transformers Auto classes (as Gemma 3 is registered) and with Gemma 3's
checkpoint key renaming: transformers 5 renames on-disk keys by `model_type`, and a new model type
would otherwise load every Gemma weight as missing (random) with only a warning.
"""

from __future__ import annotations

import functools

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

from theworld.model.configuration import TheWorldConfig
from theworld.model.modeling import TheWorld, TheWorldModel
from theworld.processing.processor import TheWorldProcessor

__all__ = ["TheWorld", "TheWorldConfig", "TheWorldModel", "TheWorldProcessor", "register_auto_classes"]

# Auto class -> the TheWorld class it loads (Gemma 3: Gemma3Model, Gemma3ForConditionalGeneration x2).
AUTO_MODEL_CLASSES = ((AutoModel, TheWorldModel), (AutoModelForCausalLM, TheWorld), (AutoModelForImageTextToText, TheWorld))


@functools.cache  # once per process
def register_auto_classes() -> None:
    AutoConfig.register(TheWorldConfig.model_type, TheWorldConfig, exist_ok=True)
    for auto_class, model_class in AUTO_MODEL_CLASSES:
        auto_class.register(TheWorldConfig, model_class, exist_ok=True)
    AutoProcessor.register(TheWorldConfig, TheWorldProcessor, exist_ok=True)
    _register_key_renaming()


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
