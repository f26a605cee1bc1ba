"""How much memory a TheWorld training step needs: estimated from a config, and measured on small models."""

from theworld.memory.estimate import MemoryEstimate, StepSetup, estimate_memory

__all__ = ["MemoryEstimate", "StepSetup", "estimate_memory"]
