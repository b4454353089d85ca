"""Chest X-ray pipeline, wired in one place: decode -> preprocess -> screening
(content checks and the model's OOD gate) -> batcher -> findings + overlay inputs ->
Report. Each step is a pure function tested on its own. An input the screening
stops never reaches the model: its findings are not assessed. The overlay itself is
rendered on first use (pipelines/cxr/evidence.py)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aidx.inference.assessment import OodPolicy
from aidx.inference.batcher import BatchResult
from aidx.inference.cpu_stage import CpuStage
from aidx.inference.dicom_input import DEFAULT_IMAGE_LIMITS
from aidx.inference.drift import Value
from aidx.inference.errors import DeadlineExceeded
from aidx.inference.model_card import CxrSection, Pipeline, missing_section
from aidx.inference.ood import gate_for
from aidx.inference.reports import (
    DEMO_DISCLAIMER,
    Coding,
    Evidence,
    Finding,
    Report,
    ReportStore,
    Timings,
    report_id,
)
from aidx.inference.serving import ModelService, ServedModel
from aidx.inference.settings_sections import ImageLimits
from aidx.pipelines.cxr.decode import Radiograph, decode_radiograph
from aidx.pipelines.cxr.drift import input_summary
from aidx.pipelines.cxr.evidence import (
    OVERLAY_FILE,
    OverlayInputs,
    overlay_png,
    save_overlay_inputs,
)
from aidx.pipelines.cxr.full_image import save_full_image
from aidx.pipelines.cxr.postprocess import findings, sigmoid
from aidx.pipelines.cxr.preprocess import CropGeometry, to_model_input
from aidx.pipelines.cxr.screening import Assessment, Screen, screen

PIPELINE = "cxr"
PNEUMONIA_SCT = "233604007"  # the overlay shows this finding's map when the model has it


@dataclass(frozen=True)
class Prepared:
    radiograph: Radiograph
    tensor: np.ndarray
    geometry: CropGeometry
    assessment: Assessment
    decode_ms: float
    preprocess_ms: float  # with the screening
    content_sha256: str
    observed: dict[str, Value]  # for drift monitoring: the header's acquisition, the input's

    @property
    def work_s(self) -> float:
        return (self.decode_ms + self.preprocess_ms) / 1e3


def prepare(data: bytes, model: Screen, limits: ImageLimits = DEFAULT_IMAGE_LIMITS) -> Prepared:
    t0 = time.perf_counter()
    radiograph = decode_radiograph(data, limits)
    t1 = time.perf_counter()
    tensor, geometry = to_model_input(radiograph.image01)
    assessment = screen(radiograph, tensor, model)
    t2 = time.perf_counter()
    digest = hashlib.sha256(data).hexdigest()
    observed = {**radiograph.acquisition, **input_summary(tensor)}
    decode_ms, preprocess_ms = (t1 - t0) * 1e3, (t2 - t1) * 1e3
    return Prepared(
        radiograph, tensor, geometry, assessment, decode_ms, preprocess_ms, digest, observed
    )


def cxr_section(served: ServedModel) -> CxrSection:
    card = served.entry.card
    if card is None or card.cxr is None:
        raise missing_section(served.name, Pipeline.cxr)
    return card.cxr


def remaining_s(started: float, timeout_s: float | None) -> float | None:
    """What is left of the request's deadline for the model (decode took its share)."""
    if timeout_s is None:
        return None
    left = timeout_s - (time.perf_counter() - started)
    if left <= 0:
        raise DeadlineExceeded("the deadline passed while the image was being decoded")
    return left


def scored_findings(
    cxr: CxrSection, prepared: Prepared, outputs: dict[str, np.ndarray]
) -> tuple[list[Finding], OverlayInputs]:
    """The model's outputs as findings, and the overlay's inputs (the map of the
    Pneumonia label when the model has it, else of the first)."""
    scores = outputs[cxr.scores_output][0]
    # a model that applies its own sigmoid gives probabilities, the others logits
    probabilities = scores if cxr.scores_are_probabilities else sigmoid(scores.astype(np.float64))
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
    return found, inputs


