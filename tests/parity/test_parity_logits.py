"""compare_logits: exact agreement of equal models, honest failure of different ones."""

from __future__ import annotations

import copy

import torch

from theworld.parity.logits import compare_logits

from .conftest import causal_lm, conditional


def test_identical_models_agree_exactly(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    report = compare_logits(model_a, model_b, text_inputs)
    assert report.passed
    assert report.max_abs_diff == 0.0
    assert report.mean_abs_diff == 0.0
    assert report.greedy_agreement == 1.0
    assert report.shape_match and report.shape_a == (2, 12, 64)
    assert report.n_positions == 24


def test_a_small_perturbation_fails_at_zero_tolerance_and_passes_above_it(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    with torch.no_grad():
        model_b.model.norm.weight.add_(1e-3)
    strict = compare_logits(model_a, model_b, text_inputs)
    assert not strict.passed
    assert 0.0 < strict.max_abs_diff < 1.0
    loose = compare_logits(model_a, model_b, text_inputs, atol=1.0)
    assert loose.passed and loose.max_abs_diff == strict.max_abs_diff


def test_eval_mode_and_training_flags(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    model_b.train()
    model_b.model.layers[0].eval()  # a mixed state must come back as it was
    report = compare_logits(model_a, model_b, text_inputs)
    assert report.max_abs_diff == 0.0  # dropout-free eval forward in both
    assert model_b.training and model_b.model.training
    assert not model_b.model.layers[0].training


def test_shape_mismatch_is_a_failure_not_an_exception(text_inputs):
    small = causal_lm(seed=0)
    resized = causal_lm(seed=0, vocab_size=72)
    report = compare_logits(small, resized, text_inputs)
    assert not report.passed
    assert not report.shape_match
    assert report.shape_a == (2, 12, 64) and report.shape_b == (2, 12, 72)
    assert "shape mismatch" in report.message
    assert report.max_abs_diff == float("inf")
    assert report.greedy_agreement is not None  # positions still line up: argmax is comparable


def test_padding_positions_are_left_out(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    mask = torch.ones_like(text_inputs["input_ids"])
    mask[1, :4] = 0  # left padding in the second row
    report = compare_logits(model_a, model_b, {**text_inputs, "attention_mask": mask})
    assert report.n_positions == 20
    assert report.max_abs_diff == 0.0


def test_image_inputs_reach_the_comparison(image_inputs):
    model_a = conditional(seed=0)
    model_b = copy.deepcopy(model_a)
    assert compare_logits(model_a, model_b, image_inputs).max_abs_diff == 0.0
    with torch.no_grad():
        model_b.model.vision_tower.embeddings.patch_embedding.weight.mul_(1.5)
    report = compare_logits(model_a, model_b, image_inputs)
    assert not report.passed and report.max_abs_diff > 0.0
