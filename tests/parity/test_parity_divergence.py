"""find_first_divergence: names the module where two models part ways, and why."""

from __future__ import annotations

import copy

import torch
from torch import nn

from theworld.parity.divergence import find_first_divergence, module_name_differences

from .conftest import conditional


def _perturb_down_proj(model):
    weight = model.get_parameter("model.layers.1.mlp.down_proj.weight")
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        weight.add_(torch.randn(weight.shape, generator=generator) * 1e-2)


def test_identical_models_have_no_divergence(lm_pair, text_inputs):
    assert find_first_divergence(*lm_pair, text_inputs) is None


def test_perturbed_weight_is_named_with_its_parameter(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    _perturb_down_proj(model_b)
    found = find_first_divergence(model_a, model_b, text_inputs)
    assert found is not None
    assert found.module == "model.layers.1.mlp.down_proj"
    assert found.call_index == 0
    assert found.max_abs_diff > 0.0
    assert found.input_max_abs_diff == 0.0 and found.cause == "module"
    assert found.previous_module.startswith("model.layers.1.mlp.up_proj")
    assert [(t.name, t.kind) for t in found.differing_tensors] == [("weight", "parameter")]
    assert found.differing_tensors[0].max_abs_diff > 0.0
    assert found.differing_tensors[0].dtype_a == found.differing_tensors[0].dtype_b == "float32"
    assert found.only_in_a == [] and found.only_in_b == []


def test_tolerance_hides_small_differences(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    _perturb_down_proj(model_b)
    assert find_first_divergence(model_a, model_b, text_inputs, atol=1e3) is None


def test_zeroed_rotary_buffer_is_found_at_the_rotary_module(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    model_b.model.rotary_emb.full_attention_inv_freq.zero_()
    found = find_first_divergence(model_a, model_b, text_inputs)
    assert found is not None
    assert found.module == "model.rotary_emb"
    # Called once per layer type: the call that uses the zeroed buffer is the one reported.
    assert found.call_index == list(set(model_a.config.layer_types)).index("full_attention")
    names = [t.name for t in found.differing_tensors]
    assert names == ["full_attention_inv_freq"]
    assert found.differing_tensors[0].kind == "buffer"


def test_bounded_memory_windows_find_the_same_module(lm_pair, text_inputs, monkeypatch):
    from theworld.parity import divergence

    model_a, model_b = lm_pair
    _perturb_down_proj(model_b)
    windows = []
    record = divergence._record_window

    def counting(*args, **kwargs):
        window = record(*args, **kwargs)
        windows.append(sum(t.numel() * t.element_size() for _, ts in window.records.values() for _, t in ts))
        return window

    monkeypatch.setattr(divergence, "_record_window", counting)
    budget = 40_000
    found = find_first_divergence(model_a, model_b, text_inputs, max_recorded_bytes=budget)
    assert found is not None and found.module == "model.layers.1.mlp.down_proj"
    assert len(windows) > 1 and max(windows) <= budget


class _Wrapped(nn.Module):
    """A model whose modules sit under another prefix, with an extra module that runs."""

    def __init__(self, core: nn.Module):
        super().__init__()
        self.probe = nn.Linear(4, 4)
        self.core = core

    def forward(self, **inputs):
        self.probe(torch.zeros(1, 4))
        return self.core(**inputs)


def test_extra_submodule_and_prefix_map(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    wrapped = _Wrapped(model_b)
    only_a, only_b = module_name_differences(model_a, wrapped, {"core": ""})
    assert only_a == [] and only_b == ["", "probe"]
    assert find_first_divergence(model_a, wrapped, text_inputs, name_map={"core": ""}) is None

    _perturb_down_proj(model_b)
    found = find_first_divergence(model_a, wrapped, text_inputs, name_map={"core": ""})
    assert found.module == "model.layers.1.mlp.down_proj"
    assert found.module_b == "core.model.layers.1.mlp.down_proj"
    assert found.only_in_b == ["", "probe"]
    assert [t.name for t in found.differing_tensors] == ["weight"]

    # The same with a callable map, dropping the extra module explicitly.
    def rename(name):
        if name == "probe":
            return None
        return name.removeprefix("core.") if name.startswith("core.") else ("" if name == "core" else name)

    found = find_first_divergence(model_a, wrapped, text_inputs, name_map=rename)
    assert found.module == "model.layers.1.mlp.down_proj"
    assert "probe" in found.only_in_b


def test_without_a_map_unmatched_prefixes_are_reported(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    only_a, only_b = module_name_differences(model_a, _Wrapped(model_b))
    assert "model.layers.1.mlp.down_proj" in only_a
    assert "core.model.layers.1.mlp.down_proj" in only_b


class _ShiftedPositions(nn.Module):
    """Same weights, but the parent's forward feeds other position ids: functional code, no module."""

    def __init__(self, core: nn.Module):
        super().__init__()
        self.core = core

    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0) + 1
        return self.core(input_ids=input_ids, position_ids=positions)


def test_difference_born_outside_modules_blames_the_inputs(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    found = find_first_divergence(model_a, _ShiftedPositions(model_b), text_inputs, name_map={"core": ""})
    assert found is not None
    assert found.module == "model.rotary_emb"
    assert found.differing_tensors == []
    assert found.input_max_abs_diff > 0.0 and found.cause == "inputs"


def test_multimodal_vision_damage_is_located_in_the_vision_tower(image_inputs):
    model_a = conditional(seed=0)
    model_b = copy.deepcopy(model_a)
    assert find_first_divergence(model_a, model_b, image_inputs) is None
    with torch.no_grad():
        model_b.model.vision_tower.encoder.layers[0].mlp.fc2.weight.mul_(1.1)
    found = find_first_divergence(model_a, model_b, image_inputs)
    assert found.module == "model.vision_tower.encoder.layers.0.mlp.fc2"
    assert [t.name for t in found.differing_tensors] == ["weight"]


def test_tensors_of_one_model_only_are_listed_with_a_note(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    _perturb_down_proj(model_b)
    model_b.get_submodule("model.layers.1.mlp.down_proj").register_buffer("extra", torch.ones(2))
    for first, second, side in ((model_a, model_b, "B"), (model_b, model_a, "A")):
        found = find_first_divergence(first, second, text_inputs)
        assert [(t.name, t.kind, t.note) for t in found.differing_tensors] == [
            ("weight", "parameter", ""),
            ("extra", "buffer", f"only in model {side}"),
        ]
        assert found.differing_tensors[1].max_abs_diff is None
