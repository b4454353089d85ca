"""The whole-slide analysis, wired in one place:

    describe -> low-resolution view + tissue mask -> tile plan -> tiles streamed
    (bounded reader pool -> dynamic batcher) into a heatmap -> regions -> Report,
    GeoJSON and heatmap PNG.

A slide without tissue (none found, less than `min_tissue_mm2`, or no tile with
`min_tissue_fraction` of it) is not scored: its finding is *not assessed*
(`no_tissue`), never "absent". Each tissue tile also goes through the tile model's
out-of-distribution gate (gate.py): out-of-distribution tiles are left out of the
regions, too many of them and the slide is not assessed (`out_of_distribution`), or
under the site's `warn` policy all are scored with a warning; every report carries
the verdict (`uncalibrated` for a model without a reference).

Memory stays flat whatever the slide's size: tile positions come from a generator,
at most `inflight_chunks` chunks of tiles exist at a time, and what grows with the
slide is only the heatmap (one float per tile).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from aidx.inference.assessment import NotAssessed, NotAssessedReason, OodPolicy
from aidx.inference.errors import AidxError, DeadlineExceeded, QueueFull
from aidx.inference.model_card import Pipeline, missing_section
from aidx.inference.ood import OodGate, gate_for
from aidx.inference.reports import (
    DEMO_DISCLAIMER,
    Coding,
    Evidence,
    Finding,
    Region,
    Report,
    SourceRef,
    Timings,
    report_id,
)
from aidx.inference.serving import ModelService, ServedModel
from aidx.pipelines.wsi import regions as regions_mod
from aidx.pipelines.wsi.gate import SlideGate, judge_slide, tile_scores
from aidx.pipelines.wsi.regions import SuspiciousRegion
from aidx.pipelines.wsi.slide import SlideInfo, SlideReader, mpp_mismatch_message
from aidx.pipelines.wsi.tiling import TilePlan, plan_tiles, tissue_fractions, tissue_tiles
from aidx.pipelines.wsi.tissue import LowRes, read_low_res

PIPELINE = "wsi"
HEATMAP_FILE = "overlay.png"  # also what GET /v1/reports/{id}/overlay.png serves
GEOJSON_FILE = "regions.geojson"
ROUTINE = 2  # batcher priority: slides are background work next to STAT requests
MAX_RETRIES = 20

MIN_TISSUE_MM2 = 0.05  # less tissue than this (about 3 tiles at 0.5 um/px): not assessed

ProgressFn = Callable[[int, int], None]  # (tiles done, tiles total)


@dataclass(frozen=True)
class AnalysisParams:
    max_regions: int = 10
    min_tissue_fraction: float = 0.25
    min_tissue_mm2: float = MIN_TISSUE_MM2
    min_region_tiles: int = 2
    readers: int = 0  # 0: half the CPU cores, at least 1
    chunk_tiles: int = 16  # tiles per read and per batcher request
    inflight_chunks: int = 0  # 0: enough to keep readers and model busy
    timeout_s: float = 120.0  # per chunk, in the batcher
    ood_policy: OodPolicy = OodPolicy.not_assessed  # the site's (AIDX_OOD_POLICY)

    def reader_count(self) -> int:
        return self.readers or max(1, (os.cpu_count() or 2) // 2)

    def result_params(self) -> dict[str, float]:
        """The parameters that change the result (not how fast it comes): a report id's."""
        return {
            "max_regions": self.max_regions,
            "min_tissue_fraction": self.min_tissue_fraction,
            "min_tissue_mm2": self.min_tissue_mm2,
            "min_region_tiles": self.min_region_tiles,
        }


@dataclass(frozen=True)
class TileModel:
    """What the pipeline needs to know of the served tile model."""

    served: ServedModel
    input_name: str
    output_name: str
    tile_px: int
    mpp: float
    label_index: int
    coding: Coding
    threshold: float
    max_batch: int
    gate: OodGate | None = None  # the out-of-distribution gate (None: uncalibrated)

    @property
    def name(self) -> str:
        return self.served.name


