"""World rollouts in TheWorld: K imagined latent frames from the world model's DiT join the world block."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3ForConditionalGeneration

from theworld import TheWorld, TheWorldProcessor
from theworld.errors import TheWorldUserError
from theworld.testing.inputs import clip_chat, image_chat
from theworld.testing.tiny_world_model import TinyTestSafetyChecker

K = 2
# Cheap rollouts for tests: 2 sampler steps, no guidance, 16 T5 tokens.
ROLLOUT = dict(world_rollout_steps=2, world_rollout_guidance=1.0, world_rollout_max_sequence_length=16)


def load(tiny_gemma_dir, cosmos, world_settings, k=K, **values):
    settings = {**world_settings, **ROLLOUT, "world_rollout_frames": k, **values}
    return TheWorld.from_pretrained(
        tiny_gemma_dir, cosmos_model_name=cosmos, world_safety_checker=TinyTestSafetyChecker(), **settings
    ).eval()


@pytest.fixture(scope="module")
def rollout_model(tiny_gemma_dir, tiny_world_dir, world_settings):
    model = load(tiny_gemma_dir, tiny_world_dir, world_settings)
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking projector: positions and marker non-zero
        for name in ("temporal_embedding", "rollout_temporal_embedding", "imagined_embedding"):
            getattr(model.world_projector, name).normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def rollout_processor(tiny_gemma_dir, rollout_model):
    return TheWorldProcessor.from_model_config(tiny_gemma_dir, rollout_model.config)


def chat_inputs(processor, chat):
    return processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_tensors="pt")


def test_k0_has_todays_parameters_and_observed_tokens_are_unchanged(tiny_gemma_dir, tiny_world_dir, world_settings, rollout_model):
    """K = 0 adds nothing; with K > 0 the observed tokens are bit-identical to the K = 0 model's."""
    plain = TheWorld.from_pretrained(tiny_gemma_dir, cosmos_model_name=tiny_world_dir, **world_settings).eval()
    assert plain.world_model is None
    new = set(rollout_model.state_dict()) - set(plain.state_dict())
    assert new == {"world_projector.rollout_temporal_embedding", "world_projector.imagined_embedding"}
    assert not any(k.startswith("world_model") for k in rollout_model.state_dict())
    plain.world_projector.load_state_dict(
        {k: v for k, v in rollout_model.world_projector.state_dict().items() if k in plain.world_projector.state_dict()}
    )
    pixels = torch.rand(2, 3, 5, 64, 64) * 2 - 1
    with torch.no_grad():
        observed = plain.get_world_features(pixels)  # (2, 2 * 16, hidden)
        both = rollout_model.get_world_features(pixels)  # (2, (2 + K) * 16, hidden)
    assert both.shape[1] == (2 + K) * 16
    assert torch.equal(both[:, : observed.shape[1]], observed)


def test_no_t5_and_no_decoder_in_memory_and_the_encoder_is_shared(tiny_gemma_dir, tiny_world_dir, world_settings):
    import gc

    def instances(name):
        gc.collect()
        return {id(o) for o in gc.get_objects() if type(o).__name__ == name}

    t5, decoders = instances("T5EncoderModel"), instances("WanDecoder3d")
    model = load(tiny_gemma_dir, tiny_world_dir, world_settings)
    assert instances("T5EncoderModel") - t5 == set() and instances("WanDecoder3d") - decoders == set()
    assert model.world_model.encoder is model.world_encoder  # one VAE encoder, not two
    # built on the meta device by from_pretrained: the new tensors are initialised, not left as garbage
    assert model.world_projector.imagined_embedding.abs().max() == 0
    assert model.world_projector.rollout_temporal_embedding.abs().max() == 0


