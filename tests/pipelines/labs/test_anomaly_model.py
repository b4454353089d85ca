"""The shipped anomaly model: the ONNX graph agrees with the exact reference, its
contributions explain its score, its card matches its file and its recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from aidx.inference.repository import load_entry
from aidx.pipelines.labs.anomaly import PanelAnomalyModel, export_onnx, to_features
from aidx.pipelines.labs.synthetic import (
    INJECTORS,
    complete_panels,
    load_nhanes,
    mask_to_shape,
)

from .helpers import ROOT

MODEL_DIR = ROOT / "models" / "labs_anomaly"


def front_matter() -> dict[str, object]:
    return dict(yaml.safe_load((MODEL_DIR / "card.md").read_text().split("---", 2)[1]))


def test_the_repository_entry_verifies_and_states_its_metrics() -> None:
    entry = load_entry(MODEL_DIR)
    assert entry.problem is None and entry.checks == {"sha256": True}
    assert entry.card is not None and entry.card.demo_weights and entry.card.pipeline == "labs"
    metrics = entry.card.metrics
    assert metrics["false_alarm_rate_target"] == 0.01
    assert all(0 <= v <= 0.02 for v in metrics["heldout_false_alarm_rate"].values())
    assert metrics["heldout_detection_rate"]["edta_contamination"]["full"] > 0.9
    assert "not for clinical use" in (MODEL_DIR / "card.md").read_text()


def test_nhanes_is_real_and_read_directly() -> None:
    people = load_nhanes()
    assert len(people.age_y) > 4000
    assert people.age_y.min() >= 18
    a1c = people.real["hba1c"]
    assert 5.0 < np.median(a1c) < 6.2  # US adults' median HbA1c ~5.5 %
    hdl = people.real["cholesterol_hdl"]
    assert np.median(hdl[people.sex_male]) < np.median(hdl[~people.sex_male])


@pytest.fixture(scope="module")
def small_model() -> tuple[PanelAnomalyModel, list[str], np.ndarray]:
    features = front_matter()["features"]
    assert isinstance(features, list)
    people = load_nhanes()
    panels = complete_panels(people, features, seed=7)
    model = PanelAnomalyModel(random_state=0).fit(to_features(panels[:1500]))
    return model, features, panels[1500:1800]


def test_the_onnx_graph_matches_the_exact_reference_on_partial_panels(
    small_model: tuple[PanelAnomalyModel, list[str], np.ndarray],
) -> None:
    model, features, panels = small_model
    session = ort.InferenceSession(export_onnx(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = to_features(panels)
    x[rng.random(x.shape) < 0.4] = np.nan  # random missingness, any pattern
    d2, contributions = session.run(["d2", "contributions"], {"values": x})
    ref_d2, ref_contributions = model.score(x)
    np.testing.assert_allclose(d2[:, 0], ref_d2, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(contributions, ref_contributions, rtol=1e-2, atol=5e-3)
    # contributions add up to the score and are zero where the analyte is missing
    np.testing.assert_allclose(contributions.sum(axis=1), d2[:, 0], rtol=1e-4, atol=1e-4)
    assert np.all(contributions[np.isnan(x)] == 0)


def test_injected_edta_is_scored_higher_than_normal(
    small_model: tuple[PanelAnomalyModel, list[str], np.ndarray],
) -> None:
    model, features, panels = small_model
    rng = np.random.default_rng(1)
    normal, _ = model.score(to_features(mask_to_shape(panels, features, "cmp")))
    edta = INJECTORS["edta_contamination"](panels, features, rng)
    bad, contributions = model.score(to_features(mask_to_shape(edta, features, "cmp")))
    assert np.median(bad) > 5 * np.median(normal)
    top = np.argmax(contributions, axis=1)
    named = {features[i] for i in top}
    assert named <= {"potassium", "calcium", "alp"}


@pytest.mark.slow
def test_the_shipped_file_is_the_recipe_s_output(tmp_path: Path) -> None:
    from aidx.pipelines.labs.train import train

    metrics = train(tmp_path / "labs_anomaly", seed=0)
    card = tmp_path / "labs_anomaly" / "card.md"
    shipped = front_matter()
    rebuilt = dict(yaml.safe_load(card.read_text().split("---", 2)[1]))
    assert rebuilt["labels"] == shipped["labels"]
    assert json.dumps(metrics["heldout_detection_rate"], sort_keys=True) == json.dumps(
        shipped["metrics"]["heldout_detection_rate"],
        sort_keys=True,  # type: ignore[index]
    )
