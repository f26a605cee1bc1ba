"""report: the rendered text names what the reports found."""

from __future__ import annotations

import torch

from theworld.parity.buffers import audit_buffers
from theworld.parity.divergence import find_first_divergence
from theworld.parity.logits import compare_logits
from theworld.parity.report import (
    NOT_RUN,
    render_buffer_issues,
    render_divergence,
    render_logit_report,
    render_parity_report,
)


def test_reports_render_findings(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    model_b.model.rotary_emb.full_attention_inv_freq.zero_()
    logits = compare_logits(model_a, model_b, text_inputs)
    divergence = find_first_divergence(model_a, model_b, text_inputs)
    issues = audit_buffers(model_b)

    text = render_logit_report(logits)
    assert text.startswith("## Logits: FAIL") and "greedy agreement" in text

    text = render_divergence(divergence)
    assert "**`model.rotary_emb`**" in text and "`full_attention_inv_freq`" in text
    assert "this module itself computes differently" in text

    text = render_buffer_issues(issues)
    assert "FAIL" in text and "model.rotary_emb.full_attention_inv_freq" in text and "all_zero" in text

    full = render_parity_report(
        logits=logits, divergence=divergence, buffer_issues={"B": issues}, labels=("gemma", "theworld")
    )
    assert full.startswith("# Parity report") and "model A: gemma" in full
    assert "## Logits: FAIL" in full and "## First divergence" in full and "## Buffers of B: FAIL" in full


def test_reports_render_success(lm_pair, text_inputs):
    model_a, model_b = lm_pair
    logits = compare_logits(model_a, model_b, text_inputs)
    assert render_logit_report(logits).startswith("## Logits: PASS")
    assert "No module output differs" in render_divergence(None)
    assert "PASS" in render_buffer_issues([])
    full = render_parity_report(logits=logits, divergence=NOT_RUN, buffer_issues={})
    assert "First divergence" not in full
    assert "No module output differs" in render_parity_report(divergence=None)


def test_info_issues_can_be_hidden(tiny_lm):
    with torch.no_grad():
        tiny_lm_copy = type(tiny_lm)(tiny_lm.config)
        tiny_lm_copy.load_state_dict(tiny_lm.state_dict())
        tiny_lm_copy.model.norm.weight.add_(1.0)
    issues = audit_buffers(tiny_lm_copy, check_parameters=True)
    assert [i.severity for i in issues] == ["info"]
    text = render_buffer_issues(issues, min_severity="warning")
    assert "PASS" in text and "model.norm.weight" not in text and "1 issue(s) below 'warning' not shown" in text


def test_an_unknown_severity_is_shown_as_info():
    from theworld.parity.buffers import BufferIssue

    issues = [BufferIssue("a.b", "custom", "notice", "a hand-made finding"), BufferIssue("c", "meta", "error", "on meta")]
    shown = render_buffer_issues(issues)
    assert shown.index("`c`") < shown.index("`a.b`")  # errors first, the unknown one with the infos
    assert "`a.b`" not in render_buffer_issues(issues, min_severity="warning")
