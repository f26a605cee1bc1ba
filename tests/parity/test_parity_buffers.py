"""audit_buffers: the signatures of broken loading, and no false alarms on sound models."""

from __future__ import annotations

import torch
from torch import nn
from transformers import Gemma3ForCausalLM, Gemma3ForConditionalGeneration

from theworld.parity.buffers import Reference, audit_buffers, reference_values

from .conftest import conditional, text_config


def _kinds(issues, name):
    return {i.kind for i in issues if i.name == name}


def test_sound_models_have_no_issues(tiny_lm):
    assert audit_buffers(tiny_lm) == []
    assert audit_buffers(tiny_lm, check_parameters=True) == []
    assert audit_buffers(conditional(seed=0)) == []


def test_saved_and_reloaded_model_is_clean_and_still_audited(tiny_lm, tmp_path):
    tiny_lm.save_pretrained(tmp_path)
    loaded = Gemma3ForCausalLM.from_pretrained(tmp_path)
    assert audit_buffers(loaded) == []
    # The loader marks tensors as initialised; the reference must be recomputed regardless.
    loaded.model.rotary_emb.full_attention_inv_freq.zero_()
    issues = audit_buffers(loaded)
    assert _kinds(issues, "model.rotary_emb.full_attention_inv_freq") == {"all_zero", "reference_mismatch"}


def test_zeroed_inv_freq_is_found_even_when_flagged_initialised():
    model = Gemma3ForCausalLM(text_config()).eval()
    rotary = model.model.rotary_emb
    rotary.full_attention_inv_freq.zero_()
    rotary._is_hf_initialized = True
    rotary.full_attention_inv_freq._is_hf_initialized = True
    issues = audit_buffers(model)
    name = "model.rotary_emb.full_attention_inv_freq"
    assert _kinds(issues, name) == {"all_zero", "reference_mismatch"}
    assert all(i.severity == "error" for i in issues)
    mismatch = next(i for i in issues if i.kind == "reference_mismatch")
    assert mismatch.max_abs_diff == 1.0  # inv_freq[0] is base**0 = 1
    assert {i.name for i in issues} == {name}  # the untouched buffers stay clean
    # The model's own buffer is left as it was (the reference is computed on a copy).
    assert not rotary.full_attention_inv_freq.any()


def test_inv_freq_cast_to_bf16_is_a_dtype_change(tiny_lm):
    model = Gemma3ForCausalLM(text_config()).eval()
    model.load_state_dict(tiny_lm.state_dict())
    rotary = model.model.rotary_emb
    rotary.sliding_attention_inv_freq = rotary.sliding_attention_inv_freq.to(torch.bfloat16)
    issues = audit_buffers(model)
    assert [(i.name, i.kind) for i in issues] == [("model.rotary_emb.sliding_attention_inv_freq", "dtype_change")]
    assert issues[0].dtype == "bfloat16" and issues[0].expected_dtype == "float32"
    assert issues[0].severity == "error"


def test_bf16_embed_scale_rounded_like_gemma_is_not_flagged():
    model = Gemma3ForCausalLM(text_config()).eval()
    embed = model.model.embed_tokens
    embed.embed_scale = embed.embed_scale.to(torch.bfloat16)  # what loading in bf16 gives
    assert audit_buffers(model) == []
    embed.embed_scale.fill_(3.0)
    assert _kinds(audit_buffers(model), "model.embed_tokens.embed_scale") == {"reference_mismatch"}


def test_uninitialised_memory_is_garbage(tiny_lm):
    model = Gemma3ForCausalLM(text_config()).eval()
    model.model.embed_tokens.embed_scale.fill_(2e38)
    issues = audit_buffers(model)
    assert "garbage" in _kinds(issues, "model.embed_tokens.embed_scale")


class _WithWorldBuffer(Gemma3ForCausalLM):
    """A subclass adding a module with a buffer that `_init_weights` knows nothing about."""

    def __init__(self, config):
        super().__init__(config)
        self.world = nn.Module()
        self.world.register_buffer("scale", torch.ones(4), persistent=False)


def test_garbage_in_a_buffer_without_reference():
    model = _WithWorldBuffer(text_config())
    assert audit_buffers(model) == []
    model.world.scale.fill_(2e38)
    assert [(i.name, i.kind) for i in audit_buffers(model)] == [("world.scale", "garbage")]
    model.world.scale.fill_(float("nan"))
    assert [(i.name, i.kind) for i in audit_buffers(model)] == [("world.scale", "non_finite")]
    model.world.scale.zero_()
    issues = audit_buffers(model)
    assert [(i.name, i.kind, i.severity) for i in issues] == [("world.scale", "all_zero", "warning")]


