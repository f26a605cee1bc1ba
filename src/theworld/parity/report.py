"""Markdown rendering of parity results: readable in a terminal, valid Markdown when saved."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from theworld.parity.buffers import BufferIssue
from theworld.parity.divergence import Divergence
from theworld.parity.logits import LogitReport

__all__ = ["NOT_RUN", "render_buffer_issues", "render_divergence", "render_logit_report", "render_parity_report"]


class _NotRun:
    def __repr__(self) -> str:
        return "NOT_RUN"


# `divergence=NOT_RUN`: the search was not run (None means it ran and found nothing).
NOT_RUN = _NotRun()
_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
MAX_ROWS = 20  # differing tensors and module names listed before "... and N more"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return "0" if value == 0 else f"{value:.4g}"  # inf and nan print as such


def _shape(shape: Sequence[int] | None) -> str:
    return "-" if shape is None else str(tuple(int(s) for s in shape))


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(c).replace("|", "\\|").replace("\n", " ") for c in row] for row in rows]
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header)] + [f"| {' | '.join(row)} |" for row in cells]


def render_logit_report(report: LogitReport) -> str:
    """A short section: verdict line, then the numbers."""
    greedy = "-" if report.greedy_agreement is None else f"{report.greedy_agreement:.2%}"
    rows = [
        ("shape", f"{_shape(report.shape_a)} vs {_shape(report.shape_b)}" + ("" if report.shape_match else "  (MISMATCH)")),
        ("dtype", f"{report.dtype_a} vs {report.dtype_b}"),
        ("max abs diff", _num(report.max_abs_diff)),
        ("mean abs diff", _num(report.mean_abs_diff)),
        ("greedy agreement", f"{greedy} of {report.n_positions} positions"),
        ("tolerance (atol)", _num(report.atol)),
    ]
    optional = {"largest diff at position": report.worst_position, "first greedy mismatch at": report.first_greedy_mismatch}
    rows += [(label, _shape(position)) for label, position in optional.items() if position is not None]
    lines = [f"## Logits: {'PASS' if report.passed else 'FAIL'}", "", report.message, ""] + _table(("", ""), rows)
    return "\n".join(lines) + "\n"


def render_divergence(divergence: Divergence | None) -> str:
    """Where the two models part ways, and which weights/buffers of that module differ."""
    if divergence is None:
        return "## First divergence\n\nNo module output differs beyond the tolerance.\n"
    d = divergence
    renamed = "" if d.module_b == d.module else f" (`{d.module_b or '<root>'}` in model B)"
    types = d.module_type_a + ("" if d.module_type_a == d.module_type_b else f" vs {d.module_type_b}")
    lines = [
        "## First divergence",
        "",
        f"First divergent module: **`{d.module or '<root>'}`**{renamed}, call {d.call_index}, {types}",
        "",
        f"- output{d.output_path or ''}: max abs diff {_num(d.max_abs_diff)} (atol {_num(d.atol)}), "
        f"shape {_shape(d.shape_a)} vs {_shape(d.shape_b)}",
        f"- inputs to this call: max abs diff {_num(d.input_max_abs_diff)}",
        f"- previous module call (agreed): {d.previous_module or '- (this is the first call)'}",
    ]
    if d.cause == "module":
        lines.append("- the inputs agree, so this module itself computes differently")
    elif d.cause == "inputs":
        lines.append("- the inputs already differ although every earlier module agreed: the difference arises "
                     "in code outside any module (a parent's forward, masks, input preparation)")
    lines.append("")
    if d.differing_tensors:
        lines += ["Parameters and buffers of this module that differ between the models:", ""]
        rows = [
            (f"`{t.name}`", t.kind, _num(t.max_abs_diff), t.dtype_a or "-", t.dtype_b or "-", _shape(t.shape_a), _shape(t.shape_b), t.note)
            for t in d.differing_tensors[:MAX_ROWS]
        ]
        lines += _table(("name", "kind", "max abs diff", "dtype A", "dtype B", "shape A", "shape B", "note"), rows)
        if len(d.differing_tensors) > MAX_ROWS:
            lines.append(f"\n... and {len(d.differing_tensors) - MAX_ROWS} more")
    else:
        lines.append("All parameters and buffers of this module are identical in both models.")
    lines.append("")
    for label, names in (("A", d.only_in_a), ("B", d.only_in_b)):
        if names:
            shown = ", ".join(f"`{n or '<root>'}`" for n in names[:MAX_ROWS])
            more = f", ... ({len(names) - MAX_ROWS} more)" if len(names) > MAX_ROWS else ""
            lines.append(f"Modules only in model {label} ({len(names)}): {shown}{more}")
    if d.call_count_mismatches:
        calls = ", ".join(f"`{n or '<root>'}` {a} vs {b}" for n, (a, b) in list(d.call_count_mismatches.items())[:MAX_ROWS])
        lines.append(f"Modules called a different number of times (A vs B): {calls}")
    return "\n".join(lines).rstrip() + "\n"


def render_buffer_issues(issues: Sequence[BufferIssue], *, title: str = "Buffers", min_severity: str = "info") -> str:
    """A table of issues, errors first; `min_severity` ("error", "warning", "info") hides the less
    severe ones (their count is still given)."""
    rank = _SEVERITY_ORDER
    def level(issue: BufferIssue) -> int:  # an unknown severity counts as info
        return rank.get(issue.severity, 2)

    shown = sorted((i for i in issues if level(i) <= rank[min_severity]), key=level)
    lines = [f"## {title}: {'FAIL' if any(i.severity == 'error' for i in issues) else 'PASS'}", ""]
    if not issues:
        clean = "No issues: every checked tensor is materialised, finite, plausible and matches its initialisation."
        return "\n".join(lines + [clean]) + "\n"
    counts = ", ".join(f"{sum(1 for i in issues if i.severity == s)} {s}" for s in _SEVERITY_ORDER)
    lines += [f"{len(issues)} issue(s): {counts}.", ""]
    if shown:
        rows = [
            (i.severity, f"`{i.name}`", ("parameter " if i.is_parameter else "") + i.kind,
             (i.dtype or "-") + (f" (expected {i.expected_dtype})" if i.expected_dtype else ""), i.message)
            for i in shown
        ]  # fmt: skip
        lines += _table(("severity", "tensor", "issue", "dtype", "detail"), rows)
    if len(shown) < len(issues):
        lines += ["", f"{len(issues) - len(shown)} issue(s) below '{min_severity}' not shown."]
    return "\n".join(lines) + "\n"


def render_parity_report(
    *,
    logits: LogitReport | None = None,
    divergence: Divergence | None | object = NOT_RUN,
    buffer_issues: Mapping[str, Sequence[BufferIssue]] | None = None,
    labels: tuple[str, str] | None = None,
    extra: Sequence[str] = (),
) -> str:
    """The whole report: logits, divergence, then one buffer section per model label; sections
    not given are left out."""
    header = ([f"- model A: {labels[0]}", f"- model B: {labels[1]}"] if labels is not None else []) + list(extra)
    lines = ["# Parity report", ""] + (header + [""] if header else [])
    if logits is not None:
        lines.append(render_logit_report(logits))
    if divergence is not NOT_RUN:
        lines.append(render_divergence(divergence))
    for label, issues in (buffer_issues or {}).items():
        lines.append(render_buffer_issues(issues, title=f"Buffers of {label}"))
    return "\n".join(lines)
