"""Drift of the CT model, end to end: series posted to the running service are
compared with the reference committed beside the demo model (its held-out chest
phantoms). A stream like the reference (validation phantoms) raises no alert; the
same phantoms from a scanner whose calibration reads 200 HU high raise it on the
model input's intensity, and not on the acquisition's spacing, within the window."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aidx.inference.settings import Role
from aidx.pipelines.ct import ood_sets, synthetic
from aidx.pipelines.ct.synthetic import Phantom
from aidx.pipelines.ct.train import split_seed
from aidx.service.app import create_app

from ..conftest import auth, make_settings

STREAM = 24  # series per stream: the count window (min_window 20)


@pytest.fixture(scope="module")
def phantoms() -> list[Phantom]:
    seed = split_seed(0, "validation")  # not the reference's (held-out) phantoms
    return [ood_sets.chest_phantom(seed, i) for i in range(STREAM)]


def _series(phantom: Phantom, folder: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    files = synthetic.write_series(phantom, folder)
    return [("files", (p.name, p.read_bytes(), "application/dicom")) for p in files]


def _run(tmp: Path, phantoms: list[Phantom], offset_hu: float = 0.0) -> dict[str, Any]:
    settings = make_settings(
        tmp, enabled_models=["ct_pneumonia"], writeback=False,
        drift_window_count=STREAM, drift_min_window=20,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        for i, phantom in enumerate(phantoms):
            if offset_hu:
                phantom = dataclasses.replace(phantom, hu=phantom.hu + offset_hu)
            files = _series(phantom, tmp / f"series{i}")
            answer = client.post("/v1/ct", files=files, headers=auth(Role.radiologist))
            assert answer.status_code == 200, answer.text
        drift = client.get("/v1/models/ct_pneumonia/drift", headers=auth(Role.engineer))
        assert drift.status_code == 200, drift.text
        status: dict[str, Any] = drift.json()
        return status


def _count(status: dict[str, Any]) -> dict[str, Any]:
    (window,) = [w for w in status["windows"] if w["window"] == "count"]
    return {f["feature"]: f for f in window["features"]}


def _psi(status: dict[str, Any]) -> dict[str, float]:
    return {name: f["psi"] for name, f in _count(status).items()}


def test_series_like_the_reference_raise_no_alert(phantoms: list[Phantom], tmp_path: Path) -> None:
    status = _run(tmp_path, phantoms)
    print("no shift, PSI:", _psi(status))
    count = _count(status)
    assert count["input_mean"]["window_n"] == STREAM
    assert {"pixel_spacing_mm", "slice_spacing_mm", "station_name"} <= set(count)
    assert status["drifting"] == []


def test_a_calibration_offset_fires_the_alert_on_the_input_intensity(
    phantoms: list[Phantom], tmp_path: Path
) -> None:
    status = _run(tmp_path, phantoms, offset_hu=200.0)
    print("+200 HU, PSI:", _psi(status))
    count = _count(status)
    assert count["input_mean"]["drifting"]
    assert count["input_mean"]["psi"] >= 0.25 and count["input_mean"]["p_value"] < 0.01
    assert not {"pixel_spacing_mm", "slice_spacing_mm", "station_name"} & set(status["drifting"])