def test_world_off_inputs_still_gemma(tiny_gemma_dir, rollout_model, rollout_processor):
    """Without world inputs a rollout model is Gemma 3, bit for bit (no DiT runs)."""
    gemma = Gemma3ForConditionalGeneration.from_pretrained(tiny_gemma_dir).eval()
    ids = rollout_processor.tokenizer("The ball moves left.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(rollout_model(input_ids=ids).logits, gemma(input_ids=ids).logits)


def test_processor_placeholders_count_imagined_frames(rollout_model, rollout_processor):
    image = chat_inputs(rollout_processor, image_chat(0))
    clip = chat_inputs(rollout_processor, clip_chat(1, frames=9))
    world_id = rollout_model.config.world_token_id
    assert int((image["input_ids"] == world_id).sum()) == (1 + K) * 16
    assert int((clip["input_ids"] == world_id).sum()) == (3 + K) * 16
    with torch.no_grad():
        rollout_model(**clip)  # counts agree with the features
    reloaded_geometry = rollout_processor.world_geometry
    assert reloaded_geometry.rollout_frames == K and reloaded_geometry.tokens_for_frames(5) == (2 + K) * 16


def test_zeroing_imagined_latents_changes_logits(rollout_model, rollout_processor):
    inputs = chat_inputs(rollout_processor, clip_chat(2, frames=5))
    with torch.no_grad():
        imagined = rollout_model.imagine(inputs["world_pixel_values"])
        assert imagined.shape == (1, 16, K, 8, 8)
        rolled = rollout_model(**inputs).logits
        given = rollout_model(**inputs, world_imagined_latents=imagined).logits
        zeroed = rollout_model(**inputs, world_imagined_latents=torch.zeros_like(imagined)).logits
    assert torch.equal(rolled, given)  # forward imagines exactly what imagine() returns
    assert (rolled - zeroed).abs().max() > 1e-3


def test_imagine_is_deterministic_and_per_item(tiny_gemma_dir, tiny_world_dir, world_settings, rollout_model):
    pixels = torch.rand(3, 3, 5, 64, 64) * 2 - 1
    first, again = rollout_model.imagine(pixels), rollout_model.imagine(pixels)
    assert torch.equal(first, again)
    for i in range(3):
        alone = rollout_model.imagine(pixels[i : i + 1])
        assert torch.allclose(alone[0], first[i], atol=1e-5), (alone[0] - first[i]).abs().max()
    assert (first[0] - first[1]).abs().max() > 1e-3  # items differ
    other_seed = load(tiny_gemma_dir, tiny_world_dir, world_settings, world_rollout_seed=1)
    assert (other_seed.imagine(pixels) - first).abs().max() > 1e-3


def test_mixed_lengths_batch_imagines_each_item_from_its_own_frames(rollout_model, rollout_processor):
    chats = [clip_chat(3, frames=5), image_chat(4)]
    batch = rollout_processor.apply_chat_template(chats, tokenize=True, return_dict=True, return_tensors="pt", padding=True)
    assert batch["world_latent_frames"].tolist() == [2, 1]
    imagined = rollout_model.imagine(batch["world_pixel_values"], batch["world_latent_frames"])
    image_alone = chat_inputs(rollout_processor, chats[1])["world_pixel_values"]
    assert torch.allclose(imagined[1], rollout_model.imagine(image_alone)[0], atol=1e-5)
    with torch.no_grad():
        rollout_model(**batch)


def test_generate_with_rollouts(rollout_model, rollout_processor):
    inputs = rollout_processor.apply_chat_template(
        image_chat(5), tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True
    )
    imagined = rollout_model.imagine(inputs["world_pixel_values"])
    generated = rollout_model.generate(**inputs, max_new_tokens=3, do_sample=False)
    with_cache = rollout_model.generate(**inputs, world_imagined_latents=imagined, max_new_tokens=3, do_sample=False)
    assert torch.equal(generated, with_cache) and generated.shape[1] == inputs["input_ids"].shape[1] + 3


def test_save_and_reload_keeps_rollout_weights(tmp_path, tiny_world_dir, rollout_model):
    rollout_model.save_pretrained(tmp_path / "saved")
    again = TheWorld.from_pretrained(tmp_path / "saved", world_safety_checker=TinyTestSafetyChecker()).eval()
    assert again.config.world_rollout_frames == K and again.world_model is not None
    for name in ("rollout_temporal_embedding", "imagined_embedding"):
        assert torch.equal(getattr(again.world_projector, name), getattr(rollout_model.world_projector, name))


def test_a_saved_rollout_model_loads_without_t5(tmp_path, rollout_model, monkeypatch):
    """The saved folder keeps the world model's text condition: loading it never constructs T5, and
    its rollouts equal the original model's. A folder without it (deleted) embeds the prompt again."""
    from transformers import T5EncoderModel

    from theworld.world_model.text import TEXT_CONDITION_NAME

    rollout_model.save_pretrained(tmp_path / "saved")
    rollout_model.save_world_adapter(tmp_path / "adapter")
    assert (tmp_path / "saved" / TEXT_CONDITION_NAME).is_file() and (tmp_path / "adapter" / TEXT_CONDITION_NAME).is_file()
    built = []
    original = T5EncoderModel.from_pretrained.__func__
    monkeypatch.setattr(T5EncoderModel, "from_pretrained", classmethod(lambda cls, *a, **k: built.append(a) or original(cls, *a, **k)))
    pixels = torch.rand(2, 3, 5, 64, 64) * 2 - 1
    expected = rollout_model.imagine(pixels)
    for folder in ("saved", "adapter"):
        again = TheWorld.from_pretrained(tmp_path / folder, world_safety_checker=TinyTestSafetyChecker())
        assert built == [] and torch.equal(again.imagine(pixels), expected)
    (tmp_path / "saved" / TEXT_CONDITION_NAME).unlink()
    again = TheWorld.from_pretrained(tmp_path / "saved", world_safety_checker=TinyTestSafetyChecker())
    assert len(built) == 1 and torch.equal(again.imagine(pixels), expected)


def test_bad_rollout_settings_are_clear_errors(tiny_gemma_dir, tiny_world_dir, tiny_vae_dir, world_settings):
    with pytest.raises(TheWorldUserError, match="transformer/"):
        load(tiny_gemma_dir, tiny_vae_dir, world_settings)  # a VAE-only folder: no DiT
    with pytest.raises(TheWorldUserError, match="world_rollout_frames=14 is too many"):
        load(tiny_gemma_dir, tiny_world_dir, world_settings, k=14)  # 3 observed + 14 > the tiny DiT's 16
    with pytest.raises(TheWorldUserError, match="cannot be patched"):  # 72 px -> 9x9 latents, 2x2 DiT patches
        load(tiny_gemma_dir, tiny_world_dir, {**world_settings, "world_image_size": 72, "world_tokens_per_frame": 9})
    with pytest.raises(ValueError, match="world_rollout_steps"):
        load(tiny_gemma_dir, tiny_world_dir, world_settings, world_rollout_steps=1)
    with pytest.raises(ValueError, match="world_rollout_frames=-1"):
        load(tiny_gemma_dir, tiny_world_dir, world_settings, k=-1)


def test_latents_without_imagined_latents_or_world_model_are_refused(rollout_model, rollout_processor):
    inputs = chat_inputs(rollout_processor, image_chat(6))
    latents = rollout_model.world_encoder(inputs.pop("world_pixel_values"))
    with pytest.raises(TheWorldUserError, match="world_imagined_latents"):
        rollout_model(**inputs, world_latents=latents)
