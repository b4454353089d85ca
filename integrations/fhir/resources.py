"""A Report as a FHIR R4 transaction Bundle, idempotent on resend.

- Patient and ImagingStudy: conditional create (`ifNoneExist` by identifier); the
  EMR normally has both, aidx never overwrites them.
- Device (the model): conditional update by identifier (name + version).
- One Observation per finding and the DiagnosticReport: conditional update by a
  deterministic identifier (report id, finding index), so a resend updates the same
  resources instead of creating new ones.
- A finding not assessed: no value and no interpretation, but `dataAbsentReason`
  with the reason, and the conclusion says which findings were not assessed and why.
- A whole slide (modality SM): a surgical-pathology report (LOINC 11526-1 "Pathology
  study", v2-0074 SP), no body site (the slide does not say), the suggested regions'
  summary (rank, score, area, where on level 0) in the finding's note and the
  conclusion, and "for review by a pathologist".
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

from aidx.inference.assessment import NotAssessedReason
from aidx.inference.reports import Finding, Report

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
# The model judged nothing for an input it cannot judge: "not-performed" (the
# observation procedure was not performed), except for a patient outside the model's
# population, for whom there is no proper value: "not-applicable".
_ABSENT_CODES = {
    NotAssessedReason.model_not_applicable: ("not-applicable", "Not Applicable"),
}
_NOT_PERFORMED = ("not-performed", "Not Performed")
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
    "SM": {"system": LOINC, "code": "11526-1", "display": "Pathology study"},
    "default": {"system": LOINC, "code": "36554-4", "display": "XR Chest Single view"},
}
RADIOLOGY = {"system": DIAGNOSTIC_SERVICE, "code": "RAD", "display": "Radiology"}
PATHOLOGY = {"system": DIAGNOSTIC_SERVICE, "code": "SP", "display": "Surgical Pathology"}
MAX_REGIONS_LISTED = 10


def _is_slide(report: Report) -> bool:
    return report.source.modality == "SM"


def regions_summary(finding: Finding) -> str | None:
    """A whole slide's suggested regions in a sentence (None without any)."""
    if not finding.regions:
        return None
    listed = [
        f"#{r.rank or n} score {r.score if r.score is not None else float('nan'):.2f}"
        + (f", {r.area_mm2:.3g} mm2" if r.area_mm2 is not None else "")
        + f", peak at ({r.peak_x_px:.0f}, {r.peak_y_px:.0f}) px"
        for n, r in enumerate(finding.regions[:MAX_REGIONS_LISTED], start=1)
    ]
    more = len(finding.regions) - len(listed)
    tail = f"; and {more} more" if more > 0 else ""
    return (
        f"{len(finding.regions)} suspicious region(s) suggested for review "
        f"(level-0 pixels): {'; '.join(listed)}{tail}."
    )


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
    body: dict[str, Any] = {
        "identifier": [{"system": FINDING_SYSTEM, "value": f"{report.id}/{index}"}],
        "status": "preliminary",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging"}]}],
        "code": {"coding": [finding_coding(finding)], "text": finding.concept.meaning},
        "issued": report.created_at.isoformat(),
        "effectiveDateTime": report.created_at.isoformat(),
        **(_result(finding) if _assessed(finding) else _absent(finding)),
        "method": {"text": f"AI model {_model_label(report)}"},
        "device": {"reference": refs["device"], "display": _model_label(report)},
    }
    summary = regions_summary(finding) if _is_slide(report) else None
    if summary:
        body["note"].append({"text": summary})
    if not _is_slide(report):
        body["bodySite"] = {"coding": [CHEST_SITE]}
    if report.disclaimer:
        body["note"].append({"text": report.disclaimer})
    if "patient" in refs:
        body["subject"] = {"reference": refs["patient"]}
    if "study" in refs:
        body["derivedFrom"] = [{"reference": refs["study"]}]
    return Observation.model_validate(body)


def _assessed(finding: Finding) -> bool:
    return finding.assessed and finding.probability is not None and finding.present is not None


def _result(finding: Finding) -> dict[str, Any]:
    """An assessed finding: the probability, Positive/Negative and the threshold note."""
    interpretation = ("POS", "Positive") if finding.present else ("NEG", "Negative")
    return {
        "valueQuantity": {
            "value": round(float(finding.probability or 0.0), 6),
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
        "note": [
            {
                "text": f"Calibrated threshold {finding.threshold:.4g}; "
                f"{'present' if finding.present else 'absent'} at this threshold."
            }
        ],
    }


def _absent(finding: Finding) -> dict[str, Any]:
    """A finding not assessed: no value and no interpretation, why in dataAbsentReason
    (its text the stable reason code) and the message in a note."""
    reason = finding.not_assessed_reason
    code, display = _ABSENT_CODES.get(reason, _NOT_PERFORMED) if reason else _NOT_PERFORMED
    message = finding.not_assessed_message or "no reason given"
    return {
        "dataAbsentReason": {
            "coding": [{"system": DATA_ABSENT_REASON, "code": code, "display": display}],
            "text": f"not assessed: {reason or 'unknown'}",
        },
        "note": [{"text": f"Not assessed ({reason or 'unknown'}): {message}"}],
    }


def _conclusion(report: Report) -> str:
    present = [f for f in report.findings if _assessed(f) and f.present]
    skipped = [f for f in report.findings if not _assessed(f)]
    if present:
        text = (
            "AI suggests: "
            + "; ".join(f"{f.concept.meaning} (probability {f.probability:.2f})" for f in present)
            + "."
        )
    elif not skipped:
        text = "AI found none of the findings it screens for."
    elif len(skipped) < len(report.findings):
        text = "AI found none of the findings it assessed."
    else:
        text = "AI assessed none of the findings it screens for."
    return " ".join(
        filter(
            None,
            [
                text,
                _regions_text(report),
                _not_assessed_text(report, skipped),
                f"Preliminary, for review by a {_reviewer(report)}.",
                report.disclaimer,
            ],
        )
    )


def _reviewer(report: Report) -> str:
    return "pathologist" if _is_slide(report) else "radiologist"


def _regions_text(report: Report) -> str:
    if not _is_slide(report):
        return ""
    return " ".join(filter(None, (regions_summary(f) for f in report.findings if _assessed(f))))


def _not_assessed_text(report: Report, skipped: list[Finding]) -> str:
    """Which findings were not assessed and why, and the out-of-distribution verdict."""
    parts = []
    if skipped:
        parts.append(
            "Not assessed: "
            + "; ".join(
                f"{f.concept.meaning} ({f.not_assessed_reason or 'unknown'}: "
                f"{f.not_assessed_message or 'no reason given'})"
                for f in skipped
            )
            + "."
        )
    if report.ood is not None:
        ood = report.ood
        score = "" if ood.score is None else f", score {ood.score:.4g}"
        threshold = "" if ood.threshold is None else f", threshold {ood.threshold:.4g}"
        parts.append(f"Out-of-distribution check: {ood.status.value}{score}{threshold}.")
    return " ".join(parts)


def _entry(full_url: str, resource: Any, request: dict[str, str]) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource, "request": request}


