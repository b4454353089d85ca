"""A slide with no tissue (bare glass, only marker ink, too little tissue) is *not
assessed*, never "absent"; every WSI report carries its OOD gate's verdict; ink
beside tissue changes nothing (issue 13). Real pyramids, the real batcher and model."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from aidx.inference.assessment import NotAssessedReason, OodStatus
from aidx.inference.serving import ModelService
from aidx.pipelines.wsi.analysis import (
    AnalysisParams,
    SlideAnalysis,
    analyze,
    build_report,
    tile_model,
    tissue_check,
)
from aidx.pipelines.wsi.gate import UNCALIBRATED_OOD
from aidx.pipelines.wsi.slide import describe
from aidx.pipelines.wsi.tiling import plan_tiles, tissue_fractions
from aidx.pipelines.wsi.tissue import LowRes

from .conftest import MarkedSlides, Slides


def run(
    service: ModelService, loop: asyncio.AbstractEventLoop, path: Path, **params: object
) -> SlideAnalysis:
    return loop.run_until_complete(analyze(service, describe(path), AnalysisParams(**params)))  # type: ignore[arg-type]


def assert_not_assessed(result: SlideAnalysis, service: ModelService, words: str) -> None:
    assert result.tally.total == result.tally.done == 0 and result.regions == []
    report, files = build_report(result, tile_model(service))
    finding = report.findings[0]
    assert not finding.assessed and finding.not_assessed_reason is NotAssessedReason.no_tissue
    assert finding.probability is None and finding.present is None and finding.regions == []
    assert finding.not_assessed_message and words in finding.not_assessed_message
    assert report.not_assessed is not None
    assert report.not_assessed.reason is NotAssessedReason.no_tissue
    # no tissue tile: nothing like the tile model's inputs (no score: none was scored)
    assert report.ood is not None and report.ood.status is OodStatus.out_of_distribution
    assert report.ood.score is None
    assert json.loads(files["regions.geojson"]) == {"type": "FeatureCollection", "features": []}
    # the heatmap has no heat colour that could read as "low probability": grey
    # thumbnail under a dark "not assessed" banner
    png = np.asarray(Image.open(io.BytesIO(files["overlay.png"])).convert("RGB")).astype(int)
    assert (png.max(axis=-1) - png.min(axis=-1)).max() == 0
    assert png[2, :].mean() < 100


def test_bare_glass_is_not_assessed(
    slides: Slides, service: ModelService, loop: asyncio.AbstractEventLoop
) -> None:
    assert_not_assessed(run(service, loop, slides.blank), service, "no tissue was found")


def test_a_slide_with_only_ink_is_not_assessed(
    marked_slides: MarkedSlides, service: ModelService, loop: asyncio.AbstractEventLoop
) -> None:
    result = run(service, loop, marked_slides.ink_only)
    assert_not_assessed(result, service, "marker ink does not count")


def test_tissue_below_the_minimum_area_is_not_assessed(
    slides: Slides, service: ModelService, loop: asyncio.AbstractEventLoop
) -> None:
    result = run(service, loop, slides.tumour, min_tissue_mm2=100.0)
    assert_not_assessed(result, service, "mm2 of tissue on the slide")


def test_tissue_spread_too_thin_for_any_tile_is_not_assessed(slides: Slides) -> None:
    info = describe(slides.tumour)
    plan = plan_tiles(info, 0.5, 256)
    mask = np.zeros((768, 1024), dtype=bool)
    mask[:, ::2] = True  # every other column: half of every tile, 0.8 mm2 in all
    low = LowRes(np.zeros((768, 1024, 3), np.uint8), mask, 4.0)
    params = AnalysisParams(min_tissue_fraction=0.6)
    why = tissue_check(low, tissue_fractions(plan, low), info, params)
    assert why is not None and why.reason is NotAssessedReason.no_tissue
    assert "no tile is at least 60% tissue" in why.message
    assert tissue_check(low, tissue_fractions(plan, low), info, AnalysisParams()) is None


def test_ink_beside_tissue_changes_neither_tiles_nor_regions(
    marked_slides: MarkedSlides, service: ModelService, loop: asyncio.AbstractEventLoop
) -> None:
    clean = run(service, loop, marked_slides.tissue, readers=2)
    marked = run(service, loop, marked_slides.tissue_inked, readers=2)
    assert marked.not_assessed is None and marked.tally.done == clean.tally.done > 20
    np.testing.assert_array_equal(np.isnan(marked.heat), np.isnan(clean.heat))
    assert [r.tiles for r in marked.regions] == [r.tiles for r in clean.regions]


def test_an_assessed_slide_says_it_is_in_distribution(
    slides: Slides, service: ModelService, loop: asyncio.AbstractEventLoop
) -> None:
    report, _ = build_report(run(service, loop, slides.tumour), tile_model(service))
    finding = report.findings[0]
    assert finding.assessed and finding.present and finding.probability is not None
    assert report.not_assessed is None
    assert report.ood is not None and report.ood.status is OodStatus.in_distribution
    assert UNCALIBRATED_OOD not in report.warnings
