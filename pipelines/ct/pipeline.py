"""Chest CT pipeline, wired in one place: series assembly (BodyPartExamined checked)
-> MONAI preprocessing -> lungs (too little aerated lung: the finding is not
assessed and the model does not run) -> the out-of-distribution gate on the model
grid (out: not assessed, or scored under a warning where the site says `warn`) ->
sliding-window inference through the batcher -> lesions -> label map and key-slice
overlays -> CtReport. Each step is a function tested on its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aidx.inference.assessment import NotAssessed, OodPolicy
from aidx.inference.cpu_stage import CpuStage
from aidx.inference.dicom_input import DEFAULT_IMAGE_LIMITS
from aidx.inference.errors import DeadlineExceeded
from aidx.inference.model_card import Label, Pipeline, missing_section
from aidx.inference.ood import gate_for
from aidx.inference.reports import (
    DEMO_DISCLAIMER,
    Coding,
    Evidence,
    Finding,
    ModelRef,
    ReportStore,
    Timings,
    report_id,
)
from aidx.inference.serving import ModelService, ServedModel
from aidx.inference.settings_sections import ImageLimits
from aidx.pipelines.ct import content, drift, evidence, postprocess, slices
from aidx.pipelines.ct.inference import WindowConfig, probability_map
from aidx.pipelines.ct.preprocess import ModelGrid, to_model_grid
from aidx.pipelines.ct.report import (
    BoxLps,
    BoxVoxel,
    CtReport,
    LabelMapRef,
    Lesion,
    LungInvolvement,
)
from aidx.pipelines.ct.series import CtVolume, assemble_bytes, upload_sha256

PIPELINE = "ct"
LABEL_MAP_FILE = "labelmap.npz"
EVIDENCE_PREFIX = "/v1/ct/reports"  # the full CtReport and its files (inference/routes/ct.py)
MAX_KEY_SLICES = 3


@dataclass
class InferenceStats:
    queue_s: float = 0.0
    compute_s: float = 0.0
    requests: int = 0
    max_batch: int = 0
    wall_s: float = 0.0


@dataclass
class Analysis:
    """Everything the report is made of, in the pipeline's own types."""

    volume: CtVolume
    grid: ModelGrid
    probability: np.ndarray
    lungs: postprocess.Lungs  # found before inference: no lungs, no lesion statement
    timings_ms: dict[str, float] = field(default_factory=dict)


def timings(
    stats: InferenceStats, decode_ms: float, preprocess_ms: float, post_t0: float, started: float
) -> Timings:
    """Postprocess from `post_t0`, total from `started` (perf_counter), both until now."""
    now = time.perf_counter()
    return Timings(
        decode_ms=round(decode_ms, 2),
        preprocess_ms=round(preprocess_ms, 2),
        queue_ms=round(stats.queue_s * 1e3, 2),
        compute_ms=round(stats.compute_s * 1e3, 2),
        postprocess_ms=round((now - post_t0) * 1e3, 2),
        total_ms=round((now - started) * 1e3, 2),
        batch_size=stats.max_batch,
    )


def window_config(served: ServedModel) -> tuple[WindowConfig, float]:
    """The sliding window and the minimum lesion volume, from the card's `ct` section
    (read from config.pbtxt `parameters` and input dims when the model was loaded)."""
    card = served.entry.card
    if card is None or card.ct is None:
        raise missing_section(served.name, Pipeline.ct)
    ct = card.ct
    window = WindowConfig(
        roi_voxels=ct.roi_voxels,
        overlap=ct.overlap,
        sw_batch_size=ct.sw_batch_size,
        spacing_mm=ct.spacing_mm,
    )
    return window, ct.min_lesion_ml


def min_lung_ml(served: ServedModel) -> float:
    """The card's minimum aerated lung volume for a finding to be assessed."""
    card = served.entry.card
    if card is None or card.ct is None:
        raise missing_section(served.name, Pipeline.ct)
    return card.ct.min_lung_ml


def decode(
    blobs: Sequence[bytes], limits: ImageLimits = DEFAULT_IMAGE_LIMITS
) -> tuple[CtVolume, float, str]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:  # hashing releases the GIL: beside the parse
        digest = pool.submit(upload_sha256, blobs)
        volume = assemble_bytes(blobs, limits=limits)
    return volume, (time.perf_counter() - t0) * 1e3, digest.result()


def preprocess(volume: CtVolume, spacing_mm: float) -> tuple[ModelGrid, float]:
    t0 = time.perf_counter()
    grid = to_model_grid(volume.hu, volume.affine_lps, spacing_mm)
    return grid, (time.perf_counter() - t0) * 1e3


