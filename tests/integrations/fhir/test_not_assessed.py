"""Findings not assessed in the FHIR bundle, on hand-built reports: the Observation has
no value and no interpretation but dataAbsentReason and a note with the message; the
DiagnosticReport's conclusion says what was not assessed and why, never "none found".
Accepted by the real R4 server (Medplum's engine, validating every resource)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from aidx.inference.reports import Report
from aidx.inference.settings_sections import FhirSettings
from aidx.integrations.fhir.client import FhirDestination
from aidx.integrations.fhir.resources import (
    DATA_ABSENT_REASON,
    REPORT_SYSTEM,
    build_bundle,
    bundle_json,
)

from ...peers import FhirPeer
from ..dicom.not_assessed_reports import (
    chest_cr,
    ct_not_assessed,
    ct_series,
    cxr_none_assessed,
    cxr_partly_assessed,
)
from .test_fhir import entry

pytestmark = pytest.mark.integration


def resources(report: Report, kind: str) -> list[dict[str, Any]]:
    bundle = build_bundle(report).model_dump(mode="json", exclude_none=True)
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def assert_absent(observation: dict[str, Any], reason: str) -> None:
    assert "valueQuantity" not in observation and "interpretation" not in observation
    absent = observation["dataAbsentReason"]
    assert absent["coding"][0] == {
        "system": DATA_ABSENT_REASON,
        "code": "not-performed",
        "display": "Not Performed",
    }
    assert absent["text"] == f"not assessed: {reason}"
    assert observation["note"][0]["text"].startswith(f"Not assessed ({reason}): ")


def test_one_not_assessed_one_assessed() -> None:
    report = cxr_partly_assessed(chest_cr())
    pneumonia, cardiomegaly = resources(report, "Observation")
    assert_absent(pneumonia, "out_of_distribution")
    assert cardiomegaly["valueQuantity"]["value"] == 0.8125
    assert cardiomegaly["interpretation"][0]["coding"][0]["code"] == "POS"
    assert "dataAbsentReason" not in cardiomegaly
    (diagnostic,) = resources(report, "DiagnosticReport")
    conclusion = diagnostic["conclusion"]
    assert conclusion.startswith("AI suggests: Cardiomegaly (probability 0.81).")
    assert "Not assessed: Pneumonia (out_of_distribution: The image is unlike" in conclusion
    assert "Out-of-distribution check: out_of_distribution, score 41.7, threshold 30.2." in (
        conclusion
    )
    assert [c["coding"][0]["display"] for c in diagnostic["conclusionCode"]] == ["Cardiomegaly"]


def test_none_assessed_never_reads_as_none_found() -> None:
    report = cxr_none_assessed(chest_cr())
    for observation in resources(report, "Observation"):
        assert_absent(observation, "blank_image")
    (diagnostic,) = resources(report, "DiagnosticReport")
    conclusion = diagnostic["conclusion"]
    assert "none of the findings it screens for" not in conclusion.replace("assessed none", "")
    assert conclusion.startswith("AI assessed none of the findings it screens for.")
    assert "Pneumonia (blank_image: The image is near-constant.)" in conclusion
    assert "Cardiomegaly (blank_image: The image is near-constant.)" in conclusion
    assert "conclusionCode" not in diagnostic


def test_bundles_are_accepted_by_the_server(fhir_server: FhirPeer, tmp_path: Path) -> None:
    source = chest_cr()
    reports = [
        cxr_partly_assessed(source),
        cxr_none_assessed(source),
        ct_not_assessed(ct_series(tmp_path)),
    ]
    destination = FhirDestination("emr", FhirSettings(base_url=fhir_server.base_url))
    for report in reports:
        destination.deliver(entry(bundle_json(build_bundle(report))))
        (diagnostic,) = fhir_server.search(
            "DiagnosticReport", identifier=f"{REPORT_SYSTEM}|{report.id}"
        )
        assert "Not assessed: " in diagnostic["conclusion"]
        for result, finding in zip(diagnostic["result"], report.findings, strict=True):
            url = f"{fhir_server.base_url}/{result['reference']}"
            observation = httpx.get(url, timeout=10).json()
            if finding.assessed:
                assert observation["valueQuantity"]["value"] == finding.probability
            else:
                assert_absent(observation, str(finding.not_assessed_reason))
