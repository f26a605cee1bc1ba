"""Registers TheWorld with the transformers Auto classes and Gemma 3's checkpoint key renaming.

transformers 5 renames on-disk Gemma 3 keys through a table keyed by `model_type`; a new model
type gets no renaming and every Gemma weight would load as missing (random) with only a warning.
TheWorld therefore registers Gemma 3's own table for `theworld`.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from theworld.model.configuration import TheWorldConfig
from theworld.model.modeling import TheWorld
from theworld.processing.processor import TheWorldProcessor

__all__ = ["TheWorld", "TheWorldConfig", "TheWorldProcessor", "register_auto_classes"]

_registered = False


def register_auto_classes() -> None:
    global _registered
    if _registered:
        return
    AutoConfig.register(TheWorldConfig.model_type, TheWorldConfig, exist_ok=True)
    AutoModelForImageTextToText.register(TheWorldConfig, TheWorld, exist_ok=True)
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
    mapping = get_checkpoint_conversion_mapping("gemma3")
    if mapping is not None:
        register_checkpoint_conversion_mapping(TheWorldConfig.model_type, mapping, overwrite=True)
