"""A Report as a FHIR R4 transaction Bundle, idempotent on resend.

- Patient and ImagingStudy: conditional create (`ifNoneExist` by identifier); the
  EMR normally has both, aidx never overwrites them.
- Device (the model): conditional update by identifier (name + version).
- One Observation per finding and the DiagnosticReport: conditional update by a
  deterministic identifier (report id, finding index), so a resend updates the same
  resources instead of creating new ones.
Every resource is validated by the R4B models before it leaves.
"""

from __future__ import annotations

import uuid
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient

from aidx.inference.reports import Finding, Report

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"
URN_IETF = "urn:ietf:rfc:3986"
REPORT_SYSTEM = "urn:aidx:report"
FINDING_SYSTEM = "urn:aidx:finding"
MODEL_SYSTEM = "urn:aidx:model"
DEFAULT_PATIENT_SYSTEM = "urn:aidx:patient-id"
_SYSTEMS = {"SCT": SNOMED, "LN": LOINC, "DCM": DICOM_DCM}
_NAMESPACE = uuid.UUID("2c5e8f0a-1d3b-4e7c-9a6f-8b4d2e0c1f57")
CHEST_SITE = {"system": SNOMED, "code": "51185008", "display": "Thoracic structure"}
PROCEDURES = {
    "CT": {"system": LOINC, "code": "24627-2", "display": "CT Chest"},
    "default": {"system": LOINC, "code": "36554-4", "display": "XR Chest Single view"},
}


def _urn(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, '|'.join(parts))}"


def finding_coding(finding: Finding) -> dict[str, str]:
    c = finding.concept
    return {"system": _SYSTEMS.get(c.scheme, c.scheme), "code": c.code, "display": c.meaning}


def _model_label(report: Report) -> str:
    m = report.model
    label = f"{m.name} version {m.version}"
    return f"{label} (sha256 {m.sha256[:12]})" if m.sha256 else label


def _observation(report: Report, index: int, finding: Finding, refs: dict[str, str]) -> Observation:
    interpretation = ("POS", "Positive") if finding.present else ("NEG", "Negative")
    notes = [
        f"Calibrated threshold {finding.threshold:.4g}; "
        f"{'present' if finding.present else 'absent'} at this threshold."
    ]
    if report.disclaimer:
        notes.append(report.disclaimer)
    body: dict[str, Any] = {
        "identifier": [{"system": FINDING_SYSTEM, "value": f"{report.id}/{index}"}],
        "status": "preliminary",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging"}]}],
        "code": {"coding": [finding_coding(finding)], "text": finding.concept.meaning},
        "issued": report.created_at.isoformat(),
        "effectiveDateTime": report.created_at.isoformat(),
        "valueQuantity": {
            "value": round(float(finding.probability), 6),
            "unit": "probability",
            "system": UCUM,
            "code": "1",
        },
        "interpretation": [
            {
                "coding": [
                    {
                        "system": INTERPRETATION,
                        "code": interpretation[0],
                        "display": interpretation[1],
                    }
                ]
            }
        ],
        "bodySite": {"coding": [CHEST_SITE]},
        "method": {"text": f"AI model {_model_label(report)}"},
        "device": {"reference": refs["device"], "display": _model_label(report)},
        "note": [{"text": n} for n in notes],
    }
    if "patient" in refs:
        body["subject"] = {"reference": refs["patient"]}
    if "study" in refs:
        body["derivedFrom"] = [{"reference": refs["study"]}]
    return Observation.model_validate(body)


def _conclusion(report: Report) -> str:
    present = [f for f in report.findings if f.present]
    if not present:
        text = "AI found none of the findings it screens for."
    else:
        text = (
            "AI suggests: "
            + "; ".join(f"{f.concept.meaning} (probability {f.probability:.2f})" for f in present)
            + "."
        )
    return f"{text} Preliminary, for review by a radiologist. {report.disclaimer or ''}".strip()


