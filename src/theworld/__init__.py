"""TheWorld: Gemma 3 with a world model's latent view of the scene.

Importing the package registers `TheWorldConfig`, `TheWorld` and `TheWorldProcessor` with the
transformers Auto classes. The heavy imports are lazy so that `theworld.data` or
`theworld.evaluation` utilities can be used without loading torch models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["TheWorld", "TheWorldConfig", "TheWorldProcessor", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from theworld.model.configuration import TheWorldConfig
    from theworld.model.modeling import TheWorld
    from theworld.processing.processor import TheWorldProcessor


def __getattr__(name: str) -> Any:
    if name in ("TheWorld", "TheWorldConfig", "TheWorldProcessor"):
        from theworld import registration

        registration.register_auto_classes()
        return getattr(registration, name)
    raise AttributeError(f"module 'theworld' has no attribute {name!r}")
