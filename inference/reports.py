"""The typed Report every pipeline returns, and where reports are kept."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from aidx.inference.assessment import NotAssessed, NotAssessedReason, OodVerdict
from aidx.inference.errors import NotFound
from aidx.inference.files import atomic_write, make_folders

# Report ids are deterministic (content + analysis), so a resend is idempotent.
_REPORT_NAMESPACE = uuid.UUID("6f1c2a44-4b0e-4d53-9a43-8f3b1e7d2c10")
DEMO_DISCLAIMER = "Demo weights trained on synthetic data: not for clinical use."


class Coding(BaseModel):
    scheme: str  # "SCT" (SNOMED CT), "LN" (LOINC), ...
    code: str
    meaning: str


class Region(BaseModel):
    """A hot region in the original image's pixel coordinates (x = column, y = row)."""

    x_min_px: float
    y_min_px: float
    x_max_px: float
    y_max_px: float
    peak_x_px: float
    peak_y_px: float
    peak_heat: float = Field(description="heat at the peak, 0..1 relative to the map's range")
    # Outlined regions (whole slides): closed ring of [x, y], mean score, area, rank.
    polygon_px: list[list[float]] | None = None
    score: float | None = None
    area_mm2: float | None = None
    rank: int | None = None


class Finding(BaseModel):
    """A coded finding: its probability and present/absent at the calibrated threshold,
    or, when the model could not judge the input, not assessed (no probability, no
    present/absent) with a stable reason code and a human message."""

    concept: Coding
    probability: float | None
    threshold: float
    present: bool | None
    regions: list[Region] = Field(default_factory=list)
    assessed: bool = True
    not_assessed_reason: NotAssessedReason | None = None
    not_assessed_message: str | None = None

    @classmethod
    def not_assessed(cls, concept: Coding, threshold: float, why: NotAssessed) -> Finding:
        return cls(
            concept=concept,
            probability=None,
            threshold=threshold,
            present=None,
            assessed=False,
            not_assessed_reason=why.reason,
            not_assessed_message=why.message,
        )


class ModelRef(BaseModel):
    name: str
    version: int
    sha256: str | None
    demo_weights: bool


class Timings(BaseModel):
    decode_ms: float = 0.0
    preprocess_ms: float = 0.0
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    postprocess_ms: float = 0.0
    cpu_wait_ms: float = 0.0  # waiting for a free core (decode and render pool)
    writeback_ms: float = 0.0  # the report's build record into the outbox, before the answer
    total_ms: float = 0.0
    batch_size: int = 1


class SourceRef(BaseModel):
    patient_id: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    modality: str | None = None
    rows: int | None = None
    columns: int | None = None
    # Coarse study context, for agreement per site, sex and age band (inference/cohort.py)
    station_name: str | None = None
    institution_name: str | None = None
    patient_sex: str | None = None  # M | F | O, as the header says
    patient_age_y: int | None = None  # whole years at the study


class Evidence(BaseModel):
    kind: str  # "overlay"
    media_type: str
    url: str


class Delivery(BaseModel):
    """One destination's write-back of a report: delivered once every object for it
    is (the outbox knows when), with the seconds since the report was received."""

    destination: str  # pacs | fhir | hl7
    state: str  # pending | delivered | failed
    delivered_at: datetime | None = None
    seconds: float | None = None


class Turnaround(BaseModel):
    """When the report's input was received (first instance arrival for C-STORE,
    request start for REST, message arrival for MLLP), analysed, and delivered."""

    received_at: datetime
    analysed_at: datetime
    analysed_s: float
    deliveries: list[Delivery] = Field(
        default_factory=list, description="filled when the report is read"
    )

    @classmethod
    def between(cls, received_s: float, analysed_s: float) -> Turnaround:
        """From POSIX seconds (UTC)."""
        return cls(
            received_at=datetime.fromtimestamp(received_s, UTC),
            analysed_at=datetime.fromtimestamp(analysed_s, UTC),
            analysed_s=round(analysed_s - received_s, 3),
        )