def _patient_entry(patient_id: str, patient_system: str) -> dict[str, Any]:
    """Conditional create of the patient, by identifier."""
    patient = Patient.model_validate(
        {"identifier": [{"system": patient_system, "value": patient_id}]}
    )
    return _entry(
        _urn("patient", patient_system, patient_id),
        patient,
        {
            "method": "POST",
            "url": "Patient",
            "ifNoneExist": f"identifier={patient_system}|{patient_id}",
        },
    )


def _study_entry(study_uid: str, modality: str | None, patient_ref: str) -> dict[str, Any]:
    """Conditional create of the imaging study, by its Study Instance UID."""
    study_id = f"urn:oid:{study_uid}"
    study_body: dict[str, Any] = {
        "identifier": [{"system": URN_IETF, "value": study_id}],
        "status": "available",
        "subject": {"reference": patient_ref},
    }
    if modality:
        study_body["modality"] = [{"system": DICOM_DCM, "code": modality}]
    study = ImagingStudy.model_validate(study_body)
    return _entry(
        _urn("study", study_uid),
        study,
        {
            "method": "POST",
            "url": "ImagingStudy",
            "ifNoneExist": f"identifier={URN_IETF}|{study_id}",
        },
    )


def _device_entry(report: Report) -> dict[str, Any]:
    """Conditional update of the model as a Device, by name and version."""
    model_key = f"{report.model.name}:{report.model.version}"
    device_body: dict[str, Any] = {
        "identifier": [{"system": MODEL_SYSTEM, "value": model_key}],
        "status": "active",
        "deviceName": [{"name": report.model.name, "type": "model-name"}],
        "version": [{"value": str(report.model.version)}],
    }
    if report.disclaimer:
        device_body["note"] = [{"text": report.disclaimer}]
    device = Device.model_validate(device_body)
    return _entry(
        _urn("device", model_key),
        device,
        {"method": "PUT", "url": f"Device?identifier={MODEL_SYSTEM}|{model_key}"},
    )


def _observation_entry(report: Report, index: int, refs: dict[str, str]) -> dict[str, Any]:
    """Conditional update of finding `index`, by report id and index."""
    return _entry(
        _urn("observation", report.id, str(index)),
        _observation(report, index, report.findings[index], refs),
        {
            "method": "PUT",
            "url": f"Observation?identifier={FINDING_SYSTEM}|{report.id}/{index}",
        },
    )


def _report_entry(
    report: Report, results: list[dict[str, str]], refs: dict[str, str]
) -> dict[str, Any]:
    """Conditional update of the DiagnosticReport, by report id."""
    procedure = PROCEDURES.get(report.source.modality or "", PROCEDURES["default"])
    diagnostic: dict[str, Any] = {
        "identifier": [{"system": REPORT_SYSTEM, "value": report.id}],
        "status": "preliminary",
        "category": [{"coding": [PATHOLOGY if _is_slide(report) else RADIOLOGY]}],
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
    return _entry(
        _urn("report", report.id),
        DiagnosticReport.model_validate(diagnostic),
        {"method": "PUT", "url": f"DiagnosticReport?identifier={REPORT_SYSTEM}|{report.id}"},
    )


def build_bundle(report: Report, *, patient_system: str = DEFAULT_PATIENT_SYSTEM) -> Bundle:
    """The transaction Bundle for `report` (deterministic for a given report)."""
    src = report.source
    entries: list[dict[str, Any]] = []
    refs: dict[str, str] = {}
    if src.patient_id:
        entries.append(_patient_entry(src.patient_id, patient_system))
        refs["patient"] = entries[-1]["fullUrl"]
    if src.study_instance_uid and "patient" in refs:
        entries.append(_study_entry(src.study_instance_uid, src.modality, refs["patient"]))
        refs["study"] = entries[-1]["fullUrl"]
    entries.append(_device_entry(report))
    refs["device"] = entries[-1]["fullUrl"]
    results = []
    for index, finding in enumerate(report.findings):
        entries.append(_observation_entry(report, index, refs))
        results.append({"reference": entries[-1]["fullUrl"], "display": finding.concept.meaning})
    entries.append(_report_entry(report, results, refs))
    return Bundle.model_validate({"type": "transaction", "entry": entries})


def bundle_json(bundle: Bundle) -> bytes:
    return bundle.model_dump_json(exclude_none=True).encode()
