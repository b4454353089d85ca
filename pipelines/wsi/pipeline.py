"""The WSI pipeline under the one pipeline contract (inference/pipeline.py): a slide
and its analysis parameters in, the Report with its evidence files out. The job runner
(job_runner.py) is its intake: it runs one job at a time through `analyze`, reports
progress, and saves what comes back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from aidx.inference.reports import Report
from aidx.inference.serving import ModelService
from aidx.pipelines.wsi.analysis import (
    AnalysisParams,
    ProgressFn,
    SlideAnalysis,
    analyze,
    build_report,
    tile_model,
)
from aidx.pipelines.wsi.drift import slide_observation
from aidx.pipelines.wsi.slide import describe


@dataclass(frozen=True)
class SlideInput:
    """One slide to analyse: where it is, the request's mpp (None: the slide's own),
    the parameters, where progress goes, and the links the report should carry."""

    path: Path
    mpp: float | None
    params: AnalysisParams
    progress: ProgressFn | None = None
    links: dict[str, str] | None = field(default=None)


@dataclass(frozen=True)
class WsiResult:
    report: Report
    files: dict[str, bytes]  # heatmap and QuPath GeoJSON, saved beside the report
    analysis: SlideAnalysis  # tile counts and timings, for the job's record


class WsiPipeline:
    """Slides in, suspicious regions out. Tiles go through the batcher at routine
    priority; a job's time limit is the runner's, so `priority` and `timeout_s` are
    accepted for the contract and not used."""

    name = "wsi"

    def __init__(self, models: ModelService) -> None:
        self.models = models

    async def analyze(
        self, data: SlideInput, *, priority: int | None = None, timeout_s: float | None = None
    ) -> WsiResult:
        info = await asyncio.to_thread(describe, data.path, data.mpp)
        model = tile_model(self.models)
        result = await analyze(self.models, info, data.params, data.progress, model)
        report, files = await asyncio.to_thread(
            build_report, result, model, links=data.links, params=data.params
        )
        report.observe_inputs(slide_observation(result))  # for drift monitoring
        return WsiResult(report, files, result)
