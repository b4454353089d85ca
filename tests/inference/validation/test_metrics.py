"""The validation metrics against values worked out by hand (no scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest

from aidx.inference.validation import metrics as m
from aidx.inference.validation.evaluate import age_band, output_metrics


def test_auroc_known_cases() -> None:
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered
    assert m.auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert m.auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert m.auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    # a tie between a positive and a negative counts half: (1 + 1 + 0.5 + 1) / 4
    assert m.auroc(np.array([0.1, 0.5, 0.5, 0.9]), np.array([0, 0, 1, 1])) == 0.875
    assert m.auroc(np.full(4, 0.5), np.array([0, 1, 0, 1])) == 0.5
    with pytest.raises(ValueError):
        m.auroc(np.array([0.1, 0.2]), np.array([1, 1]))


def test_rates_carry_their_counts() -> None:
    scores, labels = np.array([0.1, 0.3, 0.5, 0.7, 0.9]), np.array([0, 1, 0, 1, 1])
    assert m.sensitivity(scores, labels, 0.5) == m.Count(2, 3)  # 0.7, 0.9 of 0.3, 0.7, 0.9
    assert m.specificity(scores, labels, 0.5) == m.Count(1, 2)  # 0.5 is called (>=)
    assert m.Count(0, 0).rate is None


def test_expected_calibration_error_and_reliability_bins() -> None:
    p, y = np.array([0.2, 0.2, 0.8, 0.8]), np.array([0, 1, 1, 1])
    # half the items at 0.2 with 50 % observed, half at 0.8 with 100 %: 0.5*0.3 + 0.5*0.2
    assert m.expected_calibration_error(p, y) == pytest.approx(0.25)
    bins = m.reliability(p, y)
    assert len(bins) == 10 and sum(b.n for b in bins) == 4
    assert bins[2].observed_rate == 0.5 and bins[8].mean_predicted == pytest.approx(0.8)
    assert m.reliability(np.array([1.0]), np.array([1]))[-1].n == 1  # 1.0 in the last bin
    assert m.expected_calibration_error(np.array([0.0, 1.0]), np.array([0, 1])) == 0.0


def test_roc_points_run_from_origin_to_one() -> None:
    points = m.roc_points(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert points[0] == (0.0, 0.0) and points[-1] == (1.0, 1.0)
    assert (0.0, 0.5) in points and (0.5, 0.5) in points


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = labels * 0.3 + rng.random(400) * 0.7

    def stats(idx: np.ndarray) -> dict[str, float | None]:
        return {"auroc": m.auroc(scores[idx], labels[idx]), "never": None}

    first = m.bootstrap_cis(stats, 400, seed=7, resamples=200)
    assert first == m.bootstrap_cis(stats, 400, seed=7, resamples=200)
    assert first != m.bootstrap_cis(stats, 400, seed=8, resamples=200)
    low, high = first["auroc"]  # type: ignore[misc]
    assert low < m.auroc(scores, labels) < high and high - low < 0.15
    assert first["never"] is None  # undefined in every resample: no interval
    assert m.bootstrap_cis(stats, 0, seed=0) == {}


def test_output_metrics_of_a_perfect_and_an_undefined_case() -> None:
    perfect = output_metrics(
        "x", np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]), 0.5, seed=0, resamples=50
    )
    assert perfect.auroc.value == 1.0 and perfect.sensitivity.k == perfect.sensitivity.n == 2
    assert perfect.specificity.value == 1.0 and perfect.n_positive == 2
    only_positives = output_metrics(
        "x", np.array([0.7, 0.2]), np.array([1, 1]), 0.5, seed=0, resamples=50
    )
    assert only_positives.auroc.value is None and only_positives.specificity.n == 0
    assert only_positives.sensitivity.value == 0.5 and only_positives.roc == []


@pytest.mark.parametrize(
    ("age", "band"),
    [
        ("45", "40-64"),
        ("017Y", "<18"),
        ("065Y", "65+"),
        ("006M", "<18"),
        ("30.5", "18-39"),
        ("x", None),
    ],
)
def test_age_bands(age: str, band: str | None) -> None:
    assert age_band(age) == band
