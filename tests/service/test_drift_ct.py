"""CT drift, end to end: chest CT series posted to the running service are compared
with the reference committed beside the demo CT model (24 of its recipe's held-out
phantoms, models/ct_pneumonia/1/drift.json). Series from another split whose scanner
reads 150 HU high (a RescaleIntercept off by 150, as a miscalibrated scanner would
give) raise the alert on the input's intensity within the window, not on the
spacing or the station."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient

from aidx.inference.settings import Role
from aidx.pipelines.ct.drift_sets import phantom_series
from aidx.pipelines.ct.train import split_seed
from aidx.service.app import create_app

from ..conftest import auth, make_settings
from .test_drift import _alerts, _window

pytestmark = pytest.mark.slow

STREAM = 10  # series in the window (its minimum)
OFFSET_HU = 150


def _miscalibrated(blob: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(blob))
    ds.RescaleIntercept = float(ds.RescaleIntercept) + OFFSET_HU
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _run(tmp: Path) -> tuple[dict[str, Any], str]:
    settings = make_settings(
        tmp, enabled_models=["ct_pneumonia"], writeback=False,
        drift_window_count=STREAM, drift_min_window=STREAM,
    )  # fmt: skip
    seed = split_seed(0, "validation")  # not the reference's (held-out) phantoms
    with TestClient(create_app(settings)) as client:
        for i in range(STREAM):
            blobs = [_miscalibrated(b) for b in phantom_series(seed, i)]
            files = [("files", (f"{n}.dcm", b, "application/dicom")) for n, b in enumerate(blobs)]
            answer = client.post("/v1/ct", files=files, headers=auth(Role.radiologist))
            assert answer.status_code == 200, answer.text
        drift = client.get("/v1/models/ct_pneumonia/drift", headers=auth(Role.engineer))
        assert drift.status_code == 200, drift.text
        return drift.json(), client.get("/metrics").text


def test_a_scanner_reading_high_fires_the_alert_on_the_input_intensity(tmp_path: Path) -> None:
    status, metrics = _run(tmp_path)
    count = _window(status, "count")
    assert count["_n"] == STREAM and count["input_mean"]["reference_n"] == 24
    assert count["input_mean"]["drifting"], count["input_mean"]
    assert count["input_mean"]["psi"] >= 0.25 and count["input_mean"]["p_value"] < 0.01
    assert not {"pixel_spacing_mm", "station_name", "manufacturer"} & set(status["drifting"])
    assert ("input_mean", "count") in _alerts(metrics)
