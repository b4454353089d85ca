"""The tile model's OOD gate over a slide: the committed gate on fresh recipe tiles
(in distribution) and on each out-of-distribution kind; the slide's verdict from its
tiles; the wiring through the analysis under both policies (real pyramids, the real
batcher and model)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from aidx.inference.assessment import NotAssessedReason, OodPolicy, OodStatus
from aidx.inference.model_card import load_card
from aidx.inference.ood import OodGate, gate_for
from aidx.inference.repository import parse_config
from aidx.inference.serving import ModelService
from aidx.pipelines.wsi import ood_sets
from aidx.pipelines.wsi.analysis import AnalysisParams, analyze, build_report, tile_model
from aidx.pipelines.wsi.gate import MAX_OOD_TILE_FRACTION, judge_slide, tile_scores
from aidx.pipelines.wsi.slide import describe
from aidx.pipelines.wsi.train import draw_tile
from tests.conftest import MODELS

from .conftest import Slides

FOLDER = MODELS / "wsi_tiles"


@pytest.fixture(scope="module")
def gate() -> OodGate:
    card = load_card(FOLDER / "card.md", parse_config(FOLDER / "config.pbtxt"))
    found = gate_for(FOLDER, card)
    assert found is not None and card.ood is not None
    assert card.ood.false_rejection_rate <= 0.05
    return found


def test_fresh_recipe_tiles_are_in_distribution(gate: OodGate) -> None:
    tiles = np.stack([draw_tile(987_654, i)[0] for i in range(40)])  # a split no one used
    scores = tile_scores(gate, tiles)
    assert np.mean(scores > gate.threshold) <= 0.1, np.sort(scores)


# Bare glass is not among them: the gate scores it as in distribution (the recipe's
# tiles hold up to 85% glass), so it is the tissue check that keeps it from the model
# (test_not_assessed.py: a slide of bare glass is no_tissue; no tile is read).
@pytest.mark.parametrize("kind", ["noise", "ihc_dab", "fluorescence", "pen_ink"])
def test_each_out_of_distribution_kind_is_flagged(gate: OodGate, kind: str) -> None:
    draw, _ = ood_sets._DRAWN[kind]
    rng = np.random.default_rng([4321, len(kind)])
    tiles = np.stack([draw(rng) for _ in range(8)])
    scores = tile_scores(gate, tiles)
    assert np.mean(scores > gate.threshold) >= 0.75, np.sort(scores)


def test_natural_images_and_a_real_ihc_image_are_flagged(gate: OodGate) -> None:
    rng = np.random.default_rng(99)
    for names in (("astronaut", "coffee", "brick"), ("immunohistochemistry",)):
        tiles = np.stack(list(ood_sets._crops(ood_sets._skimage(names), rng, 6)))
        assert (tile_scores(gate, tiles) > gate.threshold).all()


def test_the_slide_verdict_follows_the_share_of_tiles_out(gate: OodGate) -> None:
    low, high = gate.threshold / 2, gate.threshold * 2
    n = 20
    limit = int(n * MAX_OOD_TILE_FRACTION)  # 5 of 20 out is still in
    at_limit = np.array([high] * limit + [low] * (n - limit))
    over = np.array([high] * (limit + 1) + [low] * (n - limit - 1))
    inside = judge_slide(gate, at_limit, OodPolicy.not_assessed)
    assert inside.verdict.status is OodStatus.in_distribution and inside.not_assessed is None
    assert inside.tiles_out == limit and inside.verdict.score == round(low, 4)
    assert "left out of the heatmap" in inside.warnings()[0]
    out = judge_slide(gate, over, OodPolicy.not_assessed)
    assert out.verdict.status is OodStatus.out_of_distribution
    assert out.verdict.score is not None and out.verdict.score > gate.threshold
    assert out.not_assessed is not None
    assert out.not_assessed.reason is NotAssessedReason.out_of_distribution
    assert f"{limit + 1} of {n} tissue tiles" in out.not_assessed.message
    warned = judge_slide(gate, over, OodPolicy.warn)
    assert warned.not_assessed is None and warned.warnings()[0].startswith("OUT OF DISTRIBUTION")
    assert judge_slide(None, over, OodPolicy.warn).verdict.status is OodStatus.uncalibrated


def test_the_phantom_slide_is_in_distribution_under_the_default_policy(
    slides: Slides, service: ModelService, loop: asyncio.AbstractEventLoop
) -> None:
    model = tile_model(service)
    assert model.gate is not None
    params = AnalysisParams(readers=2, ood_policy=OodPolicy.not_assessed)
    result = loop.run_until_complete(analyze(service, describe(slides.tumour), params, None, model))
    report, _ = build_report(result, model)
    assert report.not_assessed is None and report.findings[0].assessed
    assert report.findings[0].present and report.findings[0].regions
    assert report.ood is not None and report.ood.status is OodStatus.in_distribution
    assert report.ood.score is not None and report.ood.score <= model.gate.threshold
    assert result.gate is not None and result.gate.tiles == result.tally.done


def test_a_slide_out_of_distribution_is_not_assessed_or_warned(
    slides: Slides, service: ModelService, loop: asyncio.AbstractEventLoop
) -> None:
    """A gate that finds every tile unlike its data (threshold 0): not assessed under
    the default policy, scored with the warning first under `warn`."""
    model = tile_model(service)
    assert model.gate is not None
    strict = replace(model, gate=replace(model.gate, threshold=0.0))
    info = describe(slides.tumour)
    refused = loop.run_until_complete(
        analyze(service, info, AnalysisParams(readers=2), None, strict)
    )
    report, _ = build_report(refused, strict)
    (finding,) = report.findings
    assert not finding.assessed and finding.regions == []
    assert finding.not_assessed_reason is NotAssessedReason.out_of_distribution
    assert report.ood is not None and report.ood.status is OodStatus.out_of_distribution
    assert refused.regions == [] and refused.tally.done > 0
    params = AnalysisParams(readers=2, ood_policy=OodPolicy.warn)
    warned = loop.run_until_complete(analyze(service, info, params, None, strict))
    report, _ = build_report(warned, strict)
    assert report.findings[0].assessed and report.findings[0].regions
    assert report.warnings[0].startswith("OUT OF DISTRIBUTION")


def test_tiles_out_of_distribution_are_left_out_of_the_regions(
    slides: Slides, service: ModelService, loop: asyncio.AbstractEventLoop
) -> None:
    model = tile_model(service)
    assert model.gate is not None
    info = describe(slides.tumour)
    every = AnalysisParams(readers=2, ood_policy=OodPolicy.warn)  # no tile left out
    clean = loop.run_until_complete(analyze(service, info, every))
    # a threshold that puts about a tenth of this slide's tiles out
    threshold = float(np.quantile(_scores_of(clean, model.gate), 0.9))
    strict = replace(model, gate=replace(model.gate, threshold=threshold))
    result = loop.run_until_complete(
        analyze(service, info, AnalysisParams(readers=2), None, strict)
    )
    assert result.not_assessed is None and result.gate is not None
    left_out = result.gate.tiles_out
    assert 0 < left_out <= result.gate.tiles * MAX_OOD_TILE_FRACTION
    assert np.isfinite(result.heat).sum() == clean.tally.done - left_out
    report, _ = build_report(result, strict)
    assert any("left out of the heatmap and the regions" in w for w in report.warnings)


def _scores_of(result, gate: OodGate) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The gate's scores of the slide's analysed tiles, read again."""
    from aidx.pipelines.wsi.slide import SlideReader

    plan = result.plan
    cells = np.argwhere(np.isfinite(result.heat))
    reader = SlideReader(result.info)
    try:
        origins = [plan.origin(int(r), int(c)) for r, c in cells]
        tiles = reader.read_tiles(origins, plan.level, plan.read_px, plan.tile_px)
    finally:
        reader.close()
    return tile_scores(gate, tiles)
