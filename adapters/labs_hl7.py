"""Lab results over HL7 v2: an ORU^R01 in (python-hl7) to the screener's specimens,
and the screened outcomes back out as an ORU^R01.

One message may carry several patients (PID), orders (OBR) and results (OBX) per
order; each OBR is one specimen (its filler order number, or SPM-2 when present).
Problems are `Hl7Error`s with the ACK code to answer: AR (reject: not an ORU^R01 we
can read: garbage, no MSH, wrong version or type) or AE (error: a readable message
with a bad segment or a missing field).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import hl7
from pydantic import ValidationError

from aidx.integrations.hl7.message import (
    SEGMENT_ID,
    SUPPORTED_VERSIONS,
    Hl7Error,
    decode_text,
    escape,
    get_component,
    now_ts,
    parse_ts,
    whole_field,
)
from aidx.pipelines.labs.types import (
    Comparator,
    LabResultIn,
    ResultOutcome,
    SpecimenIn,
    SpecimenOutcome,
)


@dataclass
class OruMessage:
    control_id: str
    version: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    specimens: list[SpecimenIn] = field(default_factory=list)


def _age_y(birth: str, at: datetime) -> float | None:
    born = parse_ts(birth)
    if born is None:
        return None
    days = (at.date() - born.date()).days
    return days / 365.25 if days >= 0 else None


def parse_oru(data: bytes | str) -> OruMessage:
    text = decode_text(data) if isinstance(data, bytes) else data
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
        if line and not SEGMENT_ID.match(line[:3]):
            raise Hl7Error(f"bad segment {line[:3]!r}", ack_code="AR")
        if line and len(line) > 3 and line[3] != text[3]:
            raise Hl7Error(f"segment {line[:3]} is not followed by the field separator")
    try:
        msg = hl7.parse(text)
    except Exception as exc:  # python-hl7 raises several types on malformed input
        raise Hl7Error(f"unreadable HL7: {type(exc).__name__}", ack_code="AR") from None
    msh = msg.segment("MSH")
    control_id = whole_field(msh, 10)
    version = get_component(msh, 12)
    if version not in SUPPORTED_VERSIONS:
        raise Hl7Error(
            f"HL7 version {version or 'missing'!r} is not supported (2.3-2.8)",
            ack_code="AR",
            control_id=control_id,
        )
    kind = (get_component(msh, 9, 1), get_component(msh, 9, 2))
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
        sending_application=get_component(msh, 3),
        sending_facility=get_component(msh, 4),
        receiving_application=get_component(msh, 5),
        receiving_facility=get_component(msh, 6),
    )
    try:
        out.specimens = _specimens(msg, control_id)
    except Hl7Error as exc:
        exc.control_id = control_id
        raise
    except ValidationError as exc:  # a field past its bounds (an age of 1050 y, a long id)
        raise Hl7Error(out_of_range(exc), control_id=control_id) from None
    if not out.specimens:
        raise Hl7Error("the message holds no OBR with OBX results", control_id=control_id)
    return out


def out_of_range(exc: ValidationError) -> str:
    """Where and why, without the value itself (it may be patient data)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "a field"
    return f"{where} is out of range: {first['msg']}"


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
            spm_id = get_component(segment, 2) or get_component(segment, 2, 1)
    flush()
    return specimens


def _result(obx: Any) -> LabResultIn:
    set_id = whole_field(obx, 1)
    code = get_component(obx, 3, 1)
    if not code:
        raise Hl7Error(f"OBX {set_id or '?'}: OBX-3 (observation identifier) is empty")
    status = whole_field(obx, 11)
    if not status:
        raise Hl7Error(f"OBX {set_id or '?'}: OBX-11 (result status) is empty")
    value_type = whole_field(obx, 2)
    raw = whole_field(obx, 5)
    value: float | str | None = raw if raw else None
    comparator: Comparator | None = None
    if value_type == "SN" and raw:  # structured numeric: comparator^num1 (a range stays text)
        sign, number = get_component(obx, 5, 1), get_component(obx, 5, 2)
        plain = not get_component(obx, 5, 3) and not get_component(obx, 5, 4)
        if number and plain and sign in ("", "="):
            value = number
        elif number and plain and sign in {c.value for c in Comparator}:
            value, comparator = number, Comparator(sign)
    return LabResultIn(
        code=code,
        value=value,
        comparator=comparator,
        unit=get_component(obx, 6, 1) or None,
        status=status,
        observation_id=set_id or None,
    )


