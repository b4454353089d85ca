"""The FHIR bundle of a real report against a real R4 server (Medplum's engine,
validating every resource): accepted, complete, and idempotent on resend."""

from __future__ import annotations

import json

import httpx
import pytest

from aidx.inference.settings_sections import FhirSettings
from aidx.integrations.fhir.client import FhirDestination
from aidx.integrations.fhir.resources import REPORT_SYSTEM, build_bundle, bundle_json
from aidx.integrations.outbox.destinations import PermanentDeliveryError
from aidx.integrations.outbox.store import Entry, State

from ...peers import FhirPeer
from ..conftest import AnalysedCxr

pytestmark = pytest.mark.integration


def entry(payload: bytes) -> Entry:
    return Entry("id", "emr", "key", "fhir-bundle", "application/fhir+json", None, payload,
                 State.pending, 0, 0.0, None, 0.0, 0.0, None)  # fmt: skip


def test_bundle_is_accepted_and_resend_is_idempotent(
    analysed_cxr: AnalysedCxr, fhir_server: FhirPeer
) -> None:
    report = analysed_cxr.report.model_copy(update={"id": "0b5c5a3e-8d1e-5c7a-9f00-000000000001"})
    payload = bundle_json(build_bundle(report, patient_system="urn:test:mrn"))
    assert payload == bundle_json(build_bundle(report, patient_system="urn:test:mrn"))
    fhir = FhirSettings(base_url=fhir_server.base_url, bearer_token="not-checked-by-the-peer")
    destination = FhirDestination("emr", fhir)
    for _ in range(3):  # a resend after a crash must not duplicate anything
        destination.deliver(entry(payload))
    (diagnostic,) = fhir_server.search(
        "DiagnosticReport", identifier=f"{REPORT_SYSTEM}|{report.id}"
    )
    assert diagnostic["code"]["coding"][0]["system"] == "http://loinc.org"
    assert diagnostic["subject"]["reference"].startswith("Patient/")
    assert diagnostic["imagingStudy"][0]["reference"].startswith("ImagingStudy/")
    assert "Preliminary" in diagnostic["conclusion"]
    results = [r["reference"] for r in diagnostic["result"]]
    assert len(results) == len(report.findings)
    for reference in results:
        observation = httpx.get(f"{fhir_server.base_url}/{reference}", timeout=10).json()
        assert observation["status"] == "preliminary"
        assert observation["device"]["reference"].startswith("Device/")
        assert observation["bodySite"]["coding"][0]["code"] == "51185008"
    patients = fhir_server.search("Patient", identifier=f"urn:test:mrn|{report.source.patient_id}")
    assert len(patients) == 1
    assert len(fhir_server.search("Device", identifier="urn:aidx:model|cxr_pneumonia:1")) == 1


def test_server_refusal_is_permanent_with_its_reason(fhir_server: FhirPeer) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": {"resourceType": "DiagnosticReport", "status": "final"},  # no code
        "request": {"method": "POST", "url": "DiagnosticReport"}}]}  # fmt: skip
    destination = FhirDestination("emr", FhirSettings(base_url=fhir_server.base_url))
    # The server's own R4 validation refuses it (the missing 1..1 element is named).
    with pytest.raises(PermanentDeliveryError, match="HTTP 400.*code"):
        destination.deliver(entry(json.dumps(bundle).encode()))