def find_lungs(grid: ModelGrid) -> tuple[postprocess.Lungs, float]:
    t0 = time.perf_counter()
    lungs = postprocess.lung_mask(grid.hu, grid.voxel_ml)
    return lungs, (time.perf_counter() - t0) * 1e3


def lps_box(
    volume: CtVolume, grid: ModelGrid, m: postprocess.LesionMeasure
) -> tuple[BoxLps, BoxVoxel]:
    lo, hi = np.asarray(m.bbox_xyz[0]) - 0.5, np.asarray(m.bbox_xyz[1]) + 0.5
    corners = np.array([[a[0], b[1], c[2]] for a in (lo, hi) for b in (lo, hi) for c in (lo, hi)])
    lps = grid.to_lps(corners)
    to_ijk = np.linalg.inv(volume.affine_lps)
    ijk = lps @ to_ijk[:3, :3].T + to_ijk[:3, 3]
    top = np.array(volume.shape[::-1]) - 1
    ijk_lo = np.clip(np.ceil(ijk.min(axis=0) - 0.5), 0, top).astype(int)
    ijk_hi = np.clip(np.floor(ijk.max(axis=0) + 0.5), 0, top).astype(int)
    box = BoxLps(min_mm=_r(lps.min(axis=0)), max_mm=_r(lps.max(axis=0)))
    return box, BoxVoxel(min_ijk=ijk_lo.tolist(), max_ijk=ijk_hi.tolist())


def _r(values: Any, digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in values]


def lesion_entries(
    volume: CtVolume, grid: ModelGrid, measures: list[postprocess.LesionMeasure]
) -> list[Lesion]:
    to_ijk = np.linalg.inv(volume.affine_lps)
    out = []
    for m in measures:
        centroid = grid.to_lps(np.asarray(m.centroid_xyz))[0]
        k = int(np.clip(round(float((to_ijk[:3, :3] @ centroid + to_ijk[:3, 3])[2])), 0,
                        volume.shape[0] - 1))  # fmt: skip
        box, voxels = lps_box(volume, grid, m)
        out.append(
            Lesion(
                number=m.label,
                volume_ml=round(m.volume_ml, 3),
                side=m.side,
                zone=m.zone,
                centroid_lps_mm=_r(centroid),
                bbox_lps=box,
                bbox_voxel=voxels,
                mean_hu=round(m.mean_hu, 1),
                max_probability=round(m.max_probability, 4),
                key_slice_k=k,
                key_slice_sop_instance_uid=volume.sop_instance_uids[k],
            )
        )
    return out


def model_ref(served: ServedModel) -> ModelRef:
    card = served.entry.card
    return ModelRef(
        name=served.name,
        version=served.entry.version,
        sha256=served.entry.sha256,
        demo_weights=bool(card and card.demo_weights),
    )


def report_files(
    volume: CtVolume, labels_kji: np.ndarray, lesions: list[Lesion], rid: str
) -> tuple[list[Evidence], dict[str, bytes]]:
    """The label map (first), the largest lesions' key-slice overlays and the slice view's
    labels (HU apart: `slices.save_hu`), by file name. Sets the overlay_urls."""
    files: dict[str, bytes] = {}
    evidences = [Evidence(kind="label_map", media_type="application/x-npz",
                          url=f"{EVIDENCE_PREFIX}/{rid}/{LABEL_MAP_FILE}")]  # fmt: skip
    segments = [{"label": x.number, "description": f"lesion {x.number}, {x.side} {x.zone}"}
                for x in lesions]  # fmt: skip
    with ThreadPoolExecutor(1) as pool:  # deflate releases the GIL: beside the overlays
        npz = pool.submit(evidence.label_map_npz, labels_kji, volume, segments)
        for x in lesions[:MAX_KEY_SLICES]:
            name = f"keyslice_{x.number}.png"
            files[name] = evidence.key_slice_png(volume, labels_kji, x.key_slice_k, x.number)
            x.overlay_url = f"{EVIDENCE_PREFIX}/{rid}/{name}"
            evidences.append(Evidence(kind="overlay", media_type="image/png", url=x.overlay_url))
        labels = slices.labels_npy(labels_kji)  # the workspace's slice view
        files[LABEL_MAP_FILE] = npz.result()
    files[slices.LABELS_FILE] = labels
    return evidences, files


