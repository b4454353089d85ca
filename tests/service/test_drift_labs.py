"""Drift of the lab anomaly model, end to end: specimens screened by the running
service are compared with the reference committed beside the demo model (the recipe's
first 1000 held-out panels). A stream like the reference (the recipe's validation
people) raises no alert; the same specimens from an analyser whose potassium reads
20 % high raise it on potassium, within the window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aidx.inference.settings import Role
from aidx.pipelines.labs.drift_sets import recipe_specimens
from aidx.pipelines.labs.types import SpecimenIn
from aidx.service.app import create_app

from ..conftest import auth, make_settings

STREAM = 200  # specimens per stream: the count window (min_window 100)


@pytest.fixture(scope="module")
def specimens() -> list[SpecimenIn]:
    return recipe_specimens(0, "val", STREAM)  # not the reference's (held-out) people


def _biased(specimens: list[SpecimenIn], code: str, factor: float) -> list[SpecimenIn]:
    def scaled(s: SpecimenIn) -> SpecimenIn:
        results = [
            r.model_copy(update={"value": round(float(r.value) * factor, 4)})
            if r.code == code and isinstance(r.value, float)
            else r
            for r in s.results
        ]
        return s.model_copy(update={"results": results})

    return [scaled(s) for s in specimens]


def _run(tmp: Path, specimens: list[SpecimenIn]) -> dict[str, Any]:
    settings = make_settings(
        tmp, enabled_models=["labs_anomaly"], drift_window_count=STREAM, drift_min_window=100
    )
    body = {"specimens": [s.model_dump(mode="json") for s in specimens]}
    with TestClient(create_app(settings)) as client:
        screened = client.post("/v1/labs/screen", json=body, headers=auth(Role.lab))
        assert screened.status_code == 200, screened.text
        drift = client.get("/v1/models/labs_anomaly/drift", headers=auth(Role.engineer))
        assert drift.status_code == 200, drift.text
        status: dict[str, Any] = drift.json()
        return status


def _count(status: dict[str, Any]) -> dict[str, Any]:
    (window,) = [w for w in status["windows"] if w["window"] == "count"]
    return {f["feature"]: f for f in window["features"]}


def _psi(status: dict[str, Any]) -> dict[str, float]:
    return {name: f["psi"] for name, f in _count(status).items()}


def test_specimens_like_the_reference_raise_no_alert(
    specimens: list[SpecimenIn], tmp_path: Path
) -> None:
    status = _run(tmp_path, specimens)
    print("no shift, PSI:", _psi(status))
    count = _count(status)
    assert count["value.potassium"]["window_n"] == STREAM
    assert count["anomaly_score"]["reference_n"] == 1000
    assert count["positive.anomaly"]["test"] == "chi2"
    assert status["drifting"] == []
    assert max(_psi(status).values()) < 0.25


def test_a_potassium_bias_fires_the_alert_on_potassium(
    specimens: list[SpecimenIn], tmp_path: Path
) -> None:
    potassium = "2823-3"
    assert any(r.code == potassium for r in specimens[0].results)
    status = _run(tmp_path, _biased(specimens, potassium, 1.2))
    print("potassium x1.2, PSI:", _psi(status))
    count = _count(status)
    assert count["value.potassium"]["drifting"]
    assert count["value.potassium"]["psi"] >= 0.25 and count["value.potassium"]["p_value"] < 0.01
    assert "value.potassium" in status["drifting"]
    assert not {"value.sodium", "value.glucose", "value.hemoglobin"} & set(status["drifting"])
    assert count["anomaly_score"]["psi"] >= 0.25  # what the model says moves with it
