"""Drift, end to end: streams of synthetic chest CRs posted to the running service are
compared with the reference committed beside the demo model (its 300 held-out
phantoms). A stream like the reference raises no alert; the same studies with another
intensity curve (a gamma, as another vendor's processing would give) or from a new
station raise it for those features, in the API and on /metrics, within the window."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aidx.inference.drift import REFERENCE_FILE
from aidx.inference.settings import Role
from aidx.pipelines.cxr import synthetic_dicom, train_data
from aidx.pipelines.cxr.synthetic import SyntheticCxr
from aidx.pipelines.cxr.train_recipe import split_seed
from aidx.service.app import create_app

from ..conftest import MODELS, auth, make_settings

STREAM = 40  # studies per stream: the count window (min_window 30)
INPUT_FEATURES = {"input_mean", "input_p50", "input_p05", "input_p95", "input_std"}


@pytest.fixture(scope="module")
def phantoms() -> list[SyntheticCxr]:
    seed = split_seed(0, "val")  # not the reference's (held-out) phantoms
    return [train_data.draw_sample(seed, i) for i in range(STREAM)]


def _dicom(sample: SyntheticCxr, index: int, tmp: Path, station: str | None) -> bytes:
    path = tmp / f"{index}.dcm"
    photometric = "MONOCHROME1" if index % 2 else "MONOCHROME2"
    synthetic_dicom.write_dicom(sample, path, photometric=photometric, window=index % 3 != 2)
    if station is None:
        return path.read_bytes()
    ds = pydicom.dcmread(path)
    ds.StationName = station
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _stream(
    phantoms: list[SyntheticCxr], tmp: Path, gamma: float = 1.0, station: str | None = None
) -> Iterator[bytes]:
    for i, sample in enumerate(phantoms):
        if gamma != 1.0:
            sample = dataclasses.replace(sample, image01=sample.image01**gamma)
        yield _dicom(sample, i, tmp, station)


def _run(tmp: Path, studies: Iterator[bytes]) -> tuple[dict[str, Any], str]:
    settings = make_settings(
        tmp, enabled_models=["cxr_pneumonia"], writeback=False,
        drift_window_count=STREAM, drift_min_window=30,
    )  # fmt: skip
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    with TestClient(create_app(settings)) as client:
        for data in studies:
            answer = client.post("/v1/cxr", content=data, headers=headers)
            assert answer.status_code == 200, answer.text
        drift = client.get("/v1/models/cxr_pneumonia/drift", headers=auth(Role.engineer))
        assert drift.status_code == 200, drift.text
        return drift.json(), client.get("/metrics").text


def _window(status: dict[str, Any], kind: str) -> dict[str, Any]:
    (window,) = [w for w in status["windows"] if w["window"] == kind]
    return {f["feature"]: f for f in window["features"]} | {"_n": window["n"]}


def _alerts(metrics: str) -> set[tuple[str, str]]:
    found = set()
    for family in text_string_to_metric_families(metrics):
        if family.name == "aidx_drift_alert":
            found |= {(s.labels["feature"], s.labels["window"]) for s in family.samples if s.value}
    return found


def _psi(status: dict[str, Any]) -> dict[str, float]:
    return {name: f["psi"] for name, f in _window(status, "count").items() if name != "_n"}


def test_a_stream_like_the_reference_raises_no_alert(
    phantoms: list[SyntheticCxr], tmp_path: Path
) -> None:
    status, metrics = _run(tmp_path, _stream(phantoms, tmp_path))
    print("no shift, PSI:", _psi(status))
    count = _window(status, "count")
    assert count["_n"] == STREAM
    assert count["input_mean"]["window_n"] == STREAM
    assert count["input_mean"]["reference_n"] == 300
    assert status["drifting"] == []
    assert _alerts(metrics) == set()


def test_another_intensity_curve_fires_the_alert_on_the_input_features(
    phantoms: list[SyntheticCxr], tmp_path: Path
) -> None:
    status, metrics = _run(tmp_path, _stream(phantoms, tmp_path, gamma=0.5))
    print("gamma 0.5, PSI:", _psi(status))
    count = _window(status, "count")
    assert count["input_mean"]["drifting"]
    assert count["input_mean"]["psi"] >= 0.25 and count["input_mean"]["p_value"] < 0.01
    assert "station_name" not in status["drifting"]
    assert "pixel_spacing_mm" not in status["drifting"]
    assert ("input_mean", "count") in _alerts(metrics)
    assert ("input_mean", "day") in _alerts(metrics)


def test_a_new_station_fires_the_alert_on_the_station_only(
    phantoms: list[SyntheticCxr], tmp_path: Path
) -> None:
    status, metrics = _run(tmp_path, _stream(phantoms, tmp_path, station="XR-ROOM-9"))
    print("new station, PSI:", _psi(status))
    assert status["drifting"] == ["station_name"]
    station = _window(status, "count")["station_name"]
    assert station["test"] == "chi2" and station["window_n"] == STREAM
    assert {("station_name", "count"), ("station_name", "day")} <= _alerts(metrics)
    assert not INPUT_FEATURES & {feature for feature, _ in _alerts(metrics)}


def _without_drift_reference(models: Path, name: str) -> Path:
    """A repository holding `name` as shipped but without its drift reference (every
    demo model has one now), its card no longer listing the file."""
    shutil.copytree(MODELS / name, models / name)
    (models / name / "1" / REFERENCE_FILE).unlink()
    card = models / name / "card.md"
    lines = card.read_text().splitlines(keepends=True)
    card.write_text("".join(line for line in lines if f"1/{REFERENCE_FILE}:" not in line))
    return models


def test_the_drift_route_is_for_engineers_audited_and_says_when_there_is_no_reference(
    tmp_path: Path,
) -> None:
    models = _without_drift_reference(tmp_path / "models", "wsi_tiles")
    shutil.copytree(MODELS / "cxr_pneumonia", models / "cxr_pneumonia")
    settings = make_settings(
        tmp_path, model_repository=models, enabled_models=["cxr_pneumonia", "wsi_tiles"]
    )
    with TestClient(create_app(settings)) as client:
        url = "/v1/models/{}/drift"
        refused = client.get(url.format("cxr_pneumonia"), headers=auth(Role.radiologist))
        assert refused.status_code == 403
        empty = client.get(url.format("cxr_pneumonia"), headers=auth(Role.engineer)).json()
        assert [w["n"] for w in empty["windows"]] == [0, 0]
        assert all(f["psi"] is None and f["window_n"] == 0 for f in empty["windows"][0]["features"])
        none = client.get(url.format("wsi_tiles"), headers=auth(Role.engineer))
        assert (none.status_code, none.json()["code"]) == (404, "drift_reference_not_found")
        unknown = client.get(url.format("nope"), headers=auth(Role.engineer))
        assert unknown.json()["code"] == "model_not_found"
    audit = [json.loads(line) for line in settings.audit_log.read_text().splitlines()]
    reads = [a for a in audit if a.get("action") == "model.drift"]
    assert {a["resource"] for a in reads} >= {"model/cxr_pneumonia", "model/wsi_tiles"}
