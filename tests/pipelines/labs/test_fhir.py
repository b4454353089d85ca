"""FHIR R4: a Bundle of Observations in, validated R4 Observations and DetectedIssues
out (fhir.resources R4B), through the service's route."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.detectedissue import DetectedIssue
from fhir.resources.R4B.observation import Observation

from aidx.inference.settings import Role
from aidx.pipelines.labs.fhir import INTERPRETATION, FhirError, parse_bundle

from ...conftest import auth


def observation(oid: str, code: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{oid}",
        "resource": {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": "Patient/fhir-p1"},
            "specimen": {"reference": "Specimen/fhir-s1"},
            "effectiveDateTime": "2026-03-01T08:00:00+00:00",
            "valueQuantity": {
                "value": value,
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            },
        },
    }


def bundle() -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:p1",
                "resource": {
                    "resourceType": "Patient",
                    "id": "fhir-p1",
                    "gender": "male",
                    "birthDate": "1961-05-04",
                },
            },
            {
                "fullUrl": "urn:uuid:s1",
                "resource": {
                    "resourceType": "Specimen",
                    "id": "fhir-s1",
                    "collection": {"collectedDateTime": "2026-03-01T07:55:00+00:00"},
                },
            },
            observation("o1", "2823-3", 7.2, "mmol/L"),
            observation("o2", "2345-7", 99.0, "mg/dL"),
            observation("o3", "718-7", 14.1, "g/dL"),
        ],
    }


def test_a_bundle_becomes_one_specimen() -> None:
    (s,) = parse_bundle(bundle())
    assert s.specimen_id == "fhir-s1" and s.patient_id == "fhir-p1"
    assert s.sex == "male" and s.age_y is not None and 64 < s.age_y < 65
    assert s.collected_at.isoformat() == "2026-03-01T07:55:00+00:00"
    assert [r.code for r in s.results] == ["2823-3", "2345-7", "718-7"]


def test_an_invalid_bundle_is_refused_with_the_reason() -> None:
    bad = bundle()
    del bad["entry"][2]["resource"]["code"]  # required in R4
    bad["entry"][3]["resource"]["valueQuantity"]["value"] = "high"
    with pytest.raises(FhirError, match="not a valid FHIR R4 Bundle"):
        parse_bundle(bad)


def test_fhir_in_fhir_out_validates_as_r4(client: TestClient) -> None:
    response = client.post(
        "/v1/labs/screen",
        json=bundle(),
        headers={
            **auth(Role.lab),
            "Content-Type": "application/fhir+json",
            "Accept": "application/fhir+json",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    out = Bundle.model_validate(response.json())
    observations = [e.resource for e in out.entry if isinstance(e.resource, Observation)]
    issues = [e.resource for e in out.entry if isinstance(e.resource, DetectedIssue)]
    assert len(observations) == 3
    k = next(o for o in observations if o.code.coding[0].code == "2823-3")
    coding = k.interpretation[0].coding[0]
    assert (coding.system, coding.code) == (INTERPRETATION, "HH")
    assert float(k.referenceRange[0].high.value) == 5.1
    assert issues and issues[0].severity == "high"
    assert issues[0].implicated[0].reference == f"urn:uuid:{k.id}"
    glucose = next(o for o in observations if o.code.coding[0].code == "2345-7")
    assert float(glucose.valueQuantity.value) == pytest.approx(5.4945)
    assert glucose.valueQuantity.code == "mmol/L"