class Report(BaseModel):
    id: str
    pipeline: str
    status: str = "preliminary"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: SourceRef
    model: ModelRef
    findings: list[Finding]
    evidence: list[Evidence] = Field(default_factory=list)
    timings: Timings
    warnings: list[str] = Field(default_factory=list)
    disclaimer: str | None = None
    ood: OodVerdict | None = None  # the model's out-of-distribution gate, when it has one
    not_assessed: NotAssessed | None = None  # set when no finding could be assessed
    turnaround: Turnaround | None = None
    # What the pipeline observed of its input for drift monitoring (inference/drift.py):
    # kept in memory for the analysis step, never saved nor answered.
    _inputs_observed: dict[str, float | int | str | bool | None] = PrivateAttr(default_factory=dict)

    @property
    def inputs_observed(self) -> dict[str, float | int | str | bool | None]:
        return self._inputs_observed

    def observe_inputs(self, features: Mapping[str, float | int | str | bool | None]) -> None:
        self._inputs_observed = dict(features)


def report_id(
    pipeline: str, content_sha256: str, model: ModelRef, params: Mapping[str, Any] | None = None
) -> str:
    """The id of analysing this content (the SHA-256 of all of it, not an identifier
    inside it) by this pipeline, model version and weights, with these parameters: a
    re-send of the identical input is the same report, any other byte (a file cut
    short that keeps its SOP Instance UID) or parameter is another report."""
    key = json.dumps(
        [pipeline, content_sha256, model.name, model.version, model.sha256, dict(params or {})],
        sort_keys=True,
        default=str,
    )
    return str(uuid.uuid5(_REPORT_NAMESPACE, key))


OnSave = Callable[[Report, int | None], None]


class ReportStore:
    """Reports and their evidence files on disk: var/reports/<id>/. `on_save` is told
    of each report saved, with its request's priority (the worklist's index);
    `on_new` of each report saved the first time under its id (the metrics' count)."""

    def __init__(
        self,
        root: Path,
        on_save: OnSave | None = None,
        on_new: Callable[[Report], None] | None = None,
    ) -> None:
        self.root = root
        make_folders(root)
        self.on_save = on_save
        self.on_new = on_new

    def _dir(self, rid: str) -> Path:
        try:
            return self.root / str(uuid.UUID(rid))  # also refuses path tricks
        except ValueError:
            raise NotFound(f"no report {rid!r}", code="report_not_found") from None

    def save(self, report: Report, files: dict[str, bytes], *, priority: int | None = None) -> None:
        """Save `report` and its files. A report already saved under its id (the same
        input analysed the same way, sent again) keeps its first `created_at`; `report`
        takes it too, so the caller answers what is stored."""
        first = self._created_at(report.id)
        if first is not None:
            report.created_at = first
        elif self.on_new is not None:
            self.on_new(report)
        self.save_evidence(report.id, files)
        self.put(report.id, "report.json", report.model_dump_json(indent=2).encode())
        if self.on_save is not None:
            self.on_save(report, priority)

    def _created_at(self, rid: str) -> datetime | None:
        try:
            stored = json.loads((self._dir(rid) / "report.json").read_bytes())
            return datetime.fromisoformat(stored["created_at"])
        except (FileNotFoundError, KeyError, TypeError, ValueError):
            return None

    def save_evidence(self, rid: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self.put(rid, name, data)

    def put(self, rid: str, name: str, data: bytes) -> None:
        """Write one evidence file of report `rid` atomically (readers never see half)."""
        atomic_write(self._dir(rid) / name, data)

    def rename(self, rid: str, name: str, to: str) -> None:
        """Put evidence file `name` in place as `to`, atomically (replacing any)."""
        os.replace(self._dir(rid) / name, self._dir(rid) / to)

    def discard(self, rid: str, name: str) -> None:
        (self._dir(rid) / name).unlink(missing_ok=True)

    def load(self, rid: str) -> Report:
        path = self._dir(rid) / "report.json"
        if not path.is_file():
            raise NotFound(f"no report {rid!r}", code="report_not_found")
        return Report.model_validate(json.loads(path.read_text()))

    def file(self, rid: str, name: str) -> Path:
        path = self._dir(rid) / name
        if not path.is_file():
            raise NotFound(f"report {rid!r} has no {name}", code="evidence_not_found")
        return path

    def every(self) -> Iterator[Report]:
        """Every saved report (for rebuilding an index), in no particular order."""
        for path in self.root.glob("*/report.json"):
            yield Report.model_validate(json.loads(path.read_text()))
