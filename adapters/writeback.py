"""Reports to outgoing objects, and the outbox wired from settings.

For each report: the TID 1500 SR and (CXR) the overlay secondary capture or (CT) the
lesion SEG for the PACS, or (a whole slide that is a DICOM WSI) its suggested regions
as a Microscopy Bulk Simple Annotations object; the FHIR transaction bundle for the
EMR, and (when an MLLP peer is configured) an HL7 v2 ORU^R01 for the EMR.

Before a report is answered, its build record (the source instances' headers) is put
in the outbox for the `build` step; the worker builds the objects from it and the
saved report, and queues them with their deterministic UIDs/identifiers for delivery.
So the answer does not wait for highdicom, and nothing is lost: a crash before or
during the build leaves the record pending, and rebuilding queues nothing twice.
Destinations come from settings; without a PACS or an EMR the objects go to a folder
sink (var/outbox/<destination>/).
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from sqlalchemy import Engine

from aidx.adapters.turnaround import Observe, TurnaroundTracker
from aidx.inference.cpu_stage import CpuStage
from aidx.inference.errors import NotFound
from aidx.inference.reports import Report, ReportStore
from aidx.inference.settings_sections import (
    EmrSettings,
    FhirSettings,
    OutboxSettings,
    PacsSettings,
)
from aidx.integrations.outbox.destinations import Destination, FolderSink, PermanentDeliveryError
from aidx.integrations.outbox.store import Entry, OutboxStore, OutgoingObject
from aidx.integrations.outbox.worker import Backoff, OutboxWorker
from aidx.pipelines.ct.report import CtReport

log = logging.getLogger(__name__)
PACS = "pacs"
EMR = "emr"
HL7 = "hl7"  # the EMR over HL7 v2 / MLLP
BUILD = "build"  # the write-back's own step: a report's objects, built in the worker
BUILD_CXR = "build-cxr"
BUILD_CT = "build-ct"
BUILD_WSI = "build-wsi"
DICOM = "application/dicom"
FHIR_JSON = "application/fhir+json"
HL7_V2 = "x-application/hl7-v2+er7"


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def pack_headers(blobs: Sequence[bytes]) -> bytes:
    """The instances' headers (no pixel data), length-prefixed: a build record."""
    return pack_datasets(
        [pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True) for blob in blobs]
    )


def pack_datasets(headers: Sequence[pydicom.Dataset]) -> bytes:
    """Headers read without their pixel data, length-prefixed: a build record."""
    parts = []
    for header in headers:
        raw = dicom_bytes(header)
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def slide_header_record(slide_path: Path) -> bytes:
    """A whole slide's build record: its level-0 header when it is a DICOM WSI,
    else nothing (a slide without an image in the PACS gets no ANN)."""
    from aidx.adapters.dicom_ann import slide_source_header

    header = slide_source_header(slide_path)
    return pack_datasets([header] if header is not None else [])


def unpack_headers(payload: bytes) -> list[pydicom.Dataset]:
    headers: list[pydicom.Dataset] = []
    offset = 0
    while offset < len(payload):
        (length,) = struct.unpack_from("<I", payload, offset)
        offset += 4
        headers.append(pydicom.dcmread(io.BytesIO(payload[offset : offset + length])))
        offset += length
    return headers


def destinations_from(
    pacs: PacsSettings,
    fhir: FhirSettings,
    emr: EmrSettings,
    *,
    calling_ae: str,
    sink_root: Path,
) -> dict[str, Destination]:
    """The PACS, the EMR (FHIR) and, with an MLLP peer, the EMR over HL7, each from its
    own section; a PACS or EMR without a configured peer is a folder under `sink_root`.
    `calling_ae`: aidx's AE title towards a C-STORE PACS."""
    destinations: dict[str, Destination] = {}
    if pacs.dicomweb_url:
        from aidx.integrations.dicom.senders import StowDestination

        destinations[PACS] = StowDestination(PACS, pacs)
    elif pacs.dicom_host and pacs.dicom_port:
        from aidx.integrations.dicom.senders import CStoreDestination

        destinations[PACS] = CStoreDestination(PACS, pacs, calling_ae=calling_ae)
    else:
        destinations[PACS] = FolderSink(PACS, sink_root)
    if fhir.base_url:
        from aidx.integrations.fhir.client import FhirDestination

        destinations[EMR] = FhirDestination(EMR, fhir)
    else:
        destinations[EMR] = FolderSink(EMR, sink_root)
    if emr.mllp_host and emr.mllp_port:
        from aidx.integrations.hl7.sender import MllpDestination

        destinations[HL7] = MllpDestination(HL7, emr)
    return destinations


