"""Chest X-ray pipeline, wired in one place: decode -> preprocess -> batcher ->
findings + overlay inputs -> Report. Each step is a pure function tested on its own.
The overlay itself is rendered on first use (pipelines/cxr/evidence.py)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aidx.inference.cpu_stage import CpuStage
from aidx.inference.errors import DeadlineExceeded
from aidx.inference.model_card import Pipeline, missing_section
from aidx.inference.reports import (
    DEMO_DISCLAIMER,
    Evidence,
    Report,
    ReportStore,
    Timings,
    report_id,
)
from aidx.inference.serving import ModelService, ServedModel
from aidx.pipelines.cxr.decode import Radiograph, decode_radiograph
from aidx.pipelines.cxr.evidence import (
    OVERLAY_FILE,
    OverlayInputs,
    overlay_png,
    save_overlay_inputs,
)
from aidx.pipelines.cxr.postprocess import findings, sigmoid
from aidx.pipelines.cxr.preprocess import CropGeometry, to_model_input

PIPELINE = "cxr"
PNEUMONIA_SCT = "233604007"  # the overlay shows this finding's map when the model has it


@dataclass(frozen=True)
class Prepared:
    radiograph: Radiograph
    tensor: np.ndarray
    geometry: CropGeometry
    decode_ms: float
    preprocess_ms: float
    content_sha256: str

    @property
    def work_s(self) -> float:
        return (self.decode_ms + self.preprocess_ms) / 1e3


def prepare(data: bytes) -> Prepared:
    t0 = time.perf_counter()
    radiograph = decode_radiograph(data)
    t1 = time.perf_counter()
    tensor, geometry = to_model_input(radiograph.image01)
    t2 = time.perf_counter()
    digest = hashlib.sha256(data).hexdigest()
    return Prepared(radiograph, tensor, geometry, (t1 - t0) * 1e3, (t2 - t1) * 1e3, digest)


def remaining_s(started: float, timeout_s: float | None) -> float | None:
    """What is left of the request's deadline for the model (decode took its share)."""
    if timeout_s is None:
        return None
    left = timeout_s - (time.perf_counter() - started)
    if left <= 0:
        raise DeadlineExceeded("the deadline passed while the image was being decoded")
    return left


class CxrPipeline:
    """The CXR pipeline: one DICOM instance (bytes) in, a Report out."""

    name = PIPELINE

    def __init__(self, models: ModelService, store: ReportStore, cpu: CpuStage) -> None:
        self.models = models
        self.store = store
        self.cpu = cpu
        self._rendering: dict[str, asyncio.Future[Path]] = {}  # report id -> render in flight

    async def analyze(
        self, data: bytes, *, priority: int | None = None, timeout_s: float | None = None
    ) -> Report:
        started = time.perf_counter()
        served = self.models.for_pipeline(PIPELINE)
        prepared = await self.cpu.run(prepare, data, priority=priority)
        waited_s = time.perf_counter() - started - prepared.work_s
        result = await self.models.infer(
            served.name,
            {"image": prepared.tensor[None]},
            priority=priority,
            timeout_s=remaining_s(started, timeout_s),
        )
        t0 = time.perf_counter()
        report, post_s = await self.cpu.run(
            self._postprocess, served, prepared, result.outputs, priority=priority
        )
        waited_s += time.perf_counter() - t0 - post_s
        report.timings = Timings(
            decode_ms=round(prepared.decode_ms, 2),
            preprocess_ms=round(prepared.preprocess_ms, 2),
            queue_ms=round(result.queue_s * 1e3, 2),
            compute_ms=round(result.compute_s * 1e3, 2),
            postprocess_ms=round(post_s * 1e3, 2),
            cpu_wait_ms=round(waited_s * 1e3, 2),
            total_ms=round((time.perf_counter() - started) * 1e3, 2),
            batch_size=result.batch_size,
        )
        return report  # its overlay inputs are saved; the report is the analysis step's

    async def overlay_file(self, rid: str) -> Path:
        """Report `rid`'s overlay PNG, rendered on the CPU stage on first use (routine
        priority: a STAT analysis goes first); concurrent first requests for one report
        share a single rendering."""
        pending = self._rendering.get(rid)
        if pending is None:
            pending = asyncio.ensure_future(self.cpu.run(overlay_png, self.store, rid))
            self._rendering[rid] = pending
            pending.add_done_callback(lambda done: self._rendered(rid, done))
        # shield: a client that gives up must not cancel the others' rendering
        return await asyncio.shield(pending)

    def _rendered(self, rid: str, done: asyncio.Future[Path]) -> None:
        self._rendering.pop(rid, None)
        if not done.cancelled():
            done.exception()  # retrieved: nobody may be left waiting for it

    def _postprocess(
        self, served: ServedModel, prepared: Prepared, outputs: dict[str, np.ndarray]
    ) -> tuple[Report, float]:
        """Findings, and the overlay's inputs saved beside the report, timed."""
        t0 = time.perf_counter()
        report, inputs = self._report(served, prepared, outputs)
        save_overlay_inputs(self.store, report.id, inputs)
        return report, time.perf_counter() - t0

    def _report(
        self, served: ServedModel, prepared: Prepared, outputs: dict[str, np.ndarray]
    ) -> tuple[Report, OverlayInputs]:
        card = served.entry.card
        if card is None or card.cxr is None:
            raise missing_section(served.name, Pipeline.cxr)
        cxr = card.cxr
        scores = outputs[cxr.scores_output][0]
        # a model that applies its own sigmoid gives probabilities, the others logits
        probabilities = (
            scores if cxr.scores_are_probabilities else sigmoid(scores.astype(np.float64))
        )
        # A drop-in model without an activation map (e.g. torchxrayvision) has no regions.
        cam = outputs[cxr.cam_output][0] if cxr.cam_output is not None else None
        found = findings(probabilities, cam, cxr.labels, prepared.geometry)
        index = next((i for i, f in enumerate(found) if f.concept.code == PNEUMONIA_SCT), 0)
        inputs = OverlayInputs.from_analysis(
            prepared.radiograph.image01,
            None if cam is None else cam[index],
            found[index].probability,
            prepared.geometry,
            found[index].regions,
        )
        ref = served.ref
        source = prepared.radiograph.source
        rid = report_id(PIPELINE, source.sop_instance_uid or prepared.content_sha256, ref)
        report = Report(
            id=rid,
            pipeline=PIPELINE,
            source=source,
            model=ref,
            findings=found,
            evidence=[
                Evidence(
                    kind="overlay",
                    media_type="image/png",
                    url=f"/v1/reports/{rid}/{OVERLAY_FILE}",
                )
            ],
            timings=Timings(),
            warnings=prepared.radiograph.warnings,
            disclaimer=DEMO_DISCLAIMER if ref.demo_weights else None,
        )
        return report, inputs
