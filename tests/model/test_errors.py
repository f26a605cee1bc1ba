"""Bad input is a clear error that names what is wrong."""

from __future__ import annotations

import pytest
import torch

from theworld import TheWorld, TheWorldConfig
from theworld.errors import TheWorldUserError
from theworld.processing.processor import Clip
from theworld.testing.inputs import image_chat, random_image


def test_world_pixels_without_world_block(world_model, processor):
    processor.enable_world = False
    try:
        inputs = processor.apply_chat_template(image_chat(0), tokenize=True, return_dict=True, return_tensors="pt")
    finally:
        processor.enable_world = True
    with pytest.raises(ValueError, match="0 world placeholder tokens"):
        world_model(**inputs, world_pixel_values=torch.zeros(1, 3, 1, 64, 64))


def test_world_block_without_world_inputs(world_model, processor):
    inputs = processor.apply_chat_template(image_chat(0), tokenize=True, return_dict=True, return_tensors="pt")
    inputs.pop("world_pixel_values")
    with pytest.raises(ValueError, match="16 world placeholder tokens but no world_pixel_values"):
        world_model(**inputs)


def test_world_block_size_disagrees_with_config(world_model, processor):
    inputs = processor.apply_chat_template(image_chat(0), tokenize=True, return_dict=True, return_tensors="pt")
    with pytest.raises(ValueError, match="world_tokens_per_frame=16"):
        world_model(**{**inputs, "world_pixel_values": torch.zeros(1, 3, 5, 64, 64)})  # 2 latent frames, 1 block
    with pytest.raises(ValueError, match="world_image_size"):
        world_model(**{**inputs, "world_pixel_values": torch.zeros(1, 3, 1, 32, 32)})


def test_clip_of_wrong_length(processor, world_model):
    with pytest.raises(ValueError, match="6 frames"):
        processor(text="<start_of_image>", images=Clip(random_image(i) for i in range(6)))
    with pytest.raises(ValueError, match="6 frames"):
        world_model.world_encoder(torch.zeros(1, 3, 6, 64, 64))
    with pytest.raises(ValueError, match="13 frames"):  # longer than world_num_frames=9
        processor(text="<start_of_image>", images=Clip(random_image(i) for i in range(13)))


def test_image_count_mismatch(processor):
    with pytest.raises(ValueError, match="2 <start_of_image> markers but 1"):
        processor(text="<start_of_image> and <start_of_image>", images=[random_image(0)])


def test_missing_vae(tiny_gemma_dir, world_settings, processor, tmp_path):
    model = TheWorld.from_pretrained(tiny_gemma_dir, **world_settings)
    assert model.world_encoder is None
    inputs = processor.apply_chat_template(image_chat(0), tokenize=True, return_dict=True, return_tensors="pt")
    with pytest.raises(TheWorldUserError, match="no world encoder is loaded"):
        model(**inputs)
    with pytest.raises(TheWorldUserError, match="no VAE found"):
        TheWorld.from_pretrained(tiny_gemma_dir, cosmos_model_name=str(tmp_path), **world_settings)


def test_world_inputs_to_world_off_model(tiny_gemma_dir, processor):
    model = TheWorld.from_pretrained(tiny_gemma_dir, enable_world=False)
    inputs = processor.apply_chat_template(image_chat(0), tokenize=True, return_dict=True, return_tensors="pt")
    with pytest.raises(TheWorldUserError, match="enable_world=False"):
        model(**inputs)


def test_config_validation_names_the_key():
    with pytest.raises(ValueError, match="world_tokens_per_frame=15"):
        TheWorldConfig(world_tokens_per_frame=15)
    with pytest.raises(ValueError, match="world_num_frames=8"):
        TheWorldConfig(world_num_frames=8)
    with pytest.raises(ValueError, match="world_projector_type='conv'"):
        TheWorldConfig(world_projector_type="conv")
    assert TheWorldConfig(world_image_size=512, world_tokens_per_frame=256).world_patch_size == 4
    assert TheWorldConfig(world_image_size=512, world_tokens_per_frame=1024).world_patch_size == 2


def test_not_a_gemma_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(TheWorldUserError, match="'llama'"):
        TheWorld.from_pretrained(tmp_path)
