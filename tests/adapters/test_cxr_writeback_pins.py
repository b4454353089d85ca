"""Issue 16 made a `/v1/cxr` request and its write-back cheaper; these pin what they
give, byte for byte, to what they gave before (sha256 prefixes recorded on the code
before the change, commit c3744fb), on two real radiographs (pydicom-data's chest CR,
and its extremity CR with the body part edited to the chest): the report, the overlay
PNG and the workspace's two layers, the secondary capture (its pixels, and the whole
object), the SR and the FHIR bundle. What differs by design from one analysis to the
next (the report's timings and times; the objects' dates and times) is removed first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient

from aidx.adapters.writeback import dicom_bytes
from aidx.inference.settings import Role
from aidx.integrations.dicom.uids import derived_uid
from aidx.service.app import create_app
from tests.conftest import auth, make_settings
from tests.pipelines.cxr.dicom_copies import edited
from tests.waiting import wait_until

HEADERS = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
IMAGES = ("overlay.png", "radiograph.png", "heatmap.png")
# The report's parts that are the request's own, not the analysis': when and how long.
REPORT_VOLATILE = {"timings", "created_at", "turnaround"}
# FHIR elements stamped with the build's time
FHIR_VOLATILE = {"issued", "lastUpdated", "effectiveDateTime"}
RADIOGRAPHS = {"RG1": ("RG1_UNCR.dcm", {}), "RG3": ("RG3_UNCR.dcm", {"BodyPartExamined": "CHEST"})}
# sha256[:16] of each output, per radiograph
PINNED = {
    "RG1": {
        "report": "99d35c27222403f1",
        "overlay.png": "14f4302f49b8f129",
        "radiograph.png": "65f54cb11d271fbe",
        "heatmap.png": "e0cf68917f8a3488",
        "sc": "005d0ddc1eb58dc7",
        "sc_pixels": "29b26e60edafd0b5",
        "sr": "ce95ffb8dee51512",
        "fhir": "8b7b42b19f7d6d1b",
    },
    "RG3": {
        "report": "2188aeacd7f3594e",
        "overlay.png": "bd491153a46e6155",
        "radiograph.png": "2dabfd8df0466641",
        "heatmap.png": "8ff05224babf0a42",
        "sc": "90138dedccac9248",
        "sc_pixels": "47e7e5e5fc7fe943",
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
    """The object's bytes with its dates and times blanked (DA, TM, DT, anywhere)."""
    ds = pydicom.dcmread(path)
    for element in ds.iterall():
        if element.VR in ("DA", "TM", "DT"):
            element.value = ""
    return _digest(dicom_bytes(ds))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, str]]]:
    var = tmp_path_factory.mktemp("cxr-pins")
    settings = make_settings(var, enabled_models=["cxr_pneumonia"])
    found: dict[str, dict[str, str]] = {}
    with TestClient(create_app(settings)) as api:
        for key, (name, changes) in RADIOGRAPHS.items():
            response = api.post("/v1/cxr", content=edited(name, **changes), headers=HEADERS)
            assert response.status_code == 200, response.text
            report = response.json()
            found[key] = {"report": _json_digest(report, REPORT_VOLATILE)}
            for image in IMAGES:
                got = api.get(f"/v1/reports/{report['id']}/{image}", headers=HEADERS)
                assert got.status_code == 200, got.text
                found[key][image] = _digest(got.content)
            found[key].update(_written_back(var, report["id"]))
    yield found


def _written_back(var: Path, rid: str) -> dict[str, str]:
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
        "sc_pixels": _digest(pydicom.dcmread(files["sc"]).PixelData),
        "fhir": _json_digest(json.loads(files["fhir"].read_bytes()), FHIR_VOLATILE),
    }


@pytest.mark.parametrize("key", sorted(RADIOGRAPHS))
def test_the_request_and_its_write_back_give_what_they_gave_before(
    outputs: dict[str, dict[str, str]], key: str
) -> None:
    assert outputs[key] == PINNED[key]