def lung_involvement(
    labels_xyz: np.ndarray, lungs: postprocess.Lungs, voxel_ml: float
) -> list[LungInvolvement]:
    """Per side: the lung's volume and how much of it the lesions take."""
    return [
        LungInvolvement(
            side=side,
            lung_volume_ml=round(part.lung_ml, 1),
            involved_ml=round(part.involved_ml, 3),
            involvement_percent=round(part.percent, 2),
        )
        for side, part in postprocess.involvement(labels_xyz, lungs, voxel_ml).items()
    ]


def peak_finding(
    label: Label, probability: np.ndarray, lungs: postprocess.Lungs, present: bool
) -> Finding:
    """The finding's probability: the highest voxel probability inside the lungs."""
    in_lung = probability[lungs.region]
    peak = float(in_lung.max()) if in_lung.size else 0.0
    return Finding(
        concept=Coding(scheme=label.scheme, code=label.code, meaning=label.meaning),
        probability=round(peak, 4),
        threshold=label.threshold,
        present=present,
    )


def build_report(
    served: ServedModel, analysis: Analysis, min_lesion_ml: float, content_sha256: str
) -> tuple[CtReport, dict[str, bytes]]:
    """Lungs, lesions, label map and overlays -> (report, evidence files)."""
    card = served.entry.card
    assert card is not None and card.labels  # a model without a card never reaches ready
    label = card.labels[0]
    volume, grid, probability = analysis.volume, analysis.grid, analysis.probability
    lungs = analysis.lungs
    labels_xyz, measures = postprocess.lesions(
        grid, probability, lungs, threshold=label.threshold, min_volume_ml=min_lesion_ml
    )
    warnings = list(volume.warnings)
    if len(measures) > evidence.MAX_LABELS:
        warnings.append(f"{len(measures)} lesions; the label map holds the largest 255")
    ref = model_ref(served)
    rid = report_id(PIPELINE, content_sha256, ref)  # min_lesion_ml is the card's (model)
    lesions = lesion_entries(volume, grid, measures)
    labels_kji = evidence.label_map_on_series(labels_xyz, volume, grid)
    evidences, files = report_files(volume, labels_kji, lesions, rid)
    report = CtReport(
        id=rid,
        pipeline=PIPELINE,
        source=volume.source,
        model=ref,
        findings=[peak_finding(label, probability, lungs, present=bool(lesions))],
        evidence=evidences,
        timings=Timings(),
        warnings=warnings,
        disclaimer=DEMO_DISCLAIMER if ref.demo_weights else None,
        lesions=lesions,
        lungs=lung_involvement(labels_xyz, lungs, grid.voxel_ml),
        label_map=LabelMapRef(url=evidences[0].url, shape_kji=list(volume.shape)),
        slices=volume.shape[0],
        spacing_mm=_r(volume.spacing_mm, 4),
    )
    return report, files


def not_assessed_report(
    served: ServedModel,
    volume: CtVolume,
    grid: ModelGrid,
    lungs: postprocess.Lungs,
    why: NotAssessed,
    content_sha256: str,
) -> tuple[CtReport, dict[str, bytes]]:
    """The report of a series the model cannot judge (too little lung, out of
    distribution): the finding not assessed, no lesions, each lung's measured volume
    with its involvement not assessed, and an empty label map (the write-back reads
    one for every CT report); its HU are saved apart (`slices.save_hu`)."""
    card = served.entry.card
    assert card is not None and card.labels  # a model without a card never reaches ready
    label = card.labels[0]
    ref = model_ref(served)
    rid = report_id(PIPELINE, content_sha256, ref)
    url = f"{EVIDENCE_PREFIX}/{rid}/{LABEL_MAP_FILE}"
    empty = np.zeros(volume.shape, dtype=np.uint8)
    concept = Coding(scheme=label.scheme, code=label.code, meaning=label.meaning)
    lung_rows = [
        LungInvolvement(
            side=side,
            lung_volume_ml=round(lungs.volume_ml(side, grid.voxel_ml), 1),
            involved_ml=None,
            involvement_percent=None,
            assessed=False,
        )
        for side in postprocess.SIDE_CODES
    ]
    report = CtReport(
        id=rid,
        pipeline=PIPELINE,
        source=volume.source,
        model=ref,
        findings=[Finding.not_assessed(concept, label.threshold, why)],
        evidence=[Evidence(kind="label_map", media_type="application/x-npz", url=url)],
        timings=Timings(),
        warnings=[*volume.warnings, why.message],
        disclaimer=DEMO_DISCLAIMER if ref.demo_weights else None,
        not_assessed=why,
        lungs=lung_rows,
        label_map=LabelMapRef(url=url, shape_kji=list(volume.shape)),
        slices=volume.shape[0],
        spacing_mm=_r(volume.spacing_mm, 4),
    )
    files = {LABEL_MAP_FILE: evidence.label_map_npz(empty, volume, [])}
    return report, {**files, slices.LABELS_FILE: slices.labels_npy(empty)}