def objects_for(
    report: Report,
    sources: Sequence[pydicom.Dataset],
    *,
    overlay_rgb: np.ndarray | None,
    patient_system: str,
    hl7_receiving: tuple[str, str] | None = None,
) -> list[OutgoingObject]:
    """Everything that `report` sends: SR (+ overlay SC) to the PACS, FHIR to the EMR,
    and an ORU^R01 to the HL7 destination when `hl7_receiving` (MSH-5, MSH-6) is given."""
    from aidx.adapters.dicom_sr import build_sr
    from aidx.integrations.dicom.sc import build_overlay_sc

    objects = []
    if sources:
        sr = build_sr(report, sources)
        objects.append(
            OutgoingObject(
                PACS, str(sr.SOPInstanceUID), "dicom-sr", DICOM, dicom_bytes(sr), report.id
            )
        )
        if overlay_rgb is not None:
            sc = build_overlay_sc(report, sources[0], overlay_rgb)
            objects.append(
                OutgoingObject(
                    PACS, str(sc.SOPInstanceUID), "dicom-sc", DICOM, dicom_bytes(sc), report.id
                )
            )
    return objects + emr_objects(report, patient_system=patient_system, hl7_receiving=hl7_receiving)


def emr_objects(
    report: Report, *, patient_system: str, hl7_receiving: tuple[str, str] | None
) -> list[OutgoingObject]:
    """The FHIR bundle for the EMR and, when `hl7_receiving` is given, the ORU^R01."""
    from aidx.integrations.fhir.resources import build_bundle, bundle_json

    objects = []
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
        from aidx.integrations.hl7.report_oru import build_report_oru, report_control_id

        control_id = report_control_id(report.id, HL7)
        oru = build_report_oru(report, control_id=control_id, receiving=hl7_receiving)
        objects.append(OutgoingObject(HL7, control_id, "hl7v2", HL7_V2, oru, report.id))
    return objects


def ct_objects_for(
    report: CtReport,
    sources: Sequence[pydicom.Dataset],
    *,
    label_map_npz: bytes,
    patient_system: str,
    hl7_receiving: tuple[str, str] | None = None,
) -> list[OutgoingObject]:
    """A CT report's objects: the SEG of its lesions (none when there is no lesion)
    and the SR referencing it to the PACS, then what `emr_objects` sends."""
    from aidx.adapters.dicom_seg import LabelMap, build_seg, segment_numbers, with_type2
    from aidx.adapters.dicom_sr import build_ct_sr

    sources = with_type2(sources)
    label_map = LabelMap.from_npz(label_map_npz)
    seg = build_seg(report, sources, label_map)
    sr = build_ct_sr(report, sources, seg, segment_numbers(label_map))
    objects = []
    if seg is not None:
        objects.append(
            OutgoingObject(
                PACS, str(seg.SOPInstanceUID), "dicom-seg", DICOM, dicom_bytes(seg), report.id
            )
        )
    objects.append(
        OutgoingObject(PACS, str(sr.SOPInstanceUID), "dicom-sr", DICOM, dicom_bytes(sr), report.id)
    )
    return objects + emr_objects(report, patient_system=patient_system, hl7_receiving=hl7_receiving)


def wsi_objects_for(
    report: Report,
    sources: Sequence[pydicom.Dataset],
    *,
    patient_system: str,
    hl7_receiving: tuple[str, str] | None = None,
) -> list[OutgoingObject]:
    """A whole-slide report's objects: with the slide's level-0 DICOM header, the ANN
    of its regions to the PACS (none without a region) and the report linked to the
    slide's patient and study; then what `emr_objects` sends."""
    from aidx.adapters.dicom_ann import build_ann, with_slide_source

    objects = []
    if sources:
        report = with_slide_source(report, sources[0])
        ann = build_ann(report, sources[0])
        if ann is not None:
            objects.append(
                OutgoingObject(
                    PACS, str(ann.SOPInstanceUID), "dicom-ann", DICOM, dicom_bytes(ann), report.id
                )
            )
    return objects + emr_objects(report, patient_system=patient_system, hl7_receiving=hl7_receiving)