def build_bundle(report: Report, *, patient_system: str = DEFAULT_PATIENT_SYSTEM) -> Bundle:
    """The transaction Bundle for `report` (deterministic for a given report)."""
    src = report.source
    entries: list[dict[str, Any]] = []
    refs: dict[str, str] = {}
    if src.patient_id:
        refs["patient"] = _urn("patient", patient_system, src.patient_id)
        patient = Patient.model_validate(
            {"identifier": [{"system": patient_system, "value": src.patient_id}]}
        )
        entries.append(
            {
                "fullUrl": refs["patient"],
                "resource": patient,
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier={patient_system}|{src.patient_id}",
                },
            }
        )
    if src.study_instance_uid and "patient" in refs:
        study_id = f"urn:oid:{src.study_instance_uid}"
        refs["study"] = _urn("study", src.study_instance_uid)
        study_body: dict[str, Any] = {
            "identifier": [{"system": URN_IETF, "value": study_id}],
            "status": "available",
            "subject": {"reference": refs["patient"]},
        }
        if src.modality:
            study_body["modality"] = [{"system": DICOM_DCM, "code": src.modality}]
        study = ImagingStudy.model_validate(study_body)
        entries.append(
            {
                "fullUrl": refs["study"],
                "resource": study,
                "request": {
                    "method": "POST",
                    "url": "ImagingStudy",
                    "ifNoneExist": f"identifier={URN_IETF}|{study_id}",
                },
            }
        )
    model_key = f"{report.model.name}:{report.model.version}"
    refs["device"] = _urn("device", model_key)
    device_body: dict[str, Any] = {
        "identifier": [{"system": MODEL_SYSTEM, "value": model_key}],
        "status": "active",
        "deviceName": [{"name": report.model.name, "type": "model-name"}],
        "version": [{"value": str(report.model.version)}],
    }
    if report.disclaimer:
        device_body["note"] = [{"text": report.disclaimer}]
    device = Device.model_validate(device_body)
    entries.append(
        {
            "fullUrl": refs["device"],
            "resource": device,
            "request": {"method": "PUT", "url": f"Device?identifier={MODEL_SYSTEM}|{model_key}"},
        }
    )
    results = []
    for index, finding in enumerate(report.findings):
        url = _urn("observation", report.id, str(index))
        results.append({"reference": url, "display": finding.concept.meaning})
        entries.append(
            {
                "fullUrl": url,
                "resource": _observation(report, index, finding, refs),
                "request": {
                    "method": "PUT",
                    "url": f"Observation?identifier={FINDING_SYSTEM}|{report.id}/{index}",
                },
            }
        )
    procedure = PROCEDURES.get(src.modality or "", PROCEDURES["default"])
    diagnostic: dict[str, Any] = {
        "identifier": [{"system": REPORT_SYSTEM, "value": report.id}],
        "status": "preliminary",
        "category": [
            {"coding": [{"system": DIAGNOSTIC_SERVICE, "code": "RAD", "display": "Radiology"}]}
        ],
        "code": {"coding": [procedure], "text": f"AI-assisted {procedure['display']}"},
        "effectiveDateTime": report.created_at.isoformat(),
        "issued": report.created_at.isoformat(),
        "result": results,
        "conclusion": _conclusion(report),
        "conclusionCode": [{"coding": [finding_coding(f)]} for f in report.findings if f.present]
        or None,
    }
    if "patient" in refs:
        diagnostic["subject"] = {"reference": refs["patient"]}
    if "study" in refs:
        diagnostic["imagingStudy"] = [{"reference": refs["study"]}]
    entries.append(
        {
            "fullUrl": _urn("report", report.id),
            "resource": DiagnosticReport.model_validate(diagnostic),
            "request": {
                "method": "PUT",
                "url": f"DiagnosticReport?identifier={REPORT_SYSTEM}|{report.id}",
            },
        }
    )
    return Bundle.model_validate({"type": "transaction", "entry": entries})


def bundle_json(bundle: Bundle) -> bytes:
    return bundle.model_dump_json(exclude_none=True).encode()
