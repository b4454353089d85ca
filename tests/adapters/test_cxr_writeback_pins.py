"""Issue 16 made a `/v1/cxr` request and its write-back cheaper; these pin what they
give to what they gave before (recorded on the code before the change, commit c3744fb),
on two real radiographs (pydicom-data's chest CR, and its extremity CR with the body
part edited to the chest): the report, the overlay PNG and the workspace's two layers,
the secondary capture (its pixels, and the rest of the object), the SR and the FHIR
bundle. What differs by design from one analysis to the next (the report's timings and
times; the objects' dates and times) is removed first.

Byte for byte (sha256 prefixes) where the output does not depend on the model's
floating-point heat map. The images drawn from the heat map (overlay, heat-map layer,
SC pixels) are compared as a fingerprint instead (each channel's mean over an 8 x 8 grid
of blocks, within a quarter grey level): onnxruntime picks its kernels by the CPU's
instruction set, so the heat map's last bits, and a few pixels at a colour boundary,
differ from one CPU to another (an AVX-512 machine gave other PNG bytes than the CI ones),
while a changed colour map, opacity or geometry moves the block means by far more.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from aidx.adapters.writeback import dicom_bytes
from aidx.inference.settings import Role
from aidx.integrations.dicom.uids import derived_uid
from aidx.service.app import create_app
from tests.conftest import auth, make_settings
from tests.pipelines.cxr.dicom_copies import edited
from tests.waiting import wait_until

HEADERS = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
IMAGES = ("overlay.png", "radiograph.png", "heatmap.png")
FROM_THE_HEAT_MAP = {"overlay.png", "heatmap.png", "sc_pixels"}
FINGERPRINTS = Path(__file__).with_name("cxr_writeback_fingerprints.json")
GRID = 8
TOLERANCE = 0.25  # grey levels, on a block's mean
# The report's parts that are the request's own, not the analysis': when and how long.
REPORT_VOLATILE = {"timings", "created_at", "turnaround"}
# FHIR elements stamped with the build's time
FHIR_VOLATILE = {"issued", "lastUpdated", "effectiveDateTime"}
RADIOGRAPHS = {"RG1": ("RG1_UNCR.dcm", {}), "RG3": ("RG3_UNCR.dcm", {"BodyPartExamined": "CHEST"})}
# sha256[:16] of each output, per radiograph
PINNED = {
    "RG1": {
        "report": "99d35c27222403f1",
        "radiograph.png": "65f54cb11d271fbe",
        "sc": "af8d1fb1b37fbd56",
        "sr": "ce95ffb8dee51512",
        "fhir": "8b7b42b19f7d6d1b",
    },
    "RG3": {
        "report": "2188aeacd7f3594e",
        "radiograph.png": "2dabfd8df0466641",
        "sc": "15bf5c27fd53f00d",
        "sr": "718f590be4cd4b9f",
        "fhir": "07e65d51cb1834c4",
    },
}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _without(value: object, keys: set[str]) -> object:
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def _json_digest(value: object, volatile: set[str]) -> str:
    return _digest(json.dumps(_without(value, volatile), sort_keys=True).encode())


def _dicom_digest(path: Path) -> str:
    """The object's bytes with its dates and times blanked (DA, TM, DT, anywhere) and
    without its pixels (fingerprinted apart)."""
    ds = pydicom.dcmread(path)
    for element in ds.iterall():
        if element.VR in ("DA", "TM", "DT"):
            element.value = ""
    if "PixelData" in ds:
        del ds.PixelData
    return _digest(dicom_bytes(ds))


def fingerprint(pixels: np.ndarray) -> list[list[list[float]]]:
    """Each channel's mean over a GRID x GRID split of the image (rows, columns)."""
    image = pixels.astype(np.float64).reshape(*pixels.shape[:2], -1)
    rows = np.array_split(image, GRID, axis=0)
    return [
        [np.round(block.mean(axis=(0, 1)), 3).tolist() for block in np.array_split(r, GRID, 1)]
        for r in rows
    ]


def _png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, object]]]:
    """Per radiograph: a digest, or a fingerprint for what is drawn from the heat map."""
    var = tmp_path_factory.mktemp("cxr-pins")
    settings = make_settings(var, enabled_models=["cxr_pneumonia"])
    found: dict[str, dict[str, object]] = {}
    with TestClient(create_app(settings)) as api:
        for key, (name, changes) in RADIOGRAPHS.items():
            response = api.post("/v1/cxr", content=edited(name, **changes), headers=HEADERS)
            assert response.status_code == 200, response.text
            report = response.json()
            found[key] = {"report": _json_digest(report, REPORT_VOLATILE)}
            for image in IMAGES:
                got = api.get(f"/v1/reports/{report['id']}/{image}", headers=HEADERS)
                assert got.status_code == 200, got.text
                drawn = image in FROM_THE_HEAT_MAP
                found[key][image] = (
                    fingerprint(_png_pixels(got.content)) if drawn else _digest(got.content)
                )
            found[key].update(_written_back(var, report["id"]))
    yield found


def _written_back(var: Path, rid: str) -> dict[str, object]:
    pacs, emr = var / "outbox" / "pacs", var / "outbox" / "emr"

    files = {
        "sr": pacs / f"{derived_uid('sr', rid)}.dcm",
        "sc": pacs / f"{derived_uid('sc', rid)}.dcm",
        "fhir": emr / f"DiagnosticReport-{rid}.json",
    }
    wait_until(
        lambda: all(p.is_file() for p in files.values()),
        what=f"report {rid}'s SR, SC and bundle in the folder sinks",
    )
    return {
        "sr": _dicom_digest(files["sr"]),
        "sc": _dicom_digest(files["sc"]),
        "sc_pixels": fingerprint(pydicom.dcmread(files["sc"]).pixel_array),
        "fhir": _json_digest(json.loads(files["fhir"].read_bytes()), FHIR_VOLATILE),
    }


@pytest.mark.parametrize("key", sorted(RADIOGRAPHS))
def test_the_request_and_its_write_back_give_what_they_gave_before(
    outputs: dict[str, dict[str, object]], key: str
) -> None:
    exact = {name: value for name, value in outputs[key].items() if name not in FROM_THE_HEAT_MAP}
    assert exact == PINNED[key]
    pinned = json.loads(FINGERPRINTS.read_text())[key]
    for name in sorted(FROM_THE_HEAT_MAP):
        got, want = np.array(outputs[key][name]), np.array(pinned[name])
        assert got.shape == want.shape, name
        worst = float(np.abs(got - want).max())
        assert worst <= TOLERANCE, f"{name}: a block's mean moved by {worst:.3f} grey levels"
