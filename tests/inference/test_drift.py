"""The drift statistics on distributions whose answer is known: PSI by hand and for a
shift of the normal's mean, KS and chi-square p-values, the reference's bins, and when
a feature counts as drifting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aidx.inference.drift import (
    CategoricalReference,
    DriftReference,
    NumericReference,
    bin_counts,
    compare,
    compare_feature,
    psi,
)
from aidx.inference.settings_sections import DriftSettings

LIMITS = DriftSettings(min_window=30)


def test_psi_of_identical_shares_is_zero_and_of_a_known_shift_is_the_textbook_number() -> None:
    assert psi(np.array([300, 700]), np.array([30, 70])) == pytest.approx(0.0, abs=1e-3)
    # expected 50/50, actual 90/10: 0.4 ln(0.9/0.5) + (-0.4) ln(0.1/0.5) = 0.8789
    by_hand = 0.4 * math.log(0.9 / 0.5) - 0.4 * math.log(0.1 / 0.5)
    assert psi(np.array([50_000, 50_000]), np.array([90_000, 10_000])) == pytest.approx(
        by_hand, rel=1e-4
    )


def test_an_empty_bin_gives_a_finite_psi() -> None:
    assert math.isfinite(psi(np.array([10, 10, 10]), np.array([30, 0, 0])))


def test_bins_are_the_references_deciles() -> None:
    values = np.arange(1000, dtype=float)
    ref = DriftReference.fit(
        [{"x": float(v)} for v in values], model="m", version=1, dataset="arange"
    ).features["x"]
    assert isinstance(ref, NumericReference)
    assert len(ref.edges) == 9
    counts = bin_counts(values, ref.edges)
    assert counts.sum() == 1000
    assert counts.tolist() == pytest.approx([100] * 10, abs=1)


def _normal_reference(rng: np.random.Generator, n: int = 20_000) -> NumericReference:
    sample = rng.normal(0.0, 1.0, n)
    found = DriftReference.fit(
        [{"x": float(v)} for v in sample], model="m", version=1, dataset="N(0, 1)"
    ).features["x"]
    assert isinstance(found, NumericReference)
    return found


def test_a_half_sd_mean_shift_gives_psi_near_its_divergence_and_a_tiny_ks_p() -> None:
    """N(0,1) against N(0.5,1) on the deciles of N(0,1): PSI = 0.2377 exactly (the sum
    over the ten bins; fine bins would tend to the symmetric KL divergence, 0.25)."""
    rng = np.random.default_rng(7)
    ref = _normal_reference(rng)
    shifted = compare_feature("x", ref, list(rng.normal(0.5, 1.0, 20_000)), LIMITS)
    assert shifted.psi is not None and shifted.p_value is not None
    assert shifted.psi == pytest.approx(0.2377, abs=0.03)
    assert shifted.p_value < 1e-10
    same = compare_feature("x", ref, list(rng.normal(0.0, 1.0, 20_000)), LIMITS)
    assert same.psi is not None and same.psi < 0.01
    assert same.p_value is not None and same.p_value > 0.01
    assert not same.drifting
    # the KS test runs on the reference's 1000 order statistics; n is the reference's
    assert (shifted.window_n, shifted.reference_n) == (20_000, 20_000)


def test_a_one_sd_shift_drifts_and_the_same_numbers_on_too_few_do_not() -> None:
    rng = np.random.default_rng(8)
    ref = _normal_reference(rng)
    drifted = compare_feature("x", ref, list(rng.normal(1.0, 1.0, 200)), LIMITS)
    assert drifted.psi is not None and drifted.psi >= LIMITS.psi_alert
    assert drifted.drifting
    few = compare_feature("x", ref, list(rng.normal(1.0, 1.0, 200))[:20], LIMITS)
    assert few.window_n == 20 and not few.drifting  # under min_window (30)


def test_a_new_station_drifts_by_psi_and_chi_square() -> None:
    ref = CategoricalReference(n=300, counts={"ROOM1": 200, "ROOM2": 100})
    window = ["ROOM1"] * 20 + ["ROOM9"] * 20
    found = compare_feature("station_name", ref, window, LIMITS)
    assert found.test == "chi2"
    assert found.psi is not None and found.psi > 1.0
    assert found.p_value is not None and found.p_value < 1e-6
    assert found.drifting
    same = compare_feature("station_name", ref, ["ROOM1"] * 26 + ["ROOM2"] * 14, LIMITS)
    assert same.psi is not None and same.psi < 0.05 and not same.drifting


def test_fit_types_each_feature_and_round_trips_through_json() -> None:
    rng = np.random.default_rng(1)
    observations = [
        {"input_mean": float(v), "station_name": "A", "positive.Pneumonia": bool(v > 0)}
        for v in rng.normal(size=50)
    ] + [{"kvp": 120.0}]  # one kVp value: too few to monitor
    reference = DriftReference.fit(observations, model="m", version=2, dataset="drawn")
    assert set(reference.features) == {"input_mean", "station_name", "positive.Pneumonia"}
    assert reference.features["input_mean"].kind == "numeric"
    assert reference.features["positive.Pneumonia"].kind == "categorical"
    again = DriftReference.model_validate_json(reference.to_json())
    assert again == reference
    window = compare(reference, [], LIMITS)
    assert [f.window_n for f in window] == [0, 0, 0]
    assert all(f.psi is None and not f.drifting for f in window)
