"""TheWorld: Gemma 3 with a world model's latent view of the scene.

Importing the package registers `TheWorldConfig`, `TheWorld` and `TheWorldProcessor` with the
transformers Auto classes (`AutoConfig`, `AutoModelForImageTextToText`, `AutoProcessor`), so a
saved TheWorld directory loads through them.
"""

from __future__ import annotations

from theworld.registration import TheWorld, TheWorldConfig, TheWorldProcessor, register_auto_classes

__version__ = "0.1.0"
__all__ = ["TheWorld", "TheWorldConfig", "TheWorldProcessor", "__version__"]

register_auto_classes()
