"""Markdown rendering of parity results (`LogitReport`, `Divergence`, `BufferIssue` lists).

Every function returns a string; nothing here prints. The output is plain enough to read in a
terminal and is valid Markdown for a saved report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from theworld.parity.buffers import BufferIssue
from theworld.parity.divergence import Divergence
from theworld.parity.logits import LogitReport

__all__ = [
    "NOT_RUN",
    "render_buffer_issues",
    "render_divergence",
    "render_logit_report",
    "render_parity_report",
]


class _NotRun:
    def __repr__(self) -> str:
        return "NOT_RUN"


# Passed as `divergence` to `render_parity_report` when the search was not run (None means it
# was run and found nothing).
NOT_RUN = _NotRun()

_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    if value == 0:
        return "0"
    return f"{value:.4g}"


def _shape(shape: Sequence[int] | None) -> str:
    return "-" if shape is None else str(tuple(int(s) for s in shape))


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _names(names: Sequence[str], limit: int) -> str:
    shown = ", ".join(f"`{n or '<root>'}`" for n in names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names) - limit} more)"
    return shown


def render_logit_report(report: LogitReport, *, title: str = "Logits") -> str:
    """A short section: verdict line, then the numbers."""
    verdict = "PASS" if report.passed else "FAIL"
    lines = [f"## {title}: {verdict}", "", report.message, ""]
    greedy = "-" if report.greedy_agreement is None else f"{report.greedy_agreement:.2%}"
    rows = [
        ("shape", f"{_shape(report.shape_a)} vs {_shape(report.shape_b)}" + ("" if report.shape_match else "  (MISMATCH)")),
        ("dtype", f"{report.dtype_a} vs {report.dtype_b}"),
        ("max abs diff", _num(report.max_abs_diff)),
        ("mean abs diff", _num(report.mean_abs_diff)),
        ("greedy agreement", f"{greedy} of {report.n_positions} positions"),
        ("tolerance (atol)", _num(report.atol)),
    ]
    if report.worst_position is not None:
        rows.append(("largest diff at position", _shape(report.worst_position)))
    if report.first_greedy_mismatch is not None:
        rows.append(("first greedy mismatch at", _shape(report.first_greedy_mismatch)))
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def render_divergence(
    divergence: Divergence | None,
    *,
    title: str = "First divergence",
    max_tensors: int = 20,
    max_names: int = 20,
) -> str:
    """Where the two models part ways, and which weights/buffers of that module differ."""
    if divergence is None:
        return f"## {title}\n\nNo module output differs beyond the tolerance.\n"
    d = divergence
    name = d.module or "<root>"
    renamed = "" if d.module_b == d.module else f" (`{d.module_b or '<root>'}` in model B)"
    lines = [
        f"## {title}",
        "",
        f"First divergent module: **`{name}`**{renamed}, call {d.call_index}, "
        f"{d.module_type_a}" + ("" if d.module_type_a == d.module_type_b else f" vs {d.module_type_b}"),
        "",
        f"- output{d.output_path or ''}: max abs diff {_num(d.max_abs_diff)} (atol {_num(d.atol)}), "
        f"shape {_shape(d.shape_a)} vs {_shape(d.shape_b)}",
        f"- inputs to this call: max abs diff {_num(d.input_max_abs_diff)}",
        f"- previous module call (agreed): {d.previous_module or '- (this is the first call)'}",
    ]
    if d.cause == "module":
        lines.append("- the inputs agree, so this module itself computes differently")
    elif d.cause == "inputs":
        lines.append(
            "- the inputs already differ although every earlier module agreed: the difference arises "
            "in code outside any module (a parent's forward, masks, input preparation)"
        )
    lines.append("")
    if d.differing_tensors:
        lines += [
            "Parameters and buffers of this module that differ between the models:",
            "",
            "| name | kind | max abs diff | dtype A | dtype B | shape A | shape B | note |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in d.differing_tensors[:max_tensors]:
            lines.append(
                f"| `{t.name}` | {t.kind} | {_num(t.max_abs_diff)} | {t.dtype_a or '-'} | {t.dtype_b or '-'} | "
                f"{_shape(t.shape_a)} | {_shape(t.shape_b)} | {_cell(t.note)} |"
            )
        if len(d.differing_tensors) > max_tensors:
            lines.append(f"\n... and {len(d.differing_tensors) - max_tensors} more")
    else:
        lines.append("All parameters and buffers of this module are identical in both models.")
    lines.append("")
    if d.only_in_a:
        lines.append(f"Modules only in model A ({len(d.only_in_a)}): {_names(d.only_in_a, max_names)}")
    if d.only_in_b:
        lines.append(f"Modules only in model B ({len(d.only_in_b)}): {_names(d.only_in_b, max_names)}")
    if d.call_count_mismatches:
        calls = ", ".join(
            f"`{n or '<root>'}` {a} vs {b}" for n, (a, b) in list(d.call_count_mismatches.items())[:max_names]
        )
        lines.append(f"Modules called a different number of times (A vs B): {calls}")
    return "\n".join(lines).rstrip() + "\n"


def render_buffer_issues(
    issues: Sequence[BufferIssue],
    *,
    title: str = "Buffers",
    min_severity: str = "info",
) -> str:
    """A table of issues, errors first; `min_severity` ("error", "warning", "info") hides the
    less severe ones (their count is still given)."""
    limit = _SEVERITY_ORDER[min_severity]
    shown = [i for i in issues if _SEVERITY_ORDER.get(i.severity, 2) <= limit]
    shown.sort(key=lambda i: _SEVERITY_ORDER.get(i.severity, 2))
    hidden = len(issues) - len(shown)
    errors = sum(1 for i in issues if i.severity == "error")
    verdict = "FAIL" if errors else "PASS"
    lines = [f"## {title}: {verdict}", ""]
    if not issues:
        lines.append("No issues: every checked tensor is materialised, finite, plausible and matches its initialisation.")
        return "\n".join(lines) + "\n"
    counts = ", ".join(f"{sum(1 for i in issues if i.severity == s)} {s}" for s in _SEVERITY_ORDER)
    lines += [f"{len(issues)} issue(s): {counts}.", ""]
    if shown:
        lines += ["| severity | tensor | issue | dtype | detail |", "|---|---|---|---|---|"]
        for i in shown:
            dtype = i.dtype or "-"
            if i.expected_dtype:
                dtype += f" (expected {i.expected_dtype})"
            kind = ("parameter " if i.is_parameter else "") + i.kind
            lines.append(f"| {i.severity} | `{i.name}` | {kind} | {dtype} | {_cell(i.message)} |")
    if hidden:
        lines += ["", f"{hidden} issue(s) below '{min_severity}' not shown."]
    return "\n".join(lines) + "\n"


def render_parity_report(
    *,
    logits: LogitReport | None = None,
    divergence: Divergence | None | _NotRun = NOT_RUN,
    buffer_issues: Mapping[str, Sequence[BufferIssue]] | None = None,
    title: str = "Parity report",
    labels: tuple[str, str] | None = None,
) -> str:
    """The whole report: logits, then the divergence search, then one buffer section per model
    (`buffer_issues` maps a model label to its issues). Sections not given are left out.
    `labels` describes models A and B (e.g. checkpoint paths) in the header."""
    lines = [f"# {title}", ""]
    if labels is not None:
        lines += [f"- model A: {labels[0]}", f"- model B: {labels[1]}", ""]
    sections = []
    if logits is not None:
        sections.append(render_logit_report(logits))
    if not isinstance(divergence, _NotRun):
        sections.append(render_divergence(divergence))
    for label, issues in (buffer_issues or {}).items():
        sections.append(render_buffer_issues(issues, title=f"Buffers of {label}"))
    return "\n".join(lines + sections)