def _specimen(
    pid: Any, obr: Any, results: list[LabResultIn], spm_id: str, control_id: str, n: int
) -> SpecimenIn:
    patient_id = get_component(pid, 3, 1)
    if not patient_id:
        raise Hl7Error("PID-3 (patient identifier) is empty")
    collected = parse_ts(get_component(obr, 7))
    if collected is None:
        raise Hl7Error(
            f"OBR-7 (observation date/time) {get_component(obr, 7)!r} is not an HL7 timestamp"
        )
    if not results:
        raise Hl7Error(f"OBR {whole_field(obr, 1) or n + 1} has no OBX results")
    specimen_id = (
        spm_id or get_component(obr, 3) or get_component(obr, 2) or f"{control_id}-{n + 1}"
    )
    return SpecimenIn(
        specimen_id=specimen_id,
        patient_id=patient_id,
        sex=whole_field(pid, 8) or None,
        age_y=_age_y(get_component(pid, 7), collected),
        collected_at=collected,
        results=results,
        source_id=control_id,
    )


def build_oru(
    outcomes: Sequence[SpecimenOutcome],
    *,
    control_id: str,
    version: str = "2.5.1",
    receiving: tuple[str, str] = ("LIS", "LAB"),
) -> bytes:
    """The screened results as an ORU^R01: OBX-8 carries the interpretation
    (H/L/HH/LL/A/AA/N), OBX-5 a censored value as SN (`<^3`); NTE after the OBR the
    verdict and the specimen-level reasons (integrity, anomaly, review), NTE after an
    OBX its own reasons; one PID/OBR group per specimen."""
    lines = [
        f"MSH|^~\\&|AIDX|AIDX|{escape(receiving[0])}|{escape(receiving[1])}|{now_ts()}||"
        f"ORU^R01^ORU_R01|{escape(control_id)}|P|{version}"
    ]
    for i, o in enumerate(outcomes, start=1):
        at = o.collected_at.astimezone(UTC).strftime("%Y%m%d%H%M%S")
        # PID-5 is required: aidx holds no names, so it sends the HL7 null ("")
        lines.append(f'PID|{i}||{escape(o.patient_id)}||""')
        obr = [""] * 26
        obr[:4] = ["OBR", str(i), "", escape(o.specimen_id)]
        obr[4], obr[7], obr[25] = "AIDX-SCREEN^Lab screening^99AIDX", at, "F"
        lines.append("|".join(obr))
        notes = [f"verdict: {o.verdict.value}"]
        notes += [f"{r.rule}: {r.message}" for r in o.reasons]
        notes += o.warnings
        lines += [f"NTE|{k}|L|{escape(text)[:400]}" for k, text in enumerate(notes, start=1)]
        for j, r in enumerate(o.results, start=1):
            lines.append(_obx(j, r, at))
            for k, reason in enumerate(r.reasons, start=1):
                lines.append(f"NTE|{k}|L|{escape(reason.rule)}: {escape(reason.message)[:400]}")
    return ("\r".join(lines) + "\r").encode("utf-8")


def _obx(j: int, r: ResultOutcome, at: str) -> str:
    code = r.concept.code if r.concept else r.code
    text = r.concept.meaning if r.concept else ""
    system = "LN" if r.concept else "L"
    numeric = r.value_canonical is not None
    kind = "SN" if numeric and r.comparator else "NM" if numeric else "ST"
    value = f"{r.value_canonical:.6g}" if numeric else escape(str(r.value or ""))
    if kind == "SN":
        value = f"{escape(str(r.comparator))}^{value}"
    unit = r.unit_canonical if numeric else (r.unit or "")
    ref = (
        f"{r.reference_low:g}-{r.reference_high:g}"
        if r.reference_low is not None and r.reference_high is not None
        else ""
    )
    status = r.result_status if r.result_status in ("F", "C", "P") else "F"
    return (
        f"OBX|{j}|{kind}|{escape(code)}^{escape(text)}^{system}||"
        f"{value}|{escape(unit or '')}^^UCUM|{ref}|{r.interpretation}|||{status}"
        f"|||{at}"
    )


# --- imaging reports (aidx's own findings) as ORU^R01 ----------------------------------

# DICOM's "Study Instance UID" concept (DCM 110180), as IHE maps it into HL7 v2.
