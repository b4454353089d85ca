"""Reports to outgoing objects, and the outbox wired from settings.

For each report: the TID 1500 SR and (CXR) the overlay secondary capture for the
PACS, the FHIR transaction bundle for the EMR, and (when an MLLP peer is configured)
an HL7 v2 ORU^R01 for the EMR. Objects are built once, when the
report is made, and stored with their deterministic UIDs/identifiers; the worker
delivers them. Destinations come from settings; without a PACS or an EMR the objects
go to a folder sink (var/outbox/<destination>/).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import pydicom
from sqlalchemy import Engine

from aidx.inference.reports import Report, ReportStore
from aidx.inference.settings import Settings
from aidx.integrations.outbox.destinations import Destination, FolderSink
from aidx.integrations.outbox.store import OutboxStore, OutgoingObject
from aidx.integrations.outbox.worker import Backoff, OutboxWorker

log = logging.getLogger(__name__)
PACS = "pacs"
EMR = "emr"
HL7 = "hl7"  # the EMR over HL7 v2 / MLLP
DICOM = "application/dicom"
FHIR_JSON = "application/fhir+json"
HL7_V2 = "x-application/hl7-v2+er7"


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def destinations_from(settings: Settings) -> dict[str, Destination]:
    sink_root = settings.var_dir / "outbox"
    pacs: Destination
    emr: Destination
    if settings.pacs_dicomweb_url:
        from aidx.integrations.dicom.senders import StowDestination

        pacs = StowDestination(PACS, settings.pacs_dicomweb_url)
    elif settings.pacs_dicom_host and settings.pacs_dicom_port:
        from aidx.integrations.dicom.senders import CStoreDestination

        pacs = CStoreDestination(
            PACS,
            settings.pacs_dicom_host,
            settings.pacs_dicom_port,
            settings.pacs_ae_title,
            settings.dicom_ae_title,
        )
    else:
        pacs = FolderSink(PACS, sink_root)
    if settings.fhir_base_url:
        from aidx.integrations.fhir.client import FhirDestination

        emr = FhirDestination(EMR, settings.fhir_base_url, settings.fhir_bearer_token)
    else:
        emr = FolderSink(EMR, sink_root)
    destinations = {PACS: pacs, EMR: emr}
    if settings.emr_mllp_host and settings.emr_mllp_port:
        from aidx.integrations.hl7.sender import MllpDestination

        destinations[HL7] = MllpDestination(
            HL7,
            settings.emr_mllp_host,
            settings.emr_mllp_port,
            ack_timeout_s=settings.emr_mllp_ack_timeout_s,
        )
    return destinations


def objects_for(
    report: Report,
    sources: Sequence[pydicom.Dataset],
    *,
    overlay_png: bytes | None,
    patient_system: str,
    hl7_receiving: tuple[str, str] | None = None,
) -> list[OutgoingObject]:
    """Everything that `report` sends: SR (+ overlay SC) to the PACS, FHIR to the EMR,
    and an ORU^R01 to the HL7 destination when `hl7_receiving` (MSH-5, MSH-6) is given."""
    from aidx.integrations.dicom.sc import build_overlay_sc, overlay_pixels
    from aidx.integrations.dicom.sr import build_sr
    from aidx.integrations.fhir.resources import build_bundle, bundle_json

    objects = []
    if sources:
        sr = build_sr(report, sources)
        objects.append(
            OutgoingObject(
                PACS, str(sr.SOPInstanceUID), "dicom-sr", DICOM, dicom_bytes(sr), report.id
            )
        )
        if overlay_png is not None:
            sc = build_overlay_sc(report, sources[0], overlay_pixels(overlay_png))
            objects.append(
                OutgoingObject(
                    PACS, str(sc.SOPInstanceUID), "dicom-sc", DICOM, dicom_bytes(sc), report.id
                )
            )
    bundle = build_bundle(report, patient_system=patient_system)
    objects.append(
        OutgoingObject(
            EMR,
            f"DiagnosticReport-{report.id}",
            "fhir-bundle",
            FHIR_JSON,
            bundle_json(bundle),
            report.id,
        )
    )
    if hl7_receiving is not None:
        from aidx.integrations.hl7.oru import build_report_oru, report_control_id

        control_id = report_control_id(report.id, HL7)
        oru = build_report_oru(report, control_id=control_id, receiving=hl7_receiving)
        objects.append(OutgoingObject(HL7, control_id, "hl7v2", HL7_V2, oru, report.id))
    return objects


class Writeback:
    """Builds a report's objects and puts them in the outbox (durably, before the
    caller answers); the worker delivers them."""

    def __init__(
        self, settings: Settings, engine: Engine, reports: ReportStore, audit: Any = None
    ) -> None:
        self.settings = settings
        self.reports = reports
        self.store = OutboxStore(engine)
        self.worker = OutboxWorker(
            self.store,
            destinations_from(settings),
            backoff=Backoff(
                settings.outbox_backoff_base_s,
                settings.outbox_backoff_max_s,
                settings.outbox_max_attempts,
            ),
            poll_s=settings.outbox_poll_s,
            audit=audit,
        )

    def start(self) -> None:
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()

    async def submit(self, report: Report, source: bytes | pydicom.Dataset) -> int:
        """Enqueue `report`'s objects; the number newly added (0 for a resubmission)."""
        objects = await asyncio.to_thread(self._objects, report, source)
        return await self.worker.enqueue(objects)

    def _objects(self, report: Report, source: bytes | pydicom.Dataset) -> list[OutgoingObject]:
        ds = source if isinstance(source, pydicom.Dataset) else pydicom.dcmread(io.BytesIO(source))
        try:
            overlay: bytes | None = self.reports.file(report.id, "overlay.png").read_bytes()
        except Exception:  # a pipeline without an overlay
            overlay = None
        return objects_for(
            report,
            [ds],
            overlay_png=overlay,
            patient_system=self.settings.fhir_patient_identifier_system,
            hl7_receiving=self._hl7_receiving(),
        )

    def _hl7_receiving(self) -> tuple[str, str] | None:
        if HL7 not in self.worker.destinations:
            return None
        s = self.settings
        return (s.emr_hl7_receiving_application, s.emr_hl7_receiving_facility)


class Analyzer(Protocol):
    async def analyze(
        self, data: bytes, *, priority: int | None = ..., timeout_s: float | None = ...
    ) -> Report: ...


class WritebackPipeline:
    """Wraps a pipeline: every report it makes is put in the outbox before it is
    returned, so a client that has its report knows the findings will reach the
    PACS and the EMR."""

    def __init__(self, inner: Analyzer, writeback: Writeback) -> None:
        self.inner = inner
        self.writeback = writeback

    async def analyze(
        self, data: bytes, *, priority: int | None = None, timeout_s: float | None = None
    ) -> Report:
        report = await self.inner.analyze(data, priority=priority, timeout_s=timeout_s)
        await self.writeback.submit(report, data)
        return report

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
