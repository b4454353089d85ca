"""The whole pipeline on real pyramids through the real batcher and the shipped
demo model: planted suspicious areas are found, bare glass gives nothing, and
memory does not hold the slide's tiles."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from skimage.measure import points_in_poly

from aidx.inference.serving import ModelService
from aidx.pipelines.wsi.analysis import AnalysisParams, analyze, build_report, tile_model
from aidx.pipelines.wsi.phantom import Blob
from aidx.pipelines.wsi.slide import describe

from .conftest import Slides
from .test_regions import assert_qupath_geojson


def hits(blob: Blob, ring: tuple[tuple[float, float], ...]) -> bool:
    """The region overlaps the planted area: a point of the area lies inside the
    region's outline, or the region's peak lies inside the area."""
    outline = np.asarray(ring)
    area = np.asarray(blob.polygon(32) + [(blob.x_px, blob.y_px)])
    return bool(points_in_poly(area, outline).any())


def test_planted_areas_are_the_top_regions(
    slides: Slides, service: ModelService, loop: asyncio.AbstractEventLoop
) -> None:
    info = describe(slides.tumour)
    progress: list[tuple[int, int]] = []
    result = loop.run_until_complete(
        analyze(
            service,
            info,
            AnalysisParams(readers=2, chunk_tiles=8),
            lambda d, t: progress.append((d, t)),
        )
    )
    planted = slides.tumour_layout.suspicious
    assert result.tally.total == result.tally.done > 50
    assert progress[0] == (0, result.tally.total) and progress[-1][0] == result.tally.total
    regions = result.regions
    # each planted area overlaps one of the top-ranked regions ...
    top = regions[: len(planted)]
    for blob in planted:
        assert any(hits(blob, r.polygon_px) for r in top), f"missed area at {blob.x_px:.0f}"
    # ... and every suggested region lies on a planted area (none on normal tissue,
    # the lymphoid patch or glass)
    for region in regions:
        assert any(
            points_in_poly([[region.peak_x_px, region.peak_y_px]], np.asarray(b.polygon(64))).any()
            or hits(b, region.polygon_px)
            for b in planted
        )
    # analysed tiles are tissue: no probability where the layout has only glass
    rows, cols = np.nonzero(~np.isnan(result.heat))
    centres_x = (cols + 0.5) * result.plan.stride_px
    centres_y = (rows + 0.5) * result.plan.stride_px
    glass = slides.tumour_layout(centres_x, centres_y) == 0
    assert glass.mean() < 0.1  # only edge tiles with >= 25% tissue may have a glass centre


def test_bare_glass_yields_no_tiles_and_no_regions(
    slides: Slides, service: ModelService, loop: asyncio.AbstractEventLoop
) -> None:
    result = loop.run_until_complete(analyze(service, describe(slides.blank), AnalysisParams()))
    assert result.tally.total == 0 and result.regions == []
    report, files = build_report(result, tile_model(service))
    # not assessed, never "absent" (issue 13: bare glass used to read as a negative)
    assert report.findings[0].present is None and not report.findings[0].assessed
    assert any("no tissue" in w for w in report.warnings)
    assert json.loads(files["regions.geojson"]) == {"type": "FeatureCollection", "features": []}


def test_report_and_files(
    slides: Slides, service: ModelService, loop: asyncio.AbstractEventLoop
) -> None:
    result = loop.run_until_complete(analyze(service, describe(slides.tumour), AnalysisParams()))
    model = tile_model(service)
    report, files = build_report(result, model)
    finding = report.findings[0]
    assert finding.concept.code == "108369006" and finding.present
    assert finding.threshold == model.threshold
    assert [r.rank for r in finding.regions] == list(range(1, len(finding.regions) + 1))
    for region in finding.regions:
        assert region.polygon_px and region.area_mm2 and region.area_mm2 > 0
        assert 0 <= region.x_min_px < region.x_max_px <= 4096
    assert report.source.modality == "SM" and report.source.columns == 4096
    assert report.model.demo_weights and report.disclaimer
    doc = json.loads(files["regions.geojson"])
    assert_qupath_geojson(doc)
    assert len(doc["features"]) == len(finding.regions)
    assert files["overlay.png"].startswith(b"\x89PNG")
    again, _ = build_report(result, model)
    assert again.id == report.id  # the same slide, model and tiling: the same report


@pytest.mark.slow
def test_memory_stays_flat_on_a_large_slide(
    big_slide: Path, service: ModelService, loop: asyncio.AbstractEventLoop
) -> None:
    """Peak traced allocations stay far below what the slide's tiles would take."""
    info = describe(big_slide)
    tracemalloc.start()
    try:
        result = loop.run_until_complete(analyze(service, info, AnalysisParams(readers=2)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    all_tiles_bytes = result.tally.done * 256 * 256 * 3
    assert result.tally.done > 1500
    assert peak < 80 * 1024 * 1024 < all_tiles_bytes / 4