class Writeback:
    """Puts a report's build record in the outbox (durably, before the caller
    answers); the worker builds the report's objects from it and delivers them to
    `destinations` (see `destinations_from`), retrying as the outbox section says. The
    FHIR section names the patient identifier system; the EMR section, the ORU^R01's
    receiver (when HL7 is one of the destinations)."""

    def __init__(
        self,
        outbox: OutboxSettings,
        destinations: dict[str, Destination],
        engine: Engine,
        reports: ReportStore,
        *,
        fhir: FhirSettings,
        emr: EmrSettings,
        audit: Any = None,
        cpu: CpuStage | None = None,
        observe: Observe | None = None,
    ) -> None:
        """`observe` is told each report's delivery turnaround per destination."""
        self.patient_system = fhir.patient_identifier_system
        self.hl7_receiving = (emr.hl7_receiving_application, emr.hl7_receiving_facility)
        self.reports = reports
        # Reading the headers is CPU work on the answer's path: the shared pool, STAT
        # first (without one, e.g. in the CLI, a plain thread).
        self.cpu = cpu or CpuStage(1)
        self.store = OutboxStore(engine)
        self.turnaround = TurnaroundTracker(self.store, reports, list(destinations), observe)
        self.worker = OutboxWorker(
            self.store,
            {**destinations, BUILD: BuildDestination(self)},
            backoff=Backoff(outbox.backoff_base_s, outbox.backoff_max_s, outbox.max_attempts),
            poll_s=outbox.poll_s,
            lease_s=outbox.lease_s,
            audit=audit,
            on_delivered=self.turnaround.delivered,
        )

    def start(self) -> None:
        self.worker.start()

    async def stop(self, grace_s: float | None = None) -> None:
        await self.worker.stop(grace_s)

    async def submit(
        self, report: Report, sources: Sequence[bytes], priority: int | None = None
    ) -> int:
        """Queue `report`'s build record (its sources' headers); 1, or 0 for a
        resubmission of the same report."""
        kinds = {"cxr": BUILD_CXR, "ct": BUILD_CT}
        if report.pipeline not in kinds:
            raise ValueError(f"no write-back for {report.pipeline!r} reports")
        return await self._submit(kinds[report.pipeline], report.id, sources, priority)

    async def submit_slide(self, report: Report, slide_path: Path) -> int:
        """Queue a whole-slide report's build record (the slide's level-0 header when
        it is a DICOM WSI); 1, or 0 for a resubmission of the same report."""
        if report.pipeline != "wsi":
            raise ValueError(f"not a whole-slide report: {report.pipeline!r}")
        payload = await self.cpu.run(slide_header_record, slide_path)
        record = OutgoingObject(
            BUILD, f"{BUILD_WSI}:{report.id}", BUILD_WSI, DICOM, payload, report.id
        )
        return await self.worker.enqueue([record])

    async def _submit(
        self,
        kind: str,
        rid: str,
        sources: Sequence[bytes],
        priority: int | None,
    ) -> int:
        headers = await self.cpu.run(pack_headers, sources, priority=priority)
        record = OutgoingObject(BUILD, f"{kind}:{rid}", kind, DICOM, headers, rid)
        return await self.worker.enqueue([record])

    def objects(self, record: Entry) -> list[OutgoingObject]:
        """The objects a build record stands for, from its headers and the saved report."""
        if record.report_id is None:
            raise PermanentDeliveryError("a build record without a report")
        sources = unpack_headers(record.payload)
        if record.kind == BUILD_CXR:
            return self._objects(self.reports.load(record.report_id), sources[0])
        if record.kind == BUILD_CT:
            path = self.reports.file(record.report_id, "report.json")
            return self._series_objects(CtReport.model_validate_json(path.read_bytes()), sources)
        if record.kind == BUILD_WSI:
            return wsi_objects_for(
                self.reports.load(record.report_id),
                sources,
                patient_system=self.patient_system,
                hl7_receiving=self._hl7_receiving(),
            )
        raise PermanentDeliveryError(f"unknown build record {record.kind!r}")

    def _objects(self, report: Report, source: pydicom.Dataset) -> list[OutgoingObject]:
        from aidx.pipelines.cxr.evidence import overlay_rgb

        try:  # rendered from the analysis' saved inputs: no PNG encoded and decoded here
            overlay: np.ndarray | None = overlay_rgb(self.reports, report.id)
        except NotFound:  # a report without overlay inputs
            overlay = None
        return objects_for(
            report,
            [source],
            overlay_rgb=overlay,
            patient_system=self.patient_system,
            hl7_receiving=self._hl7_receiving(),
        )

    def _series_objects(
        self, report: CtReport, sources: Sequence[pydicom.Dataset]
    ) -> list[OutgoingObject]:
        # The SEG and the SR reference the instances (UIDs, geometry, patient and
        # study); the label map is the pipeline's.
        from aidx.pipelines.ct.pipeline import LABEL_MAP_FILE

        label_map = self.reports.file(report.id, LABEL_MAP_FILE).read_bytes()
        return ct_objects_for(
            report,
            sources,
            label_map_npz=label_map,
            patient_system=self.patient_system,
            hl7_receiving=self._hl7_receiving(),
        )

    def _hl7_receiving(self) -> tuple[str, str] | None:
        return self.hl7_receiving if HL7 in self.worker.destinations else None


class BuildDestination:
    """The `build` step: a report's objects from its build record, queued for their
    destinations. Retried like a delivery; queuing is idempotent by object key, so a
    build cut short and redone queues nothing twice."""

    name = BUILD

    def __init__(self, writeback: Writeback) -> None:
        self.writeback = writeback

    def deliver(self, entry: Entry) -> None:
        try:
            objects = self.writeback.objects(entry)
        except NotFound as exc:  # the report or its evidence is gone: nothing to build
            raise PermanentDeliveryError(f"cannot build: {exc}") from None
        for obj in objects:  # the worker's next pass, right after this one, takes them
            self.writeback.store.enqueue(obj)
