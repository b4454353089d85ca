"""HL7 v2 ORU^R01: parse lab results (python-hl7), build ACKs and result messages
(screened lab results, and aidx's imaging Reports for the EMR), read ACKs.

One message may carry several patients (PID), orders (OBR) and results (OBX) per
order; each OBR is one specimen (its filler order number, or SPM-2 when present).
Problems are `Hl7Error`s with the ACK code to answer: AR (reject: not an ORU^R01 we
can read: garbage, no MSH, wrong version or type) or AE (error: a readable message
with a bad segment or a missing field).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import hl7

from aidx.inference.errors import BadRequest
from aidx.inference.reports import Report
from aidx.pipelines.labs.types import LabResultIn, SpecimenIn, SpecimenOutcome

SUPPORTED_VERSIONS = {"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8"}
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$")
_ESCAPES = {"|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}


class Hl7Error(BadRequest):
    """A message aidx cannot accept; `ack_code` is AR (reject) or AE (error)."""

    code = "invalid_hl7"

    def __init__(self, message: str, *, ack_code: str = "AE", control_id: str = "") -> None:
        super().__init__(message)
        self.ack_code = ack_code
        self.control_id = control_id


@dataclass
class OruMessage:
    control_id: str
    version: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    specimens: list[SpecimenIn] = field(default_factory=list)


def _get(segment: Any, index: int, component: int = 1, repetition: int = 1) -> str:
    """One component of a field (1-based), "" when absent; a plain field is its own
    first component."""
    try:
        value = segment(index)
        if not isinstance(value, str):
            value = value(repetition)
        if not isinstance(value, str):
            value = value(component)
        elif component != 1:
            return ""
        return str(value).strip()
    except (IndexError, TypeError, AttributeError):
        return ""


def _whole(segment: Any, index: int) -> str:
    try:
        return str(segment(index)).strip()
    except (IndexError, TypeError):
        return ""


def parse_ts(text: str) -> datetime | None:
    """An HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]); no zone: UTC."""
    m = _TS.match(text.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, zone = m.groups()
    try:
        tz = UTC
        if zone:
            sign = 1 if zone[0] == "+" else -1
            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])))
        return datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            tzinfo=tz,
        )
    except ValueError:
        return None


def _age_y(birth: str, at: datetime) -> float | None:
    born = parse_ts(birth)
    if born is None:
        return None
    days = (at.date() - born.date()).days
    return days / 365.25 if days >= 0 else None


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_oru(data: bytes | str) -> OruMessage:
    text = _decode(data) if isinstance(data, bytes) else data
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r\x00 ")
    salvaged = _salvage_control_id(text)
    try:
        return _parse(text)
    except Hl7Error as exc:
        exc.control_id = exc.control_id or salvaged
        raise


def _salvage_control_id(text: str) -> str:
    """MSH-10 read by splitting, for the ACK of a message hl7 cannot parse."""
    if not text.startswith("MSH") or len(text) < 4:
        return ""
    fields = text.split("\r", 1)[0].split(text[3])
    return fields[9][:64] if len(fields) > 9 and fields[9].isprintable() else ""


def _parse(text: str) -> OruMessage:
    if not text.startswith("MSH") or len(text) < 9:
        raise Hl7Error("the message does not start with an MSH segment", ack_code="AR")
    if any(ord(c) < 32 and c not in "\r\t" for c in text):
        raise Hl7Error("the message holds control characters", ack_code="AR")
    for line in text.split("\r"):
        if line and not _SEGMENT_ID.match(line[:3]):
            raise Hl7Error(f"bad segment {line[:3]!r}", ack_code="AR")
        if line and len(line) > 3 and line[3] != text[3]:
            raise Hl7Error(f"segment {line[:3]} is not followed by the field separator")
    try:
        msg = hl7.parse(text)
    except Exception as exc:  # python-hl7 raises several types on malformed input
        raise Hl7Error(f"unreadable HL7: {type(exc).__name__}", ack_code="AR") from None
    msh = msg.segment("MSH")
    control_id = _whole(msh, 10)
    version = _get(msh, 12)
    if version not in SUPPORTED_VERSIONS:
        raise Hl7Error(
            f"HL7 version {version or 'missing'!r} is not supported (2.3-2.8)",
            ack_code="AR",
            control_id=control_id,
        )
    kind = (_get(msh, 9, 1), _get(msh, 9, 2))
    if kind != ("ORU", "R01"):
        raise Hl7Error(
            f"message type {'^'.join(kind)!r} is not ORU^R01",
            ack_code="AR",
            control_id=control_id,
        )
    if not control_id:
        raise Hl7Error("MSH-10 (message control id) is empty", ack_code="AR")
    out = OruMessage(
        control_id=control_id,
        version=version,
        sending_application=_get(msh, 3),
        sending_facility=_get(msh, 4),
        receiving_application=_get(msh, 5),
        receiving_facility=_get(msh, 6),
    )
    try:
        out.specimens = _specimens(msg, control_id)
    except Hl7Error as exc:
        exc.control_id = control_id
        raise
    if not out.specimens:
        raise Hl7Error("the message holds no OBR with OBX results", control_id=control_id)
    return out


def _specimens(msg: Any, control_id: str) -> list[SpecimenIn]:
    specimens: list[SpecimenIn] = []
    pid: Any = None
    obr: Any = None
    results: list[LabResultIn] = []
    spm_id = ""

    def flush() -> None:
        nonlocal obr, results, spm_id
        if obr is not None:
            specimens.append(_specimen(pid, obr, results, spm_id, control_id, len(specimens)))
        obr, results, spm_id = None, [], ""

    for segment in msg:
        name = str(segment[0])
        if name == "PID":
            flush()
            pid = segment
        elif name == "OBR":
            flush()
            if pid is None:
                raise Hl7Error("OBR before any PID segment")
            obr = segment
        elif name == "OBX":
            if obr is None:
                raise Hl7Error("OBX outside an order (no OBR before it)")
            results.append(_result(segment))
        elif name == "SPM" and obr is not None:
            spm_id = _get(segment, 2) or _get(segment, 2, 1)
    flush()
    return specimens


def _result(obx: Any) -> LabResultIn:
    set_id = _whole(obx, 1)
    code = _get(obx, 3, 1)
    if not code:
        raise Hl7Error(f"OBX {set_id or '?'}: OBX-3 (observation identifier) is empty")
    status = _whole(obx, 11)
    if not status:
        raise Hl7Error(f"OBX {set_id or '?'}: OBX-11 (result status) is empty")
    value_type = _whole(obx, 2)
    raw = _whole(obx, 5)
    value: float | str | None = raw if raw else None
    if value_type == "SN" and raw:  # structured numeric: comparator^num1 ("<^0.01" stays text)
        comparator, number = _get(obx, 5, 1), _get(obx, 5, 2)
        value = number if comparator in ("", "=") and number else raw
    return LabResultIn(
        code=code,
        value=value,
        unit=_get(obx, 6, 1) or None,
        status=status,
        observation_id=set_id or None,
    )


def _specimen(
    pid: Any, obr: Any, results: list[LabResultIn], spm_id: str, control_id: str, n: int
) -> SpecimenIn:
    patient_id = _get(pid, 3, 1)
    if not patient_id:
        raise Hl7Error("PID-3 (patient identifier) is empty")
    collected = parse_ts(_get(obr, 7))
    if collected is None:
        raise Hl7Error(f"OBR-7 (observation date/time) {_get(obr, 7)!r} is not an HL7 timestamp")
    if not results:
        raise Hl7Error(f"OBR {_whole(obr, 1) or n + 1} has no OBX results")
    specimen_id = spm_id or _get(obr, 3) or _get(obr, 2) or f"{control_id}-{n + 1}"
    return SpecimenIn(
        specimen_id=specimen_id,
        patient_id=patient_id,
        sex=_whole(pid, 8) or None,
        age_y=_age_y(_get(pid, 7), collected),
        collected_at=collected,
        results=results,
        source_id=control_id,
    )


def _escape(text: str) -> str:
    text = text.replace("\\", "\\E\\")
    for char, escape in _ESCAPES.items():
        text = text.replace(char, escape)
    return text.replace("\r", " ").replace("\n", " ")


def _now_ts() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


_ack_ids = itertools.count(1)


def build_ack(
    ack_code: str,
    *,
    control_id: str,
    text: str = "",
    version: str = "2.5.1",
    sending: tuple[str, str] = ("AIDX", "AIDX"),
    receiving: tuple[str, str] = ("", ""),
    error_code: str = "",
) -> bytes:
    """An ACK^R01 (MSA-1 AA, AE or AR; MSA-2 the message's control id)."""
    version = version if version in SUPPORTED_VERSIONS else "2.5.1"
    ack_id = f"AIDX{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}{next(_ack_ids):06d}"
    segments = [
        f"MSH|^~\\&|{_escape(sending[0])}|{_escape(sending[1])}|{_escape(receiving[0])}|"
        f"{_escape(receiving[1])}|{_now_ts()}||ACK^R01^ACK|{ack_id}|P|{version}",
        # MSA-2 is required: the HL7 null ("") when the message had no readable id
        f"MSA|{ack_code}|{_escape(control_id) if control_id else chr(34) * 2}",
    ]
    if ack_code != "AA":
        # ERR-3 HL7 error code (table 0357): 100 segment sequence error, 101 required
        # field missing, 102 data type error, 200 unsupported message type, 203
        # unsupported version id, 207 application internal error
        severity = "E"
        segments.append(f"ERR|||{error_code or '207'}^^HL70357|{severity}||||{_escape(text)[:200]}")
    return ("\r".join(segments) + "\r").encode("utf-8")


def error_code_for(exc: Hl7Error) -> str:
    message = exc.message
    if "version" in message:
        return "203"
    if "message type" in message:
        return "200"
    if "is empty" in message or "no OBX" in message or "no OBR" in message:
        return "101"
    if "before any" in message or "outside an order" in message:
        return "100"
    if "timestamp" in message:
        return "102"
    return "207"


def build_oru(
    outcomes: Sequence[SpecimenOutcome],
    *,
    control_id: str,
    version: str = "2.5.1",
    receiving: tuple[str, str] = ("LIS", "LAB"),
) -> bytes:
    """The screened results as an ORU^R01: OBX-8 carries the interpretation
    (H/L/HH/LL/A/AA/N), NTE the reasons; one PID/OBR group per specimen."""
    lines = [
        f"MSH|^~\\&|AIDX|AIDX|{_escape(receiving[0])}|{_escape(receiving[1])}|{_now_ts()}||"
        f"ORU^R01^ORU_R01|{_escape(control_id)}|P|{version}"
    ]
    for i, o in enumerate(outcomes, start=1):
        at = o.collected_at.astimezone(UTC).strftime("%Y%m%d%H%M%S")
        # PID-5 is required: aidx holds no names, so it sends the HL7 null ("")
        lines.append(f'PID|{i}||{_escape(o.patient_id)}||""')
        obr = [""] * 26
        obr[:4] = ["OBR", str(i), "", _escape(o.specimen_id)]
        obr[4], obr[7], obr[25] = "AIDX-SCREEN^Lab screening^99AIDX", at, "F"
        lines.append("|".join(obr))
        lines.append(f"NTE|1|L|verdict: {o.verdict.value}")
        for j, r in enumerate(o.results, start=1):
            code = r.concept.code if r.concept else r.code
            text = r.concept.meaning if r.concept else ""
            system = "LN" if r.concept else "L"
            numeric = r.value_canonical is not None
            value = f"{r.value_canonical:.6g}" if numeric else _escape(str(r.value or ""))
            unit = r.unit_canonical if numeric else (r.unit or "")
            ref = (
                f"{r.reference_low:g}-{r.reference_high:g}"
                if r.reference_low is not None and r.reference_high is not None
                else ""
            )
            status = r.result_status if r.result_status in ("F", "C", "P") else "F"
            lines.append(
                f"OBX|{j}|{'NM' if numeric else 'ST'}|{_escape(code)}^{_escape(text)}^{system}||"
                f"{value}|{_escape(unit or '')}^^UCUM|{ref}|{r.interpretation}|||{status}"
                f"|||{at}"
            )
            for k, reason in enumerate(r.reasons, start=1):
                lines.append(f"NTE|{k}|L|{_escape(reason.rule)}: {_escape(reason.message)[:400]}")
    return ("\r".join(lines) + "\r").encode("utf-8")


# --- imaging reports (aidx's own findings) as ORU^R01 ----------------------------------

# DICOM's "Study Instance UID" concept (DCM 110180), as IHE maps it into HL7 v2.
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
    Every timestamp comes from the report, so the same report gives the same bytes."""
    at = report.created_at.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    src = report.source
    model = report.model
    method = f"{_escape(model.name)}^{_escape(model.name)} v{model.version}^99AIDX"
    lines = [
        f"MSH|^~\\&|AIDX|AIDX|{_escape(receiving[0])}|{_escape(receiving[1])}|{at}||"
        f"ORU^R01^ORU_R01|{_escape(control_id)}|P|{version}",
        f'PID|1||{_escape(src.patient_id) if src.patient_id else chr(34) * 2}||""',
    ]
    obr = [""] * 26
    obr[0], obr[1], obr[3] = "OBR", "1", f"{report.id}^AIDX"
    obr[4] = f"AIDX-{report.pipeline.upper()}^AI {_escape(report.pipeline)} analysis^99AIDX"
    obr[7], obr[22], obr[24], obr[25] = at, at, _modality(src.modality), "P"
    lines.append("|".join(obr))
    if report.disclaimer:
        lines.append(f"NTE|1|L|{_escape(report.disclaimer)}")
    n = 0
    if src.study_instance_uid:
        n += 1
        lines.append(
            f"OBX|{n}|ST|{_STUDY_UID_CODE}||{_escape(src.study_instance_uid)}||||||P|||{at}"
        )
    for finding in report.findings:
        n += 1
        concept = finding.concept
        scheme = _SCHEMES.get(concept.scheme.upper(), "99AIDX")
        lines.append(
            f"OBX|{n}|NM|{_escape(concept.code)}^{_escape(concept.meaning)}^{scheme}||"
            f"{finding.probability:.4f}|1^^UCUM||{'A' if finding.present else 'N'}|||P|||"
            f"{at}|||{method}"
        )
        verdict = "present" if finding.present else "absent"
        lines.append(
            f"NTE|1|L|probability {finding.probability:.4f}; {verdict} at the calibrated "
            f"threshold {finding.threshold:.4f}; model {_escape(model.name)} v{model.version}"
        )
    return ("\r".join(lines) + "\r").encode("utf-8")


def _modality(modality: str | None) -> str:
    """OBR-24 diagnostic service section (HL7 table 0074): RX for radiographs, CT..."""
    return {"CR": "RX", "DX": "RX", "CT": "CT", "MR": "MR", "US": "US"}.get(
        (modality or "").upper(), "RAD"
    )


def parse_ack(data: bytes) -> tuple[str, str, str, str]:
    """(MSA-1 code, MSA-2 control id, ERR-3 error code, text) of an ACK; Hl7Error when
    it is not one."""
    text = _decode(data).replace("\r\n", "\r").replace("\n", "\r").strip("\r\x00 ")
    if not text.startswith("MSH"):
        raise Hl7Error("the answer is not an HL7 message", ack_code="AR")
    try:
        msg = hl7.parse(text)
        msa = msg.segment("MSA")
    except Exception:
        raise Hl7Error("the answer holds no MSA segment", ack_code="AR") from None
    error_code = ""
    note = _whole(msa, 3)
    for segment in msg:
        if str(segment[0]) == "ERR":
            error_code = error_code or _get(segment, 3, 1)
            note = note or _whole(segment, 8)
    return _get(msa, 1).upper(), _whole(msa, 2), error_code, note
