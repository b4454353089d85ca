"""Tissue detection on a low-resolution level and the tile grid at the model's MPP."""

from __future__ import annotations

import numpy as np
import pytest

from aidx.inference.errors import Unprocessable
from aidx.pipelines.wsi.slide import SlideReader, describe
from aidx.pipelines.wsi.tiling import plan_tiles, tissue_fractions, tissue_tiles
from aidx.pipelines.wsi.tissue import LowRes, read_low_res, tissue_mask

from .conftest import Slides


def test_tissue_mask_matches_the_planted_tissue(slides: Slides) -> None:
    reader = SlideReader(describe(slides.tumour))
    try:
        low = read_low_res(reader, max_downsample=64)
    finally:
        reader.close()
    assert low.downsample == pytest.approx(4.0)  # the coarsest level, 1024 x 768
    assert low.mask.shape == (768, 1024)
    h, w = low.mask.shape
    ys, xs = (np.mgrid[0:h, 0:w] + 0.5) * low.downsample
    truth = slides.tumour_layout(xs, ys) > 0
    iou = (low.mask & truth).sum() / (low.mask | truth).sum()
    assert iou > 0.95


def test_bare_glass_has_no_tissue(slides: Slides) -> None:
    reader = SlideReader(describe(slides.blank))
    try:
        low = read_low_res(reader, max_downsample=64)
    finally:
        reader.close()
    assert low.tissue_fraction == 0.0


def test_specks_are_removed_and_small_holes_filled() -> None:
    rgb = np.full((200, 200, 3), 245, dtype=np.uint8)
    rgb[50:150, 50:150] = (200, 120, 180)  # tissue
    rgb[95:100, 95:100] = 245  # a small hole in it
    rgb[10:12, 10:12] = (200, 120, 180)  # a speck
    mask = tissue_mask(rgb, pixel_mm2=(8 * 0.5 / 1000) ** 2)  # 8x a 0.5 um/px slide
    assert mask[97, 97] and not mask[11, 11]
    assert mask[60, 60] and not mask[180, 180]


def test_plan_reads_level_0_tiles_of_a_half_micron_slide_unresized(slides: Slides) -> None:
    plan = plan_tiles(describe(slides.tumour), 0.5, 256)
    assert (plan.level, plan.read_px, plan.resized) == (0, 256, False)
    assert (plan.rows, plan.cols) == (12, 16)
    assert plan.origin(1, 2) == (512, 256)


def test_plan_reads_a_quarter_micron_slide_from_level_1(slides: Slides) -> None:
    info = describe(slides.fine)
    plan = plan_tiles(info, 0.5, 256)
    assert (plan.level, plan.read_px, plan.stride_px) == (1, 256, 512.0)
    assert plan.effective_mpp == pytest.approx(0.5)


def test_plan_resizes_between_levels(slides: Slides) -> None:
    info = describe(slides.fine, mpp=0.3)  # wanted downsample 1.67: read level 0, shrink
    plan = plan_tiles(info, 0.5, 256)
    assert plan.level == 0 and plan.read_px == 427 and plan.resized


def test_a_slide_coarser_than_the_model_is_refused(slides: Slides) -> None:
    with pytest.raises(Unprocessable) as caught:
        plan_tiles(describe(slides.tumour), 0.25, 256)
    assert caught.value.code == "slide_resolution_too_low"


def test_tissue_fractions_are_area_weighted(slides: Slides) -> None:
    plan = plan_tiles(describe(slides.tumour), 0.5, 256)
    mask = np.zeros((768, 1024), dtype=bool)
    mask[:, :32] = True  # the left half of the first tile column (64 view px per tile)
    mask[64:128, 64:128] = True  # tile (1, 1) entirely
    fractions = tissue_fractions(plan, LowRes(np.zeros((768, 1024, 3), np.uint8), mask, 4.0))
    assert fractions.shape == (12, 16)
    assert fractions[0, 0] == pytest.approx(0.5) and fractions[1, 1] == pytest.approx(1.0)
    assert fractions[5, 5] == 0.0
    kept = list(tissue_tiles(fractions, 0.6))
    assert kept == [(1, 1)]
