"""The comparison of a shadow version with the serving one: counts and Pearson's r
from running sums, which add up over batches exactly."""

from __future__ import annotations

import numpy as np
import pytest

from aidx.inference.shadow_compare import LabelTally, ScoreView, compare, tally


def test_tally_counts_calls_at_each_versions_own_threshold() -> None:
    serving = np.array([0.1, 0.6, 0.7, 0.2, 0.9])
    shadow = np.array([0.3, 0.2, 0.8, 0.5, 0.95])
    t = tally(serving, shadow, 0.5, 0.4)  # present: serving >= 0.5, shadow >= 0.4
    assert (t.n, t.decided) == (5, 5)
    assert (t.both_present, t.serving_only, t.shadow_only) == (2, 1, 1)
    assert t.agree == 3 and t.agreement == pytest.approx(0.6)


def test_correlation_from_sums_matches_numpy_over_several_batches() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=300)
    y = 0.7 * x + 0.3 * rng.uniform(size=300)
    total = LabelTally()
    for part in np.array_split(np.arange(300), 7):  # batches of uneven size
        total.add(tally(x[part], y[part], None, None))
    assert total.n == 300 and total.decided == 0 and total.agreement is None
    assert total.correlation == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)


def test_no_correlation_without_spread() -> None:
    assert tally(np.ones(4), np.arange(4.0), None, None).correlation is None
    assert tally(np.ones(1), np.ones(1), None, None).correlation is None


def test_compare_pairs_labels_by_name_and_skips_unknown_ones() -> None:
    serving = ScoreView(("A", "B"), (0.5, 0.5), lambda out: out["s"])
    shadow = ScoreView(("B", "C"), (0.5, 0.5), lambda out: out["t"])
    s = {"s": np.array([[0.9, 0.1], [0.2, 0.8]])}
    t = {"t": np.array([[0.2, 0.0], [0.9, 0.0]])}
    result = compare(serving, shadow, s, t)
    assert set(result) == {"B"}
    assert result["B"].agree == 2 and result["B"].both_present == 1
