"""Records each outcome of transformers' common model tests per tester class.

The last test of test_common.py compares TheWorld's outcomes with Gemma 3's: a test that passes
for Gemma 3 and is failed *or skipped* for TheWorld fails the suite.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

OUTCOMES: dict[str, dict[str, str]] = defaultdict(dict)


def pytest_runtest_logreport(report):
    """'passed', 'failed' or 'skipped' per (class, test); a failed setup or teardown counts as failed."""
    parts = report.nodeid.split("::")
    if len(parts) != 3:  # file::Class::test only
        return
    if report.when == "call" or report.outcome != "passed":
        previous = OUTCOMES[parts[1]].get(parts[2])
        if previous != "failed":
            OUTCOMES[parts[1]][parts[2]] = report.outcome


@pytest.fixture(scope="session")
def tester_outcomes() -> dict[str, dict[str, str]]:
    return OUTCOMES


def pytest_terminal_summary(terminalreporter):
    """Per tester class: how many of transformers' common tests passed, were skipped, failed."""
    if not OUTCOMES:
        return
    terminalreporter.section("transformers common model tests")
    for name, outcomes in OUTCOMES.items():
        counts = {k: sum(1 for v in outcomes.values() if v == k) for k in ("passed", "skipped", "failed")}
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