class CtPipeline:
    """The CT pipeline: one series (a sequence of DICOM instances) in, a CtReport out."""

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
        self.image_limits = image_limits  # checked on the headers, before decoding
        self.ood_policy = ood_policy  # the site's: out of distribution -> not assessed or warn

    async def _screen(
        self, served: ServedModel, grid: ModelGrid, lungs: postprocess.Lungs, priority: int | None
    ) -> tuple[content.Screening, float]:
        """The lungs check and the OOD gate on the model grid, on the CPU stage, timed."""
        t0 = time.perf_counter()
        card = served.entry.card
        gate = gate_for(served.entry.directory, card) if card is not None else None
        found = await self.cpu.run(
            content.screen, grid.image, lungs.total_ml(grid.voxel_ml), min_lung_ml(served),
            gate, self.ood_policy, priority=priority,
        )  # fmt: skip
        return found, (time.perf_counter() - t0) * 1e3

    async def analyze(
        self,
        blobs: Sequence[bytes],
        *,
        priority: int | None = None,
        timeout_s: float | None = None,
    ) -> CtReport:
        started = time.perf_counter()
        served = self.models.for_pipeline(PIPELINE)
        window, min_lesion_ml = window_config(served)
        volume, decode_ms, digest = await self.cpu.run(
            decode, blobs, self.image_limits, priority=priority
        )
        rid = report_id(PIPELINE, digest, model_ref(served))
        async with slices.hu_written(self.store, rid, volume):  # while the model runs
            grid, preprocess_ms = await self.cpu.run(
                preprocess, volume, window.spacing_mm, priority=priority
            )
            lungs, lungs_ms = await self.cpu.run(find_lungs, grid, priority=priority)
            observed = await self.cpu.run(drift.observed, blobs[0], volume, grid, priority=priority)
            screening, screen_ms = await self._screen(served, grid, lungs, priority)
            stats = InferenceStats()
            if screening.not_assessed is None:
                predict = self._predictor(served, stats, started, timeout_s, priority)
                t0 = time.perf_counter()
                probability = await asyncio.to_thread(probability_map, grid.image, predict, window)
                stats.wall_s = time.perf_counter() - t0
                analysis = Analysis(volume, grid, probability, lungs)
                t1 = time.perf_counter()
                report, files = await self.cpu.run(
                    build_report, served, analysis, min_lesion_ml, digest, priority=priority
                )
            else:  # no lungs or out of distribution: the model does not run
                t1 = time.perf_counter()
                report, files = await self.cpu.run(
                    not_assessed_report, served, volume, grid, lungs, screening.not_assessed,
                    digest, priority=priority,
                )  # fmt: skip
            report.ood = screening.ood
            report.observe_inputs(observed)  # for drift monitoring, with what the model said
            report.warnings[:0] = screening.warnings  # the gate's word first
            pre_ms = preprocess_ms + lungs_ms + screen_ms
            report.timings = timings(stats, decode_ms, pre_ms, t1, started)
            report.inference_ms = round(stats.wall_s * 1e3, 2)
        await asyncio.to_thread(self.store.save_evidence, report.id, files)
        return report  # the report itself is saved by the analysis step

    def _predictor(
        self,
        served: ServedModel,
        stats: InferenceStats,
        started: float,
        timeout_s: float | None,
        priority: int | None,
    ) -> Any:
        """A blocking predictor for MONAI (it runs in a worker thread) that sends each
        window batch through the model's dynamic batcher on the event loop."""
        loop = asyncio.get_running_loop()

        def predict(batch: np.ndarray) -> np.ndarray:
            left = None
            if timeout_s is not None:
                left = timeout_s - (time.perf_counter() - started)
                if left <= 0:
                    raise DeadlineExceeded("the deadline passed during sliding-window inference")
            call = self.models.infer(
                served.name, {"image": batch}, priority=priority, timeout_s=left
            )
            result = asyncio.run_coroutine_threadsafe(call, loop).result()
            stats.queue_s += result.queue_s
            stats.compute_s += result.compute_s
            stats.requests += 1
            stats.max_batch = max(stats.max_batch, result.batch_size)
            return result.outputs["logits"]

        return predict