def test_reference_functions_extend_the_audit():
    model = _WithWorldBuffer(text_config())

    def world_scale(module, name):
        if module is model.world and name == "scale":
            return Reference(torch.ones(4), torch.float32)
        return None

    assert audit_buffers(model, reference_fns=[world_scale]) == []
    model.world.scale.mul_(2)
    issues = audit_buffers(model, reference_fns=[world_scale])
    assert [(i.name, i.kind) for i in issues] == [("world.scale", "reference_mismatch")]


def test_meta_buffer_is_reported():
    model = _WithWorldBuffer(text_config())
    model.world.scale = torch.empty(4, device="meta")
    assert [(i.name, i.kind) for i in audit_buffers(model)] == [("world.scale", "meta")]


def test_vision_buffers_use_the_vision_models_init():
    model: Gemma3ForConditionalGeneration = conditional(seed=0)
    embeddings = model.model.vision_tower.embeddings
    refs = reference_values(model)
    assert torch.equal(refs["model.vision_tower.embeddings.position_ids"].value, torch.arange(16).unsqueeze(0))
    assert refs["model.language_model.embed_tokens.embed_scale"].value == 32**0.5
    embeddings.position_ids = torch.zeros_like(embeddings.position_ids)
    issues = audit_buffers(model)
    assert _kinds(issues, "model.vision_tower.embeddings.position_ids") == {"all_zero", "reference_mismatch"}


def test_parameter_checks(tiny_lm):
    model = Gemma3ForCausalLM(text_config()).eval()
    model.load_state_dict(tiny_lm.state_dict())
    with torch.no_grad():
        model.model.norm.weight.add_(0.5)  # "trained": differs from its zero init
        model.model.layers[0].mlp.up_proj.weight.fill_(2e38)  # never filled
    assert audit_buffers(model) == []  # parameters are opt-in
    issues = audit_buffers(model, check_parameters=True)
    found = {(i.name, i.kind, i.severity) for i in issues}
    assert found == {
        ("model.norm.weight", "differs_from_init", "info"),
        ("model.layers.0.mlp.up_proj.weight", "garbage", "error"),
    }
    assert all(i.is_parameter for i in issues)


class _World(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = nn.Linear(4, 4, bias=False)
        self.register_buffer("scale", torch.ones(4), persistent=False)
        self.register_buffer("colsum", self.gain.weight.detach().sum(0), persistent=False)


class _WithWorldInit(Gemma3ForCausalLM):
    """A subclass whose `_init_weights` fills its buffers with torch's own init function and from
    the values of a parameter (which a meta-device copy cannot provide)."""

    def __init__(self, config):
        super().__init__(config)
        self.world = _World()

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, _World):
            torch.nn.init.ones_(module.scale)
            module.colsum.copy_(module.gain.weight.sum(0))


def test_init_with_torch_functions_runs_even_under_no_init_weights():
    from transformers.initialization import no_init_weights

    model = _WithWorldInit(text_config())
    assert audit_buffers(model) == []
    model.world.scale.zero_()
    with no_init_weights():  # patches torch.nn.init.* into no-ops
        issues = audit_buffers(model)
    assert _kinds(issues, "world.scale") == {"all_zero", "reference_mismatch"}


def test_init_reading_parameter_values_gets_real_copies():
    model = _WithWorldInit(text_config())
    refs = reference_values(model, ["world.colsum"])
    assert torch.equal(refs["world.colsum"].value, model.world.gain.weight.detach().sum(0))
    model.world.colsum.add_(1.0)
    assert _kinds(audit_buffers(model), "world.colsum") == {"reference_mismatch"}


def test_audit_leaves_the_model_untouched():
    model = conditional(seed=0)
    model.model.language_model.rotary_emb.full_attention_inv_freq.zero_()
    before = {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()}
    before.update({n: b.clone() for n, b in model.named_buffers()})
    audit_buffers(model, check_parameters=True)
    reference_values(model, ["model.vision_tower.embeddings.position_ids"])  # other buffers: not targets
    after = dict(model.state_dict())
    after.update(dict(model.named_buffers()))
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fallbacks_cover_modules_outside_any_pretrained_model(tiny_lm):
    import copy

    holder = nn.Module()  # no PreTrainedModel above: no _init_weights to ask
    holder.rotary = copy.deepcopy(tiny_lm.model.rotary_emb)
    holder.embed = copy.deepcopy(tiny_lm.model.embed_tokens)
    assert audit_buffers(holder) == []
    holder.rotary.sliding_attention_original_inv_freq.mul_(2.0)
    holder.embed.embed_scale.fill_(1.0)
    issues = audit_buffers(holder)
    assert {(i.name, i.kind) for i in issues} == {
        ("rotary.sliding_attention_original_inv_freq", "reference_mismatch"),
        ("embed.embed_scale", "reference_mismatch"),
    }
