"""TheWorld behaves as a transformers model where Gemma 3 does: loading, initialisation, Auto classes, typing.

Each test names the Gemma 3 behaviour it mirrors; transformers' own common tests (run on both in
tests/model/transformers_common) cover the same ground more broadly.
"""

from __future__ import annotations

import inspect
import typing

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3Model,
)

from theworld import TheWorld, TheWorldConfig
from theworld.errors import TheWorldUserError
from theworld.model.modeling import TheWorldModel
from theworld.testing.inputs import clip_chat


@pytest.fixture(scope="module")
def clip_inputs(processor):
    return processor.apply_chat_template(clip_chat(3, frames=5), tokenize=True, return_dict=True, return_tensors="pt")


@pytest.fixture(scope="module")
def saved_world(world_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved_world")
    world_model.save_pretrained(path)
    return path


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_from_pretrained_none_with_config_and_state_dict(world_model, clip_inputs):
    """`from_pretrained(None, config=..., state_dict=...)`, as transformers allows for every model."""
    model = TheWorld.from_pretrained(None, config=world_model.config, state_dict=world_model.state_dict()).eval()
    model.attach_world_encoder(world_model.world_encoder)
    assert torch.equal(logits(model, clip_inputs), logits(world_model, clip_inputs))
    with pytest.raises(TheWorldUserError, match="needs config="):
        TheWorld.from_pretrained(None)


def test_output_loading_info(tiny_gemma_dir, world_settings, saved_world):
    """`output_loading_info=True` returns (model, info); world weights are missing from a Gemma checkpoint only."""
    model, info = TheWorld.from_pretrained(tiny_gemma_dir, output_loading_info=True, **world_settings)
    assert isinstance(model, TheWorld)
    assert {k for k in info["missing_keys"]} == {n for n, _ in model.world_projector.named_parameters(prefix="world_projector")}
    model, info = TheWorld.from_pretrained(saved_world, output_loading_info=True)
    assert isinstance(model, TheWorld) and not info["missing_keys"] and not info["unexpected_keys"]


def test_missing_weights_are_initialised_as_gemma_initialises_them(world_model):
    """A weight absent from the checkpoint comes back exactly as Gemma 3 initialises it (SigLIP included).

    transformers treats classes outside its package as custom code and skipped SigLIP's init
    (its biases came back 0); TheWorld is initialised by Gemma's rules."""
    gemma_config = Gemma3Config.from_dict({k: v for k, v in world_model.config.to_dict().items() if k != "model_type"})
    torch.manual_seed(0)
    gemma = Gemma3ForConditionalGeneration.from_pretrained(None, config=gemma_config, state_dict={})
    torch.manual_seed(0)
    ours = TheWorld.from_pretrained(None, config=world_model.config, state_dict={}, enable_world=False)
    gemma_state, our_state = gemma.state_dict(), ours.state_dict()
    assert gemma_state.keys() == our_state.keys()
    different = [k for k in gemma_state if not torch.equal(gemma_state[k], our_state[k])]
    assert not different, different
    siglip_biases = [v for k, v in our_state.items() if k.startswith("model.vision_tower.") and ".mlp.fc" in k and k.endswith("bias")]
    assert siglip_biases and all(torch.count_nonzero(b) > 0 for b in siglip_biases)  # SigLIP's own init, not zeros


@pytest.mark.parametrize("enable_world", [False, True])
def test_built_from_a_config_everything_trains(world_model, enable_world):
    """Like every transformers model, `TheWorld(config)` comes out trainable; freezing is a loading choice."""
    config = TheWorldConfig.from_dict({**world_model.config.to_dict(), "enable_world": enable_world})
    model = TheWorld(config)
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert not frozen, frozen[:5]
    # Attaching the VAE freezes the VAE only (freeze_cosmos_vae), never Gemma.
    if enable_world:
        model.attach_world_encoder(world_model.world_encoder)
        assert all(p.requires_grad for name, p in model.named_parameters() if not name.startswith("world_encoder."))
        assert not any(p.requires_grad for p in model.world_encoder.parameters())


def test_from_pretrained_freeze_flags_keep_their_defaults(tiny_gemma_dir, world_settings):
    model = TheWorld.from_pretrained(tiny_gemma_dir, **world_settings)
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"world_projector"}
    model = TheWorld.from_pretrained(tiny_gemma_dir, freeze_gemma_language=False, **world_settings)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "model.language_model.layers.0.mlp.up_proj.weight" in trainable
    assert not any(n.startswith("model.vision_tower.") for n in trainable)


def test_auto_classes_load_theworld_as_they_load_gemma(world_model, saved_world, clip_inputs, gemma_model, tiny_gemma_dir):
    """Gemma 3: AutoModelForCausalLM / AutoModelForImageTextToText -> the LM, AutoModel -> the base model."""
    for auto_class in (AutoModelForCausalLM, AutoModelForImageTextToText):
        model = auto_class.from_pretrained(saved_world).eval()
        assert type(model) is TheWorld
        assert torch.equal(logits(model, clip_inputs), logits(world_model, clip_inputs))
    assert type(AutoModelForCausalLM.from_pretrained(tiny_gemma_dir)) is Gemma3ForConditionalGeneration

    base = AutoModel.from_pretrained(saved_world).eval()
    assert type(base) is TheWorldModel and type(world_model.model) is TheWorldModel
    gemma_base = Gemma3Model.from_pretrained(tiny_gemma_dir).eval()
    text = {"input_ids": torch.tensor([[2, 30, 41, 57, 60]])}
    with torch.no_grad():
        assert torch.equal(base(**text).last_hidden_state, gemma_base(**text).last_hidden_state)
        with pytest.raises(TheWorldUserError, match="no world path"):
            base(**clip_inputs)


def test_forward_is_typed_like_transformers():
    """transformers (and its tests) find `output_attentions` etc. in the annotation of `**kwargs`."""
    parameters = inspect.signature(TheWorld.forward).parameters
    kwargs = parameters["kwargs"].annotation
    assert typing.get_origin(kwargs) is typing.Unpack
    assert {"output_attentions", "output_hidden_states"} <= set(typing.get_args(kwargs)[0].__annotations__)
    assert "Gemma3CausalLMOutputWithPast" in str(inspect.signature(TheWorld.forward).return_annotation)
    assert list(parameters)[:3] == list(inspect.signature(Gemma3ForConditionalGeneration.forward).parameters)[:3]


def test_world_path_accepts_inputs_embeds(world_model, clip_inputs):
    """As Gemma 3 finds image tokens in `inputs_embeds`, TheWorld finds world tokens there."""
    inputs = dict(clip_inputs)
    input_ids = inputs.pop("input_ids")
    with torch.no_grad():
        embeds = world_model.get_input_embeddings()(input_ids)
        from_embeds = world_model(**inputs, inputs_embeds=embeds, output_hidden_states=True)
    assert torch.equal(from_embeds.logits, logits(world_model, clip_inputs))
    assert len(from_embeds.hidden_states) == world_model.config.text_config.num_hidden_layers + 1
