"""aidx's imaging Reports as HL7 v2 ORU^R01 for the EMR (one OBX per finding)."""

from __future__ import annotations

import hashlib
from datetime import UTC

from aidx.inference.reports import Finding, ModelRef, Report
from aidx.integrations.hl7.message import escape

_STUDY_UID_CODE = "110180^Study Instance UID^DCM"
_SCHEMES = {"SCT": "SCT", "LN": "LN", "DCM": "DCM", "SRT": "SCT"}


def report_control_id(report_id: str, destination: str) -> str:
    """MSH-10 for `report_id` sent to `destination`: the same every time (a resend is
    recognisably the same message), 20 characters (MSH-10's length in v2.5.1)."""
    digest = hashlib.sha256(f"{report_id}|{destination}".encode()).hexdigest()
    return f"AIDX{digest[:16].upper()}"


def build_report_oru(
    report: Report,
    *,
    control_id: str,
    version: str = "2.5.1",
    receiving: tuple[str, str] = ("EMR", "HOSPITAL"),
) -> bytes:
    """An imaging Report as ORU^R01: OBR for the analysed study (OBR-25 P: preliminary),
    one OBX per finding (OBX-3 the coded concept, OBX-5 the probability as NM in UCUM
    "1", OBX-8 A when present / N when absent, OBX-11 P, OBX-17 the model), the study
    as an OBX with its Study Instance UID, and NTEs for the threshold and disclaimer.
    A finding not assessed gets OBX-11 X (no result), no value and no flag, and an NTE
    with the reason; the out-of-distribution verdict is an NTE under the OBR.
    Every timestamp comes from the report, so the same report gives the same bytes."""
    at = report.created_at.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    src = report.source
    model = report.model
    method = f"{escape(model.name)}^{escape(model.name)} v{model.version}^99AIDX"
    lines = [
        f"MSH|^~\\&|AIDX|AIDX|{escape(receiving[0])}|{escape(receiving[1])}|{at}||"
        f"ORU^R01^ORU_R01|{escape(control_id)}|P|{version}",
        f'PID|1||{escape(src.patient_id) if src.patient_id else chr(34) * 2}||""',
    ]
    obr = [""] * 26
    obr[0], obr[1], obr[3] = "OBR", "1", f"{report.id}^AIDX"
    obr[4] = f"AIDX-{report.pipeline.upper()}^AI {escape(report.pipeline)} analysis^99AIDX"
    obr[7], obr[22], obr[24], obr[25] = at, at, _modality(src.modality), "P"
    lines.append("|".join(obr))
    notes = [report.disclaimer] if report.disclaimer else []
    notes += _assessment_notes(report)
    lines += [f"NTE|{i}|L|{escape(note)}" for i, note in enumerate(notes, start=1)]
    n = 0
    if src.study_instance_uid:
        n += 1
        lines.append(
            f"OBX|{n}|ST|{_STUDY_UID_CODE}||{escape(src.study_instance_uid)}||||||P|||{at}"
        )
    for finding in report.findings:
        n += 1
        lines += _finding_segments(finding, n, at=at, method=method, model=model)
    return ("\r".join(lines) + "\r").encode("utf-8")


def _modality(modality: str | None) -> str:
    """OBR-24 diagnostic service section (HL7 table 0074): RX for radiographs, CT...,
    SP (surgical pathology) for a whole slide (SM), as the FHIR report's category."""
    return {"CR": "RX", "DX": "RX", "CT": "CT", "MR": "MR", "US": "US", "SM": "SP"}.get(
        (modality or "").upper(), "RAD"
    )


def _finding_segments(
    finding: Finding, n: int, *, at: str, method: str, model: ModelRef
) -> list[str]:
    """The OBX and NTE of one finding. Not assessed: OBX-11 X ("results cannot be
    obtained for this observation"), OBX-2, OBX-5, OBX-6 and OBX-8 empty (OBX-2 may
    be empty only with X), and the reason in the NTE."""
    concept = finding.concept
    scheme = _SCHEMES.get(concept.scheme.upper(), "99AIDX")
    code = f"{escape(concept.code)}^{escape(concept.meaning)}^{scheme}"
    by = f"model {escape(model.name)} v{model.version}"
    if not finding.assessed or finding.probability is None:
        reason = finding.not_assessed_reason or "unknown"
        message = finding.not_assessed_message or "no reason given"
        obx = ["OBX", str(n), "", code] + [""] * 14
        obx[11], obx[14], obx[17] = "X", at, method
        return [
            "|".join(obx),
            f"NTE|1|L|not assessed ({escape(reason)}): {escape(message)}; {by}",
        ]
    verdict = "present" if finding.present else "absent"
    return [
        f"OBX|{n}|NM|{code}||{finding.probability:.4f}|1^^UCUM||"
        f"{'A' if finding.present else 'N'}|||P|||{at}|||{method}",
        f"NTE|1|L|probability {finding.probability:.4f}; {verdict} at the calibrated "
        f"threshold {finding.threshold:.4f}; {by}",
    ]


def _assessment_notes(report: Report) -> list[str]:
    """The out-of-distribution verdict and why no finding was assessed, as OBR notes."""
    notes = []
    if report.ood is not None:
        ood = report.ood
        score = "none" if ood.score is None else f"{ood.score:.6g}"
        threshold = "none" if ood.threshold is None else f"{ood.threshold:.6g}"
        notes.append(
            f"out-of-distribution check: {ood.status.value}; score {score}; "
            f"threshold {threshold}; method {ood.method or 'none'}; policy {ood.policy.value}"
        )
    if report.not_assessed is not None:
        why = report.not_assessed
        notes.append(f"findings not assessed ({why.reason.value}): {why.message}")
    return notes