def not_assessed_findings(
    cxr: CxrSection, prepared: Prepared
) -> tuple[list[Finding], OverlayInputs]:
    """Every label not assessed, for the screening's reason; the overlay is the
    radiograph alone (no map, no regions: no heat claims)."""
    why = prepared.assessment.not_assessed
    if why is None:
        raise ValueError("the screening passed: the findings are the model's")
    found = [
        Finding.not_assessed(
            Coding(scheme=label.scheme, code=label.code, meaning=label.meaning),
            label.threshold,
            why,
        )
        for label in cxr.labels
    ]
    inputs = OverlayInputs.from_analysis(
        prepared.radiograph.image01, None, None, prepared.geometry, []
    )
    return found, inputs


def timings(
    prepared: Prepared, result: BatchResult | None, post_s: float, waited_s: float, started: float
) -> Timings:
    """The request's timings; queue and compute are 0 (batch 0) when no model ran."""
    return Timings(
        decode_ms=round(prepared.decode_ms, 2),
        preprocess_ms=round(prepared.preprocess_ms, 2),
        queue_ms=round(result.queue_s * 1e3, 2) if result else 0.0,
        compute_ms=round(result.compute_s * 1e3, 2) if result else 0.0,
        postprocess_ms=round(post_s * 1e3, 2),
        cpu_wait_ms=round(waited_s * 1e3, 2),
        total_ms=round((time.perf_counter() - started) * 1e3, 2),
        batch_size=result.batch_size if result else 0,
    )


class CxrPipeline:
    """The CXR pipeline: one DICOM instance (bytes) in, a Report out."""

    name = PIPELINE

    def __init__(
        self,
        models: ModelService,
        store: ReportStore,
        cpu: CpuStage,
        ood_policy: OodPolicy = OodPolicy.not_assessed,
        image_limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
    ) -> None:
        self.models = models
        self.store = store
        self.cpu = cpu
        self.ood_policy = ood_policy  # the site's: out of distribution -> not assessed or warn
        self.image_limits = image_limits  # checked on the header, before decoding
        self._rendering: dict[str, asyncio.Future[Path]] = {}  # report id -> render in flight

    def _screen(self, served: ServedModel) -> Screen:
        cxr = cxr_section(served)
        gate = gate_for(served.entry.directory, served.entry.card) if served.entry.card else None
        return Screen(gate, cxr.views, self.ood_policy)

    async def analyze(
        self, data: bytes, *, priority: int | None = None, timeout_s: float | None = None
    ) -> Report:
        started = time.perf_counter()
        served = self.models.for_pipeline(PIPELINE)
        prepared = await self.cpu.run(
            prepare, data, self._screen(served), self.image_limits, priority=priority
        )
        waited_s = time.perf_counter() - started - prepared.work_s
        result = None
        if prepared.assessment.not_assessed is None:  # else the model has nothing to judge
            result = await self.models.infer(
                served.name,
                {"image": prepared.tensor[None]},
                priority=priority,
                timeout_s=remaining_s(started, timeout_s),
            )
        t0 = time.perf_counter()
        outputs = result.outputs if result is not None else None
        report, post_s = await self.cpu.run(
            self._postprocess, served, prepared, outputs, priority=priority
        )
        waited_s += time.perf_counter() - t0 - post_s
        report.timings = timings(prepared, result, post_s, waited_s, started)
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
        self, served: ServedModel, prepared: Prepared, outputs: dict[str, np.ndarray] | None
    ) -> tuple[Report, float]:
        """Findings, and the overlay's inputs saved beside the report, timed."""
        t0 = time.perf_counter()
        report, inputs = self._report(served, prepared, outputs)
        save_overlay_inputs(self.store, report.id, inputs)
        if prepared.radiograph.full is not None:
            save_full_image(self.store, report.id, prepared.radiograph.full)
        return report, time.perf_counter() - t0

    def _report(
        self, served: ServedModel, prepared: Prepared, outputs: dict[str, np.ndarray] | None
    ) -> tuple[Report, OverlayInputs]:
        cxr = cxr_section(served)
        if outputs is None:
            found, inputs = not_assessed_findings(cxr, prepared)
        else:
            found, inputs = scored_findings(cxr, prepared, outputs)
        ref = served.ref
        source = prepared.radiograph.source
        params = {"ood_policy": self.ood_policy.value}  # it decides what is assessed
        rid = report_id(PIPELINE, prepared.content_sha256, ref, params)
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
            warnings=list(prepared.assessment.warnings),
            disclaimer=DEMO_DISCLAIMER if ref.demo_weights else None,
            ood=prepared.assessment.ood,
            not_assessed=prepared.assessment.not_assessed,
        )
        report.observe_inputs(prepared.observed)
        return report, inputs
