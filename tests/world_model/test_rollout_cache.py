"""The rollout cache: imagined latents computed once, keyed by the visual and everything that decides a rollout."""

from __future__ import annotations

import shutil

import torch

from theworld.data.sample import Sample
from theworld.processing.processor import Clip
from theworld.training.latent_cache import CacheSettings
from theworld.world_model.rollout_cache import RolloutCache, WorldLatentsWithRollouts

from .conftest import SIZE, pixels_of, random_clip, set_up, settings

CACHE = CacheSettings(world_image_size=SIZE, world_num_frames=5)


def test_build_once_and_read_back_what_imagine_gives(world, tmp_path):
    clips = [Clip(random_clip(i, 5)) for i in range(3)]
    cache = RolloutCache.for_world_model(tmp_path, CACHE, world)
    assert cache.build(world, clips) == 3 and cache.build(world, clips) == 0
    expected = world.imagine(pixels_of([list(c) for c in clips]))  # (3, 16, K, 4, 4)
    for clip, item in zip(clips, expected):
        assert torch.allclose(cache.imagined_for(clip), item, atol=1e-5)
    reopened = RolloutCache.for_world_model(tmp_path, CACHE, world)
    assert len(reopened) == 3 and all(c in reopened for c in clips)


def test_keys_change_with_every_rollout_setting_and_the_dit(tiny_world_dir, world, tmp_path):
    clip = Clip(random_clip(7, 5))
    key = RolloutCache.for_world_model(tmp_path, CACHE, world).key_for(clip)
    others = [settings(frames=1), settings(steps=5), settings(guidance=2.0), settings(seed=1), settings(prompt="a ball")]
    keys = {RolloutCache.for_world_model(tmp_path, CACHE, set_up(tiny_world_dir, s)).key_for(clip) for s in others}
    changed = tmp_path / "changed_dit"
    shutil.copytree(tiny_world_dir, changed)
    from diffusers import CosmosTransformer3DModel

    dit = CosmosTransformer3DModel.from_pretrained(changed / "transformer")
    with torch.no_grad():
        next(dit.parameters()).add_(1e-3)
    dit.save_pretrained(changed / "transformer")
    keys.add(RolloutCache.for_world_model(tmp_path, CACHE, set_up(str(changed), settings())).key_for(clip))
    assert len(keys) == len(others) + 1 and key not in keys
    assert RolloutCache.for_world_model(tmp_path, CACHE, set_up(tiny_world_dir, settings())).key_for(clip) == key


def test_collator_passes_imagined_latents_beside_cached_latents(tiny_gemma_dir, tiny_vae_dir, world_settings):
    from theworld import TheWorldProcessor
    from theworld.model.configuration import TheWorldConfig
    from theworld.model.checkpoints import resolve
    from theworld.training.collator import TheWorldCollator

    class Observed:
        def latents_for(self, visual):
            return torch.full((16, 1, 8, 8), 0.5)

    class Imagined:
        def imagined_for(self, visual):
            return torch.full((16, 2, 8, 8), -0.5)

    config: TheWorldConfig = resolve(tiny_gemma_dir, cosmos_model_name=tiny_vae_dir, **world_settings, world_rollout_frames=2).config
    processor = TheWorldProcessor.from_model_config(tiny_gemma_dir, config)
    image = random_clip(0, 1, size=40)[0]
    content = [{"type": "image", "image": image}, {"type": "text", "text": "Which way?"}]
    sample = Sample(id="a", messages=[{"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "text", "text": "left"}]}])
    batch = TheWorldCollator(processor, latent_cache=WorldLatentsWithRollouts(Observed(), Imagined()))([sample])
    assert batch["world_latents"].shape == (1, 16, 1, 8, 8) and batch["world_imagined_latents"].shape == (1, 16, 2, 8, 8)
    assert int((batch["input_ids"] == config.world_token_id).sum()) == (1 + 2) * 16