def tile_model(models: ModelService) -> TileModel:
    """The served tile model, as its card's validated `wsi` section describes it."""
    served = models.for_pipeline(PIPELINE)
    card, config = served.entry.card, served.entry.config
    if card is None or card.wsi is None:
        raise missing_section(served.name, Pipeline.wsi)
    wsi = card.wsi
    label = wsi.label
    return TileModel(
        served=served,
        input_name=config.input[0].name,
        output_name=wsi.probabilities_output,
        tile_px=wsi.tile_px,
        mpp=wsi.mpp,
        label_index=0,
        coding=Coding(scheme=label.scheme, code=label.code, meaning=label.meaning),
        threshold=label.threshold,
        max_batch=max(1, int(config.max_batch_size)),
        gate=gate_for(served.entry.directory, card),
    )


@dataclass
class Tally:
    """Counters while tiles stream; read from the progress callback."""

    total: int = 0
    done: int = 0
    read_s: float = 0.0
    queue_s: float = 0.0
    compute_s: float = 0.0
    batches: int = 0
    batch_tiles: int = 0
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class SlideAnalysis:
    info: SlideInfo
    plan: TilePlan
    low: LowRes
    heat: np.ndarray  # float32 [rows, cols], NaN where not analysed
    regions: list[SuspiciousRegion]
    tally: Tally
    tissue_s: float
    stream_s: float
    regions_s: float
    not_assessed: NotAssessed | None = None  # too little tissue, or out of distribution
    gate: SlideGate | None = None  # the OOD gate's word (None: no tile was read)


