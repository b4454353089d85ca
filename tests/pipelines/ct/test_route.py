"""POST /v1/ct end to end: real DICOM files written with pydicom, the real app, the
demo model through the dynamic batcher."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from aidx.inference.settings import Role
from aidx.pipelines.ct import synthetic
from tests.conftest import auth, dicom_bytes
from tests.pipelines.ct.conftest import edited

SPACING = (3.5, 3.5, 5.0)
SHAPE = (68, 86, 114)  # 340 x 300 x 400 mm


@pytest.fixture(scope="module")
def phantom() -> synthetic.Phantom:
    rng = np.random.default_rng(5)
    return synthetic.generate(rng, shape_kji=SHAPE, spacing_mm=SPACING, n_lesions=2, noise_hu=15)


@pytest.fixture(scope="module")
def blobs(phantom: synthetic.Phantom, tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    files = synthetic.write_series(phantom, tmp_path_factory.mktemp("route_series"))
    return [f.read_bytes() for f in files]


def multipart(blobs: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{n}.dcm", b, "application/dicom")) for n, b in enumerate(blobs)]


def zipped(blobs: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n, blob in enumerate(blobs):
            archive.writestr(f"series/{n:04d}.dcm", blob)
        archive.writestr("series/DICOMDIR", b"not used")
    return buffer.getvalue()


def post_ct(client: TestClient, blobs: list[bytes]):  # type: ignore[no-untyped-def]
    return client.post("/v1/ct", files=multipart(blobs), headers=auth(Role.radiologist))


@pytest.fixture(scope="module")
def report(client: TestClient, blobs: list[bytes]) -> dict:  # type: ignore[type-arg]
    shuffled = blobs[:]
    random.Random(1).shuffle(shuffled)
    response = post_ct(client, shuffled)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_report_shape(report: dict, phantom: synthetic.Phantom) -> None:  # type: ignore[type-arg]
    assert report["pipeline"] == "ct"
    assert report["model"]["name"] == "ct_pneumonia" and report["model"]["demo_weights"]
    assert report["disclaimer"]
    assert report["slices"] == SHAPE[0]
    assert report["spacing_mm"] == [3.5, 3.5, 5.0]
    (finding,) = report["findings"]
    assert finding["concept"]["code"] == "233604007"
    assert {row["side"] for row in report["lungs"]} == {"right", "left"}
    timings = report["timings"]
    for key in ("decode_ms", "preprocess_ms", "compute_ms", "postprocess_ms", "total_ms"):
        assert timings[key] > 0
    assert report["inference_ms"] > 0


def test_lesions_found_where_the_phantom_has_them(
    report: dict,
    phantom: synthetic.Phantom,  # type: ignore[type-arg]
) -> None:
    """Demo model on a phantom it never saw: every ground-truth lesion is found, with
    centroid within 5 mm and volume within 15 % of the truth for the larger ones."""
    assert report["findings"][0]["present"]
    lesions = report["lesions"]
    for truth in phantom.truth:
        nearest = min(lesions, key=lambda e: np.linalg.norm(
            np.subtract(e["centroid_lps_mm"], truth.centroid_lps_mm)))  # fmt: skip
        distance = np.linalg.norm(np.subtract(nearest["centroid_lps_mm"], truth.centroid_lps_mm))
        assert nearest["side"] == truth.side
        if truth.volume_ml >= 5.0:
            assert distance < 5.0
            assert nearest["volume_ml"] == pytest.approx(truth.volume_ml, rel=0.15)
    for lesion in lesions:
        assert lesion["zone"] in ("upper", "middle", "lower")
        assert lesion["bbox_voxel"]["min_ijk"] <= lesion["bbox_voxel"]["max_ijk"]
        assert -1000 < lesion["mean_hu"] < 100


def test_evidence_files(client: TestClient, report: dict) -> None:  # type: ignore[type-arg]
    headers = auth(Role.radiologist)
    label_map = client.get(report["label_map"]["url"], headers=headers)
    assert label_map.status_code == 200
    data = np.load(io.BytesIO(label_map.content))
    assert list(data["labels"].shape) == report["label_map"]["shape_kji"]
    assert len(data["sop_instance_uids"]) == report["slices"]
    assert int(data["labels"].max()) == len(report["lesions"])
    overlays = [e["url"] for e in report["evidence"] if e["kind"] == "overlay"]
    assert overlays
    png = client.get(overlays[0], headers=headers)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    stored = client.get(f"/v1/ct/reports/{report['id']}", headers=headers)
    assert stored.status_code == 200 and stored.json()["lesions"] == report["lesions"]
    common = client.get(f"/v1/reports/{report['id']}", headers=headers)
    assert common.status_code == 200 and common.json()["findings"] == report["findings"]
    for name in ("report.json", "keyslice_x.png", "..%2Fx"):
        missing = client.get(f"/v1/ct/reports/{report['id']}/{name}", headers=headers)
        assert missing.status_code == 404
    assert client.get(report["label_map"]["url"]).status_code == 401


def test_zip_upload_gives_the_same_report(
    client: TestClient,
    blobs: list[bytes],
    report: dict,  # type: ignore[type-arg]
) -> None:
    response = client.post(
        "/v1/ct",
        content=zipped(blobs),
        headers={**auth(Role.radiologist), "Content-Type": "application/zip"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == report["id"]  # the id is the series + the model


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing", "slice_gap"),
        ("duplicate", "duplicate_slice_position"),
        ("mixed", "mixed_series"),
        ("single", "too_few_slices"),
    ],
)
def test_bad_series_are_422(client: TestClient, blobs: list[bytes], case: str, code: str) -> None:
    bad = {
        "missing": blobs[:30] + blobs[31:],
        "duplicate": [*blobs, blobs[12]],
        "mixed": blobs + [edited(b, SeriesInstanceUID=generate_uid()) for b in blobs[:2]],
        "single": [dicom_bytes("CT_small.dcm")],
    }[case]
    response = post_ct(client, bad)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code


def test_upload_errors(client: TestClient, blobs: list[bytes], tmp_path: Path) -> None:
    headers = auth(Role.radiologist)
    assert client.post("/v1/ct", files=multipart(blobs[:2])).status_code == 401
    assert (
        client.post("/v1/ct", files=multipart(blobs[:2]), headers=auth(Role.lab)).status_code == 403
    )
    wrong = client.post(
        "/v1/ct", content=blobs[0], headers={**headers, "Content-Type": "application/dicom"}
    )
    assert wrong.status_code == 415
    bad_zip = client.post(
        "/v1/ct", content=b"PK nope", headers={**headers, "Content-Type": "application/zip"}
    )
    assert bad_zip.status_code == 400 and bad_zip.json()["code"] == "invalid_zip"
    garbage = post_ct(client, [b"not dicom" * 20] * 10)
    assert garbage.status_code == 400 and garbage.json()["code"] == "not_dicom"


def test_the_phantom_is_assessed_and_in_distribution(report: dict) -> None:  # type: ignore[type-arg]
    (finding,) = report["findings"]
    assert finding["assessed"] is True and finding["not_assessed_reason"] is None
    assert report["not_assessed"] is None
    assert report["ood"]["status"] == "in_distribution"
    assert report["ood"]["score"] <= report["ood"]["threshold"]
    assert not any("OUT OF DISTRIBUTION" in w for w in report["warnings"])
    assert all(row["assessed"] and row["involvement_percent"] >= 0 for row in report["lungs"])


def test_a_chest_abdomen_series_passes_and_a_pelvis_series_is_refused(
    client: TestClient, blobs: list[bytes]
) -> None:
    uid = generate_uid()  # another series: the fixture's stored report stays as it is
    pelvis = post_ct(client, [edited(b, BodyPartExamined="PELVIS", SeriesInstanceUID=uid)
                              for b in blobs])  # fmt: skip
    assert pelvis.status_code == 422 and pelvis.json()["code"] == "unsupported_body_part"
    both = post_ct(client, [edited(b, BodyPartExamined="CHESTABDOMEN", SeriesInstanceUID=uid)
                            for b in blobs])  # fmt: skip
    assert both.status_code == 200, both.text
    assert both.json()["findings"][0]["present"] is True
