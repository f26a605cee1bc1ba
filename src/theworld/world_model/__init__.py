"""The world model's side of world rollouts: the Cosmos-Predict2 DiT imagines what happens next.

- `WorldModel.from_pretrained(cosmos_model_name, RolloutSettings(...))`: DiT + VAE encoder + fixed
  text condition, guardrail-checked; `imagine(pixels)` -> imagined latents.
- `RolloutSettings`: frames K, steps, guidance, seed, prompt, negative prompt.
- `WorldTextCondition`: the prompt's T5 embeddings, computed once and stored.
- `theworld.world_model.training`: post-train (or train from scratch) the DiT with the objective
  the sampler assumes (`theworld train-world-model`).
"""

from theworld.world_model.model import WorldModel, resolve_world_model_folder
from theworld.world_model.settings import RolloutSettings
from theworld.world_model.text import WorldTextCondition

__all__ = ["RolloutSettings", "WorldModel", "WorldTextCondition", "resolve_world_model_folder"]
