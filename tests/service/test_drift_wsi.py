"""Slide drift, end to end: synthetic slides analysed as jobs by the running service
are compared with the reference committed beside the demo WSI model (40 synthetic
slides, models/wsi_tiles/1/drift.json). Slides stained like the reference's raise no
alert; the same layouts with a much stronger haematoxylin (another lab's protocol)
raise it on the tissue's optical density, in the API and on /metrics, within the
window, and not on the MPP or the scanner."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aidx.inference.settings import Role
from aidx.pipelines.wsi import synthetic
from aidx.pipelines.wsi.drift_sets import SYNTHETIC_MPP, SYNTHETIC_PX
from aidx.pipelines.wsi.phantom import make_layout, write_slide
from aidx.service.app import create_app

from ..conftest import auth, make_settings
from .test_drift import _alerts, _window

pytestmark = pytest.mark.slow

STREAM = 12  # slides per stream: the count window (its minimum is 10)
SHIFTED = synthetic.Stain(haematoxylin=2.2, eosin=1.0)  # reference: 0.8-1.2, 0.75-1.25
STAIN_FEATURES = {f"od_{s}_{c}" for s in ("mean", "std") for c in "rgb"}


def _slides(folder: Path, stain: synthetic.Stain | None) -> Path:
    """STREAM slides like the reference's (other layout seeds), optionally restained."""
    folder.mkdir()
    for seed in range(500, 500 + STREAM):
        layout = make_layout(
            seed, SYNTHETIC_PX, SYNTHETIC_PX, mpp=SYNTHETIC_MPP, n_suspicious=seed % 2,
            n_lymphoid=0,
        )  # fmt: skip
        if stain is not None:
            layout = dataclasses.replace(layout, stain=stain)
        write_slide(folder / f"slide_{seed}.svs", layout)
    return folder


def _run(tmp: Path, slides: Path) -> tuple[dict[str, Any], str]:
    settings = make_settings(
        tmp / "var", enabled_models=["wsi_tiles"], writeback=False, wsi_slide_roots=[slides],
        drift_window_count=STREAM, drift_min_window=STREAM,
    )  # fmt: skip
    headers = auth(Role.pathologist)
    with TestClient(create_app(settings)) as client:
        for path in sorted(slides.iterdir()):
            job = client.post("/v1/wsi/jobs", headers=headers, json={"slide_path": path.name})
            assert job.status_code == 202, job.text
            url, deadline = job.headers["Location"], time.monotonic() + 120
            while (state := client.get(url, headers=headers).json()["state"]) in (
                "queued", "running",
            ) and time.monotonic() < deadline:  # fmt: skip
                time.sleep(0.05)
            assert state == "succeeded"
        drift = client.get("/v1/models/wsi_tiles/drift", headers=auth(Role.engineer))
        assert drift.status_code == 200, drift.text
        return drift.json(), client.get("/metrics").text


def test_slides_stained_like_the_reference_raise_no_alert(tmp_path: Path) -> None:
    status, metrics = _run(tmp_path, _slides(tmp_path / "slides", None))
    count = _window(status, "count")
    assert count["_n"] == STREAM
    assert count["od_mean_r"]["window_n"] == STREAM and count["od_mean_r"]["reference_n"] == 40
    assert not STAIN_FEATURES & set(status["drifting"])
    assert not STAIN_FEATURES & {feature for feature, _ in _alerts(metrics)}


def test_a_stronger_haematoxylin_fires_the_alert_on_the_stain_features(tmp_path: Path) -> None:
    status, metrics = _run(tmp_path, _slides(tmp_path / "slides", SHIFTED))
    count = _window(status, "count")
    drifting = set(status["drifting"])
    assert {"od_mean_r", "od_mean_g"} <= drifting, count
    assert count["od_mean_r"]["psi"] >= 0.25 and count["od_mean_r"]["p_value"] < 0.01
    assert not {"mpp", "vendor"} & drifting
    assert {("od_mean_r", "count"), ("od_mean_r", "day")} <= _alerts(metrics)
