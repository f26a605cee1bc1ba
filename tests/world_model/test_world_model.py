"""Set-up and rollouts of the world model: memory, determinism, batches, seeds, bad input."""

from __future__ import annotations

import gc
import shutil

import pytest
import torch

from theworld.errors import TheWorldUserError
from theworld.world_model import WorldTextCondition

from .conftest import SIZE, pixels_of, random_clip, set_up, settings


def _instances(class_name: str) -> set[int]:
    gc.collect()
    return {id(o) for o in gc.get_objects() if type(o).__name__ == class_name}


def test_no_decoder_and_no_t5_in_memory_after_set_up(tiny_world_dir):
    t5_before, decoders_before = _instances("T5EncoderModel"), _instances("WanDecoder3d")
    world = set_up(tiny_world_dir, settings(guidance=2.0))
    assert _instances("T5EncoderModel") - t5_before == set(), "T5 outlived the set-up"
    assert _instances("WanDecoder3d") - decoders_before == set(), "a VAE decoder was built"
    assert world.encoder.vae.decoder is None and world.encoder.vae.post_quant_conv is None
    assert not any("text_encoder" in name or "decoder." in name for name, _ in world.named_parameters())
    assert world.text.prompt_embeds.shape == world.text.negative_prompt_embeds.shape == (1, 16, 32)


def test_rollouts_are_reproducible_and_seeded(world):
    pixels = pixels_of([random_clip(1, 5)])
    first, again = world.imagine(pixels), world.imagine(pixels)
    assert torch.equal(first, again)
    other_seed = world.imagine(pixels, settings(seed=1))
    assert (other_seed - first).abs().mean() > 0.1 * first.abs().mean()


def test_a_clips_rollout_does_not_depend_on_its_batch(world):
    a, b, c = (random_clip(s, 5) for s in (1, 2, 3))
    alone = world.imagine(pixels_of([a]))
    in_batch = world.imagine(pixels_of([b, a, c]))[1:2]
    # Same draws by construction (a generator per clip); the batched DiT may round differently.
    torch.testing.assert_close(in_batch, alone, rtol=1e-5, atol=1e-5)
    assert not torch.equal(world.imagine(pixels_of([b])), alone)  # the clip does matter (a random DiT barely)


def test_imagined_latents_are_encoder_normalised(world):
    """Same scale as the world encoder's latents (sigma_data = 1: the conversion is the identity)."""
    pixels = pixels_of([random_clip(4, 5)])
    observed = world.encoder(pixels)
    assert world.scheduler_config.get("sigma_data", 1.0) == 1.0
    imagined = world.imagine(pixels)
    assert imagined.shape[1:] == (16, 2, SIZE // 8, SIZE // 8) and observed.shape[3:] == imagined.shape[3:]


def test_rollout_frames_beyond_the_dit_budget_are_a_clear_error(world):
    budget = world.max_rollout_frames  # 16 latent frames (max_size[0])
    pixels = pixels_of([random_clip(1, 5)])  # 2 latent frames observed
    with pytest.raises(TheWorldUserError, match=r"world_rollout_frames=15 is too many.*at most 14"):
        world.imagine(pixels, settings(frames=budget - 1))
    assert world.imagine(pixels, settings(frames=budget - 2, steps=2)).shape[2] == budget - 2


@pytest.mark.parametrize("size", [40, 24, 136])
def test_an_image_size_the_dit_cannot_take_is_a_clear_error(world, size):
    pixels = pixels_of([random_clip(1, 1, size=size)], size=size)
    with pytest.raises(TheWorldUserError, match=f"world image size {size}x{size}"):
        world.imagine(pixels)


def test_bad_clip_shapes_are_clear_errors(world):
    with pytest.raises(TheWorldUserError, match="4k\\+1 frames"):
        world.imagine(torch.zeros(1, 3, 4, SIZE, SIZE))
    with pytest.raises(TheWorldUserError, match="batch, 3, frames"):
        world.imagine(torch.zeros(3, 5, SIZE, SIZE))


def test_a_folder_without_transformer_is_a_clear_error(tiny_world_dir, tmp_path):
    folder = tmp_path / "cosmos_vae_only"
    shutil.copytree(tiny_world_dir, folder)
    shutil.rmtree(folder / "transformer")
    with pytest.raises(TheWorldUserError, match=r"no transformer/ folder"):
        set_up(str(folder), settings())


def test_settings_for_another_text_condition_are_refused(world):
    with pytest.raises(TheWorldUserError, match="another text condition"):
        world.imagine(pixels_of([random_clip(1, 5)]), settings(prompt="a ball"))


def test_stored_text_condition_needs_no_t5(tiny_world_dir, world, tmp_path):
    path = world.text.save(tmp_path / "model")
    stored = WorldTextCondition.load(path)
    no_t5 = tmp_path / "cosmos_without_t5"
    shutil.copytree(tiny_world_dir, no_t5)
    shutil.rmtree(no_t5 / "text_encoder")
    again = set_up(str(no_t5), settings(), text_condition=stored)
    pixels = pixels_of([random_clip(2, 5)])
    assert torch.equal(again.imagine(pixels), world.imagine(pixels))
    with pytest.raises(TheWorldUserError, match="was made for prompt"):
        set_up(str(no_t5), settings(prompt="a ball"), text_condition=stored)


def test_identity_changes_with_settings_and_dit(tiny_world_dir, world, tmp_path):
    """What a latent cache keys imagined latents by: settings, text and the DiT's files."""
    other = set_up(tiny_world_dir, settings(steps=5))
    assert other.identity()["settings"] != world.identity()["settings"]
    assert other.identity()["dit"] == world.identity()["dit"]
    changed = tmp_path / "changed_dit"
    shutil.copytree(tiny_world_dir, changed)
    from diffusers import CosmosTransformer3DModel

    transformer = CosmosTransformer3DModel.from_pretrained(changed / "transformer")
    with torch.no_grad():
        transformer.proj_out.weight.add_(1e-3)
    transformer.save_pretrained(changed / "transformer")
    assert set_up(str(changed), settings()).identity()["dit"] != world.identity()["dit"]