def _chunks(cells: Iterator[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    chunk: list[tuple[int, int]] = []
    for cell in cells:
        chunk.append(cell)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _infer(models: ModelService, model: TileModel, tiles: np.ndarray, timeout_s: float):  # type: ignore[no-untyped-def]
    """One chunk through the batcher; a full queue or a missed deadline is waited
    out and retried (a slide is background work), anything else fails the job."""
    for attempt in range(MAX_RETRIES):
        try:
            return await models.infer(
                model.name, {model.input_name: tiles}, priority=ROUTINE, timeout_s=timeout_s
            )
        except QueueFull as exc:
            await asyncio.sleep(float(exc.headers.get("Retry-After", "1")))
        except DeadlineExceeded:
            await asyncio.sleep(min(2**attempt * 0.1, 5.0))
    raise AidxError(
        f"{model.name} stayed overloaded; the slide could not be analysed",
        code="model_overloaded",
    )


async def stream_tiles(
    models: ModelService,
    model: TileModel,
    reader: SlideReader,
    plan: TilePlan,
    cells: Iterator[tuple[int, int]],
    maps: tuple[np.ndarray, np.ndarray],
    params: AnalysisParams,
    tally: Tally,
    on_progress: ProgressFn | None = None,
) -> None:
    """Read the tiles at `cells` with a bounded pool of readers, run them through the
    batcher, and write each probability into `maps[0]` (the heat) as it arrives, and
    the gate's score of each tile into `maps[1]` (with the model's gate)."""
    heat, ood = maps
    readers = params.reader_count()
    chunk = max(1, min(params.chunk_tiles, model.max_batch))
    inflight = params.inflight_chunks or readers * 2 + math.ceil(model.max_batch / chunk) + 1
    slots = asyncio.Semaphore(inflight)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="aidx-wsi-read")

    def read(batch: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray | None, float]:
        t0 = time.perf_counter()
        origins = [plan.origin(r, c) for r, c in batch]
        tiles = reader.read_tiles(origins, plan.level, plan.read_px, plan.tile_px)
        scores = None if model.gate is None else tile_scores(model.gate, tiles)
        return tiles, scores, time.perf_counter() - t0

    async def one(batch: list[tuple[int, int]]) -> None:
        try:
            tiles, scores, read_s = await loop.run_in_executor(pool, read, batch)
            result = await _infer(models, model, tiles, params.timeout_s)
            del tiles
            probabilities = result.outputs[model.output_name][:, model.label_index]
            rows, cols = zip(*batch, strict=True)
            heat[list(rows), list(cols)] = probabilities
            if scores is not None:
                ood[list(rows), list(cols)] = scores
            tally.done += len(batch)
            tally.read_s += read_s
            tally.queue_s += result.queue_s
            tally.compute_s += result.compute_s * len(batch) / max(result.batch_size, 1)
            tally.batches += 1
            tally.batch_tiles += result.batch_size
            if on_progress is not None:
                on_progress(tally.done, tally.total)
        finally:
            slots.release()

    try:
        async with asyncio.TaskGroup() as group:
            for batch in _chunks(cells, chunk):
                await slots.acquire()
                group.create_task(one(batch))
    except BaseExceptionGroup as failed:  # the first failure is the job's error
        raise failed.exceptions[0] from None
    finally:
        # readers still running finish their chunk; nothing waits on them after
        await asyncio.shield(asyncio.to_thread(pool.shutdown, wait=True))


def tissue_check(
    low: LowRes, fractions: np.ndarray, info: SlideInfo, params: AnalysisParams
) -> NotAssessed | None:
    """Why the slide cannot be assessed for want of tissue; None when it can."""
    area_mm2 = low.tissue_mm2(info.mpp_x, info.mpp_y)
    if area_mm2 < params.min_tissue_mm2:
        found = "no tissue was found" if area_mm2 == 0 else f"only {area_mm2:.3g} mm2 of tissue"
        return NotAssessed(
            reason=NotAssessedReason.no_tissue,
            message=f"{found} on the slide (at least {params.min_tissue_mm2:g} mm2 is "
            "needed; marker ink does not count)",
        )
    if not (fractions >= params.min_tissue_fraction).any():
        return NotAssessed(
            reason=NotAssessedReason.no_tissue,
            message=f"no tile is at least {params.min_tissue_fraction:.0%} tissue "
            f"({area_mm2:.3g} mm2 of tissue in all)",
        )
    return None


async def analyze(
    models: ModelService,
    info: SlideInfo,
    params: AnalysisParams,
    on_progress: ProgressFn | None = None,
    model: TileModel | None = None,
) -> SlideAnalysis:
    model = model or tile_model(models)
    plan = plan_tiles(info, model.mpp, model.tile_px)
    reader = SlideReader(info)
    try:
        t0 = time.perf_counter()
        # a view fine enough for four mask pixels per tile side, if the pyramid has it
        low = await asyncio.to_thread(read_low_res, reader, plan.stride_px / 4)
        fractions = tissue_fractions(plan, low)
        why = tissue_check(low, fractions, info, params)
        keep = fractions >= params.min_tissue_fraction
        tally = Tally(total=0 if why is not None else int(keep.sum()))  # no tissue: no tile is read
        heat = np.full((plan.rows, plan.cols), np.nan, dtype=np.float32)
        ood = np.full_like(heat, np.nan)
        t1 = time.perf_counter()
        if on_progress is not None:
            on_progress(0, tally.total)
        tally.started = time.perf_counter()
        cells = iter(()) if why is not None else tissue_tiles(fractions, params.min_tissue_fraction)
        maps = (heat, ood)
        await stream_tiles(models, model, reader, plan, cells, maps, params, tally, on_progress)
        t2 = time.perf_counter()
        slide = judge_slide(model.gate, ood[~np.isnan(ood)], params.ood_policy)
        if model.gate is not None and params.ood_policy is OodPolicy.not_assessed:
            heat[ood > model.gate.threshold] = np.nan  # left out of the regions
        why = why or slide.not_assessed
        found = []  # a slide not assessed has no regions
        if why is None:
            found = regions_mod.find_regions(
                heat,
                plan,
                mpp_x=info.mpp_x,
                mpp_y=info.mpp_y,
                threshold=model.threshold,
                max_regions=params.max_regions,
                min_tiles=params.min_region_tiles,
            )
        t3 = time.perf_counter()
    finally:
        # waits for reads still running in threads whose awaiting task was cancelled
        await asyncio.shield(asyncio.to_thread(reader.close))
    return SlideAnalysis(info, plan, low, heat, found, tally, t1 - t0, t2 - t1, t3 - t2, why, slide)


# --- the Report ---------------------------------------------------------------------


def _region(region: SuspiciousRegion) -> Region:
    x0, y0, x1, y1 = region.bbox_px
    return Region(
        x_min_px=x0,
        y_min_px=y0,
        x_max_px=x1,
        y_max_px=y1,
        peak_x_px=region.peak_x_px,
        peak_y_px=region.peak_y_px,
        peak_heat=region.peak,
        polygon_px=[list(p) for p in region.polygon_px],
        score=region.score,
        area_mm2=region.area_mm2,
        rank=region.rank,
    )


def _warnings(
    info: SlideInfo, plan: TilePlan, why: NotAssessed | None, gate: SlideGate | None
) -> list[str]:
    warnings = [] if gate is None else gate.warnings()  # the gate's word first
    if info.mpp_source == "request":
        warnings.append("the MPP was given with the request, not read from the slide")
    mismatch = mpp_mismatch_message(info)
    if mismatch is not None:  # the request said to override the slide's own
        warnings.append(f"{mismatch}; the request's was used (mpp_override)")
    if why is not None:
        unscored = "; no tile was scored" if why.reason is NotAssessedReason.no_tissue else ""
        warnings.append(f"not assessed: {why.message}{unscored}")
    if plan.resized:
        warnings.append(
            f"tiles were read at level {plan.level} ({plan.read_px} px) and resized to "
            f"{plan.tile_px} px for the model's {plan.target_mpp:g} um/px"
        )
    return warnings


def _timings(result: SlideAnalysis, post_ms: float) -> Timings:
    tally = result.tally
    return Timings(
        decode_ms=round(tally.read_s * 1e3, 2),
        preprocess_ms=round(result.tissue_s * 1e3, 2),
        queue_ms=round(tally.queue_s * 1e3, 2),
        compute_ms=round(tally.compute_s * 1e3, 2),
        postprocess_ms=round(post_ms, 2),
        total_ms=round((result.tissue_s + result.stream_s) * 1e3 + post_ms, 2),
        batch_size=round(tally.batch_tiles / tally.batches) if tally.batches else 0,
    )


def _finding(result: SlideAnalysis, model: TileModel) -> Finding:
    """The region summary: the top tile probability and the regions, or not assessed."""
    if result.not_assessed is not None:
        return Finding.not_assessed(model.coding, model.threshold, result.not_assessed)
    analysed = result.heat[~np.isnan(result.heat)]
    top = float(analysed.max()) if analysed.size else 0.0
    return Finding(
        concept=model.coding,
        probability=round(top, 4),
        threshold=model.threshold,
        present=bool(result.regions),
        regions=[_region(r) for r in result.regions],
    )


def build_report(
    result: SlideAnalysis,
    model: TileModel,
    *,
    links: dict[str, str] | None = None,
    params: AnalysisParams | None = None,
) -> tuple[Report, dict[str, bytes]]:
    """The Report and its files (heatmap PNG, GeoJSON). `links` gives the URLs the
    evidence is served at (default: the generic report routes); `params`, those the
    slide was analysed with (default: AnalysisParams()), are part of the report id."""
    t0 = time.perf_counter()
    info, plan, ref = result.info, result.plan, model.served.ref
    # OpenSlide's quickhash1 hashes the slide's content (reading all of a multi-GB
    # slide for an id would cost minutes); the MPP in use and the tiling change the result
    analysed = {
        **(params or AnalysisParams()).result_params(),
        "mpp": [info.mpp_x, info.mpp_y, info.mpp_source],
        "target_mpp": plan.target_mpp,
        "tile_px": plan.tile_px,
    }
    rid = report_id(PIPELINE, info.quickhash or str(info.path), ref, analysed)
    geojson = regions_mod.to_geojson(result.regions, namespace=rid)
    why = result.not_assessed
    if why is None:
        heatmap = regions_mod.render_heatmap(
            result.low.rgb, result.low.downsample, result.heat, plan, result.regions
        )
    else:  # no colour that could read as "low probability": the thumbnail, stamped
        heatmap = regions_mod.render_not_assessed(result.low.rgb, why.message)
    links = links or {
        "heatmap": f"/v1/reports/{rid}/{HEATMAP_FILE}",
        "geojson": f"/v1/reports/{rid}/{GEOJSON_FILE}",
    }
    post_ms = (time.perf_counter() - t0 + result.regions_s) * 1e3
    report = Report(
        id=rid,
        pipeline=PIPELINE,
        source=SourceRef(modality="SM", rows=info.height_px, columns=info.width_px),
        model=ref,
        findings=[_finding(result, model)],
        evidence=[
            Evidence(kind="heatmap", media_type="image/png", url=links["heatmap"]),
            Evidence(kind="regions", media_type="application/geo+json", url=links["geojson"]),
        ],
        timings=_timings(result, post_ms),
        warnings=_warnings(info, plan, why, result.gate),
        disclaimer=DEMO_DISCLAIMER if ref.demo_weights else None,
        ood=result.gate.verdict if result.gate is not None else None,
        not_assessed=why,
    )
    files = {
        HEATMAP_FILE: heatmap,
        GEOJSON_FILE: json.dumps(geojson, separators=(",", ":")).encode(),
    }
    return report, files
