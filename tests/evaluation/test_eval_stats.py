"""Bootstrap intervals and paired tests: known values, determinism, and the right shrinkage."""

from __future__ import annotations

import pytest

from theworld.evaluation.stats import bootstrap_ci, mcnemar, paired_bootstrap


def test_bootstrap_ci_contains_mean_and_narrows_with_n() -> None:
    small = [True] * 70 + [False] * 30
    large = [True] * 700 + [False] * 300
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < 0.7 < hi_s and lo_l < 0.7 < hi_l
    # roughly +-9 points at n=100, +-3 at n=1000 (binomial standard error * 1.96)
    assert 0.14 < hi_s - lo_s < 0.22
    assert 0.04 < hi_l - lo_l < 0.07


def test_bootstrap_is_seeded() -> None:
    data = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1]
    assert bootstrap_ci(data, seed=3) == bootstrap_ci(data, seed=3)
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_paired_bootstrap() -> None:
    a = [1] * 60 + [0] * 40
    same = paired_bootstrap(a, a)
    assert same == (0.0, 0.0, 0.0)
    b = [1] * 40 + [0] * 60  # b is right only where a is right
    diff, lo, hi = paired_bootstrap(a, b)
    assert diff == pytest.approx(0.2)
    assert 0.0 < lo < 0.2 < hi
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1])


def test_mcnemar_exact_known_table() -> None:
    # 1 item only a gets right, 7 only b: p = 2 * (C(8,0) + C(8,1)) / 2**8 = 0.0703125
    a = [1] + [0] * 7 + [1] * 5 + [0] * 3
    b = [0] + [1] * 7 + [1] * 5 + [0] * 3
    assert mcnemar(a, b) == pytest.approx(0.0703125)
    assert mcnemar(b, a) == pytest.approx(0.0703125)
    assert mcnemar([1, 0, 1], [1, 0, 1]) == 1.0  # no discordant pair
    assert mcnemar([1, 0], [0, 1]) == 1.0  # capped at 1
    with pytest.raises(ValueError):
        mcnemar([0.5, 1.0], [1.0, 1.0])
