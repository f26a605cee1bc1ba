"""A disk cache of imagined latents: a world model rolls each visual out once.

Rollouts cost one DiT forward per sampler step (two with guidance) per visual; training and
evaluation read them many times. `RolloutCache` stores each visual's imagined latents
(16, K, h, w), normalised like the world encoder's, under a key that is the sha256 of

- the visual's world pixels key (`training.latent_cache.CacheSettings.key`: preprocessing
  settings, shape and the float32 pixels the world model sees), and
- the rollout identity (`rollout_identity`): the DiT's file fingerprint, the scheduler config,
  the text condition (prompt, negative prompt, T5 length and which T5 embedded them) and every
  rollout setting (K, steps, guidance, seed, fps).

So any change to a rollout setting or to the DiT is another key: a miss, never a stale hit; one
folder can hold the rollouts of several world models side by side. Shards
(`imagined-<token>.safetensors`, one tensor per key) are written to a temporary name and renamed
into place, so a reader never sees half a shard.

`WorldLatentsWithRollouts` joins a latent cache (observed latents) and a rollout cache for the
training collator, which then passes `world_imagined_latents` beside `world_latents`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from theworld.errors import TheWorldUserError
from theworld.training.latent_cache import as_world_visual, describe_visual

logger = logging.getLogger(__name__)

SHARD_PREFIX = "imagined-"


def rollout_identity(world_model: Any) -> str:
    """sha256 of what decides a rollout besides the clip (`WorldModel.identity()`, or that dict), as hex."""
    identity = world_model if isinstance(world_model, dict) else world_model.identity()
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class RolloutCache:
    """Imagined latents per (visual, rollout identity), in `cache_dir`.

    `settings` is the latent cache's `CacheSettings` (world image size, frames, compression): it
    turns a visual into the world pixels a rollout starts from and into their key. `pixel_key`
    (optional) gives that key faster: a `LatentCache.key_for`, which makes the same key and
    remembers unchanged files, so training does not decode an image twice per step.
    """

    def __init__(
        self, cache_dir: str | os.PathLike, settings: Any, identity: str, pixel_key: Any = None, text_condition: Any = None
    ) -> None:
        self.dir = Path(cache_dir)
        self.settings = settings
        self.identity = identity
        self.pixel_key = pixel_key
        self.text_condition = text_condition
        """The world model's `WorldTextCondition` the rollouts were made with, when known (a trained model keeps it)."""
        self._where: dict[str, Path] = {}
        self._scan()

    @classmethod
    def for_world_model(
        cls, cache_dir: str | os.PathLike, settings: Any, world_model: Any, pixel_key: Any = None
    ) -> RolloutCache:
        return cls(cache_dir, settings, rollout_identity(world_model), pixel_key=pixel_key)

    def _scan(self) -> None:
        self._where.clear()
        if not self.dir.is_dir():
            return
        for shard in sorted(self.dir.glob(f"{SHARD_PREFIX}*.safetensors")):
            with safe_open(str(shard), framework="pt") as handle:
                for key in handle.keys():
                    self._where[key] = shard

    def key_for(self, visual: Any) -> str:
        """The key of `visual`'s rollout under this cache's rollout identity."""
        if self.pixel_key is not None:
            pixel_key = self.pixel_key(visual)
        else:
            pixel_key = self.settings.key(self.settings.world_pixels(as_world_visual(visual)))
        return hashlib.sha256(f"{self.identity}|{pixel_key}".encode()).hexdigest()

    def __contains__(self, visual: Any) -> bool:
        return self.key_for(visual) in self._where

    def __len__(self) -> int:
        return len(self._where)

    def imagined_for_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 16, K, h, w) cached latents of world pixels (N, 3, T, S, S) as the processor makes them:
        stands in for `imagine` where the cache holds what to use (the demo's oracle future)."""
        items = []
        for item in pixels:
            pixel_key = self.settings.key(item.detach().cpu().float().numpy())
            key = hashlib.sha256(f"{self.identity}|{pixel_key}".encode()).hexdigest()
            if key not in self._where:
                raise TheWorldUserError(f"rollout cache {self.dir} holds nothing for these world pixels (key {pixel_key[:12]})")
            with safe_open(str(self._where[key]), framework="pt") as handle:
                items.append(handle.get_tensor(key))
        return torch.stack(items).to(pixels.device)

    def imagined_for(self, visual: Any) -> torch.Tensor:
        """(16, K, h, w) imagined latents of `visual`; a miss is an error naming the visual."""
        key = self.key_for(visual)
        shard = self._where.get(key)
        if shard is None:
            raise TheWorldUserError(
                f"rollout cache {self.dir} has no imagined latents for {str(visual)[:120]!r} under this world model "
                "and these rollout settings: build it with the same world model (RolloutCache.build)"
            )
        with safe_open(str(shard), framework="pt") as handle:
            return handle.get_tensor(key)

    def missing(self, samples: Any) -> list[tuple[str, Any]]:
        """(sample id, visual) of every visual of `samples` (`Sample`s) that has no rollout here."""
        return [(sample.id, v) for sample in samples for v in sample.visuals() if self.key_for(v) not in self._where]

    def check_complete(self, samples: Any) -> None:
        """Raise naming the sample ids (up to five) whose visuals have no imagined latents here:
        training does not roll out (no DiT is loaded), `theworld cache-latents` does."""
        missing = self.missing(samples)
        if missing:
            ids = list(dict.fromkeys(sample_id for sample_id, _ in missing))
            raise TheWorldUserError(
                f"rollout cache {self.dir} has no imagined latents for {len(missing)} visual(s) of samples "
                f"{', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''} (e.g. {describe_visual(missing[0][1])}) under "
                "this world model and these world_rollout_* settings: run `theworld cache-latents` with this training "
                "config first (it rolls every visual out once)"
            )

    def build(self, world_model: Any, visuals: list[Any], batch_size: int = 16) -> int:
        """Roll out every visual not yet cached (`world_model` must have this cache's identity); returns
        how many were rolled out. Visuals of one length are batched (each rollout is per item anyway)."""
        if rollout_identity(world_model) != self.identity:
            raise TheWorldUserError("RolloutCache.build: the world model is not the one this cache's keys were made for")
        pending: dict[str, Any] = {}
        for visual in visuals:
            key = self.key_for(visual)
            if key not in self._where:
                pending.setdefault(key, visual)
        if not pending:
            return 0
        by_frames: dict[int, list[tuple[str, torch.Tensor]]] = {}
        for key, visual in pending.items():
            pixels = torch.from_numpy(self.settings.world_pixels(as_world_visual(visual)))  # (3, T, S, S)
            by_frames.setdefault(pixels.shape[1], []).append((key, pixels))
        tensors: dict[str, torch.Tensor] = {}
        for group in by_frames.values():
            for start in range(0, len(group), batch_size):
                chunk = group[start : start + batch_size]
                imagined = world_model.imagine(torch.stack([p for _, p in chunk]))  # (n, 16, K, h, w)
                for (key, _), item in zip(chunk, imagined):
                    tensors[key] = item.detach().to("cpu", torch.float32).contiguous()
        return self._write(tensors)

    def store(self, items: list[tuple[Any, torch.Tensor]]) -> int:
        """Write given latents (16, K, h, w) as the rollouts of their visuals under this cache's
        identity: the demo's `theworld_oracle_future` system stores the *true* future latents in a
        folder of its own, so it trains and evaluates exactly as the rollout system does."""
        return self._write({self.key_for(v): t.detach().to("cpu", torch.float32).contiguous() for v, t in items})

    def _write(self, tensors: dict[str, torch.Tensor]) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"{SHARD_PREFIX}{secrets.token_hex(8)}.safetensors"
        tmp = self.dir / f".{name}.tmp"
        save_file(tensors, str(tmp), metadata={"rollout_identity": self.identity})
        os.replace(tmp, self.dir / name)
        self._scan()
        logger.info("rollout cache %s: %d visuals rolled out", self.dir, len(tensors))
        return len(tensors)


class WorldLatentsWithRollouts:
    """Observed latents from a latent cache and imagined ones from a rollout cache, for the collator."""

    def __init__(self, latent_cache: Any, rollout_cache: RolloutCache) -> None:
        self.latent_cache = latent_cache
        self.rollout_cache = rollout_cache

    def latents_for(self, visual: Any) -> torch.Tensor:  # (16, Tl, h, w)
        return self.latent_cache.latents_for(visual)

    def imagined_for(self, visual: Any) -> torch.Tensor:  # (16, K, h, w)
        return self.rollout_cache.imagined_for(visual)
