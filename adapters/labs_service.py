"""Lab screening as the service runs it: the screener, its store and live feed, and
the HL7 v2 MLLP listener that feeds it (when the labs section has a port; on
loopback unless AIDX_LABS_MLLP_HOST says otherwise)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Engine

from aidx.adapters.analysis import Actor, AnalysisStep, Audited
from aidx.adapters.labs_hl7 import parse_oru
from aidx.adapters.turnaround import Observe
from aidx.inference.audit import AuditLog
from aidx.inference.drift_monitor import DriftMonitor
from aidx.inference.serving import ModelService
from aidx.inference.settings_sections import LabsSettings
from aidx.integrations.hl7.message import Hl7Error, build_ack, error_code_for, escape
from aidx.integrations.hl7.mllp import MllpServer
from aidx.pipelines.labs.catalogue import load_catalogue
from aidx.pipelines.labs.drift import observations_by_model
from aidx.pipelines.labs.explain import summary
from aidx.pipelines.labs.hub import AlertHub
from aidx.pipelines.labs.screening import LabScreener
from aidx.pipelines.labs.store import LabStore
from aidx.pipelines.labs.types import SpecimenIn, SpecimenOutcome, Verdict

log = logging.getLogger(__name__)


class LabsService:
    def __init__(
        self,
        models: ModelService,
        engine: Engine,
        audit: AuditLog,
        labs: LabsSettings,
        observe: Observe | None = None,
        drift: DriftMonitor | None = None,
    ) -> None:
        """`observe`: told each screening's seconds from received to analysed; `drift`
        keeps what the anomaly model saw and said of each specimen it scored."""
        self.catalogue = load_catalogue(labs.catalogue)
        self.store = LabStore(engine)
        self.hub = AlertHub()
        self.screener = LabScreener(self.catalogue, self.store, models, self.hub)
        self.audit = audit
        # the screener stores results and raises alerts as it screens: nothing to record
        self.step: AnalysisStep[Sequence[SpecimenIn], list[SpecimenOutcome]] = AnalysisStep(
            self.screener, audit, recorder=None, audited=specimens_screened,
            action="labs.screen", observe=observe,
            watch=None if drift is None else watch_labs(drift),
        )  # fmt: skip
        self._loop: asyncio.AbstractEventLoop | None = None
        self.mllp = (
            MllpServer(
                self.handle_hl7,
                host=labs.mllp_host,
                port=labs.mllp_port,
                max_frame_bytes=labs.mllp_max_frame_bytes,
                frame_timeout_s=labs.mllp_frame_timeout_s,
                idle_timeout_s=labs.mllp_idle_timeout_s,
            )
            if labs.mllp_port is not None
            else None
        )

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.mllp is not None:
            await self.mllp.start()

    async def stop(self) -> None:
        if self.mllp is not None:
            await self.mllp.stop()
        self.hub.close()

    def end_streams(self) -> None:
        """End the live alert streams, from any thread or a signal handler: uvicorn
        waits for open responses before it shuts the app down, and a live stream never
        ends by itself (clients reconnect elsewhere with Last-Event-ID)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.hub.close)

    async def handle_hl7(self, data: bytes) -> bytes:
        """One ORU^R01 in, its ACK out: AA when screened, AE/AR with the reason."""
        received_s = time.time()  # the message has just arrived whole
        try:
            message = parse_oru(data)
        except Hl7Error as exc:
            return build_ack(
                exc.ack_code,
                control_id=exc.control_id,
                text=exc.message,
                error_code=error_code_for(exc),
            )
        sender = Actor(f"mllp:{message.sending_application or 'unknown'}", "lab")
        try:
            outcomes = await self.step.run(message.specimens, sender, received_at=received_s)
        except Exception as exc:  # keep listening; the sender retries on AE
            log.exception("screening an HL7 message failed")
            return build_ack(
                "AE",
                control_id=message.control_id,
                text=f"screening failed: {getattr(exc, 'code', 'internal_error')}",
                version=message.version,
            )
        log.info("HL7 %s: %s", message.control_id, "; ".join(summary(o) for o in outcomes))
        ack = build_ack(
            "AA",
            control_id=message.control_id,
            version=message.version,
            sending=(message.receiving_application or "AIDX", message.receiving_facility or "AIDX"),
            receiving=(message.sending_application, message.sending_facility),
        )
        return with_verdicts(ack, outcomes, message.version)


def watch_labs(drift: DriftMonitor) -> Callable[[list[SpecimenOutcome]], None]:
    def watch(outcomes: list[SpecimenOutcome]) -> None:
        for (name, version), observed in observations_by_model(outcomes).items():
            drift.observe(name, version, observed)

    return watch


def specimens_screened(outcomes: list[SpecimenOutcome]) -> Audited:
    return Audited(
        "labs.screen", [(f"specimen/{o.specimen_id}", o.verdict.value) for o in outcomes]
    )


_ERR_SEGMENT_VERSIONS = ("2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")
_MSA_TEXT_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6")  # withdrawn in 2.7


def with_verdicts(ack: bytes, outcomes: Sequence[SpecimenOutcome], version: str) -> bytes:
    """An AA that says which specimens are held: MSA-3 counts them (every version),
    and from v2.5 one ERR per held specimen, severity W (ERR-4; ERR-3 0 "message
    accepted", table 0357), its verdict and reasons in ERR-8. The message was
    accepted: a receiving LIS files it and shows the warnings; nothing is resent.
    (MSA-3 is withdrawn from v2.7: there the ERR segments alone carry it.)"""
    held = [o for o in outcomes if o.verdict is not Verdict.release]
    if not held:
        return ack
    critical = sum(o.verdict is Verdict.critical for o in held)
    text = f"{len(held)} of {len(outcomes)} specimens held: {critical} critical"
    text += f", {len(held) - critical} review"
    lines = ack.decode("utf-8").rstrip("\r").split("\r")
    if version in _MSA_TEXT_VERSIONS:
        lines = [f"{x}|{escape(text)[:80]}" if x.startswith("MSA|") else x for x in lines]
    if version in _ERR_SEGMENT_VERSIONS:
        for o in held:
            rules = ", ".join(dict.fromkeys(r.rule for r in o.reasons)) or "see results"
            note = f"specimen {o.specimen_id}: {o.verdict.value}: {rules}"
            lines.append(f"ERR|||0^Message accepted^HL70357|W||||{escape(note)[:200]}")
    return ("\r".join(lines) + "\r").encode("utf-8")
