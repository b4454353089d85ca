"""The outbox destination for HL7 v2 over MLLP: sends a stored ORU^R01 and waits for
the ACK. AA (or CA) is delivered; no answer, a closed connection, an ACK for another
message, or AE/AR for a reason that may pass (application error, busy) is retried
with the outbox's backoff; AE/AR saying the message itself is wrong (HL7 table 0357:
segment sequence, required field, data type, table value, unsupported message type,
event, processing id or version) makes the entry dead, with the peer's reason.

A resend carries the same MSH-10 (derived from the report and the destination), so
a receiver that has it already can recognise the duplicate."""

from __future__ import annotations

from aidx.inference.settings_sections import EmrSettings
from aidx.integrations.hl7.message import Hl7Error, parse_ack
from aidx.integrations.hl7.mllp import send_message
from aidx.integrations.outbox.destinations import (
    PermanentDeliveryError,
    TransientDeliveryError,
)
from aidx.integrations.outbox.store import Entry

ACCEPTED = {"AA", "CA"}
REFUSED = {"AE", "AR", "CE", "CR"}
# HL7 table 0357 codes that say the message is wrong: sending it again will not help.
PERMANENT_ERRORS = {"100", "101", "102", "103", "200", "201", "202", "203"}


class MllpDestination:
    def __init__(self, name: str, emr: EmrSettings) -> None:
        if not (emr.mllp_host and emr.mllp_port):
            raise ValueError("HL7 to the EMR needs AIDX_EMR_MLLP_HOST and AIDX_EMR_MLLP_PORT")
        self.name = name
        self.host = emr.mllp_host
        self.port = emr.mllp_port
        self.ack_timeout_s = emr.mllp_ack_timeout_s

    def deliver(self, entry: Entry) -> None:
        where = f"{self.host}:{self.port}"
        try:
            answer = send_message(self.host, self.port, entry.payload, timeout_s=self.ack_timeout_s)
        except OSError as exc:  # refused, reset, closed early, timed out
            raise TransientDeliveryError(
                f"MLLP {where}: no ACK ({type(exc).__name__}: {exc})"
            ) from None
        try:
            code, acked, error_code, text = parse_ack(answer)
        except Hl7Error as exc:
            raise TransientDeliveryError(f"MLLP {where}: {exc.message}") from None
        if acked and acked != entry.object_key:
            raise TransientDeliveryError(f"MLLP {where}: the ACK is for another message")
        if code in ACCEPTED:
            return
        reason = f"MLLP {where} answered {code or 'no MSA-1'}"
        reason += f" (ERR {error_code})" if error_code else ""
        reason += f": {text[:300]}" if text else ""
        if code in REFUSED and error_code in PERMANENT_ERRORS:
            raise PermanentDeliveryError(reason)
        raise TransientDeliveryError(reason)
