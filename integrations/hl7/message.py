"""HL7 v2 basics that every message shares: field access, timestamps, escaping,
ACKs (built and read) and the `Hl7Error` whose ACK code a receiver answers with.
What a message means (lab results in, imaging reports out) lives with its users."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import hl7

from aidx.inference.errors import BadRequest

SUPPORTED_VERSIONS = {"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8"}
SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$")
_ESCAPES = {"|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}


class Hl7Error(BadRequest):
    """A message aidx cannot accept; `ack_code` is AR (reject) or AE (error)."""

    code = "invalid_hl7"

    def __init__(self, message: str, *, ack_code: str = "AE", control_id: str = "") -> None:
        super().__init__(message)
        self.ack_code = ack_code
        self.control_id = control_id


def get_component(segment: Any, index: int, component: int = 1, repetition: int = 1) -> str:
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


def whole_field(segment: Any, index: int) -> str:
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


def decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def escape(text: str) -> str:
    text = text.replace("\\", "\\E\\")
    for char, escape in _ESCAPES.items():
        text = text.replace(char, escape)
    return text.replace("\r", " ").replace("\n", " ")


def now_ts() -> str:
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
        f"MSH|^~\\&|{escape(sending[0])}|{escape(sending[1])}|{escape(receiving[0])}|"
        f"{escape(receiving[1])}|{now_ts()}||ACK^R01^ACK|{ack_id}|P|{version}",
        # MSA-2 is required: the HL7 null ("") when the message had no readable id
        f"MSA|{ack_code}|{escape(control_id) if control_id else chr(34) * 2}",
    ]
    if ack_code != "AA":
        # ERR-3 HL7 error code (table 0357): 100 segment sequence error, 101 required
        # field missing, 102 data type error, 200 unsupported message type, 203
        # unsupported version id, 207 application internal error
        severity = "E"
        segments.append(f"ERR|||{error_code or '207'}^^HL70357|{severity}||||{escape(text)[:200]}")
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


def parse_ack(data: bytes) -> tuple[str, str, str, str]:
    """(MSA-1 code, MSA-2 control id, ERR-3 error code, text) of an ACK; Hl7Error when
    it is not one."""
    text = decode_text(data).replace("\r\n", "\r").replace("\n", "\r").strip("\r\x00 ")
    if not text.startswith("MSH"):
        raise Hl7Error("the answer is not an HL7 message", ack_code="AR")
    try:
        msg = hl7.parse(text)
        msa = msg.segment("MSA")
    except Exception:
        raise Hl7Error("the answer holds no MSA segment", ack_code="AR") from None
    error_code = ""
    note = whole_field(msa, 3)
    for segment in msg:
        if str(segment[0]) == "ERR":
            error_code = error_code or get_component(segment, 3, 1)
            note = note or whole_field(segment, 8)
    return get_component(msa, 1).upper(), whole_field(msa, 2), error_code, note
