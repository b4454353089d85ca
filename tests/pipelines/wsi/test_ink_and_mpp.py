"""Marker ink is not tissue, and a request MPP that contradicts the slide's own is
refused unless overridden (issue 13), on real OpenSlide pyramids."""

from __future__ import annotations

import numpy as np
import pytest

from aidx.inference.errors import Unprocessable
from aidx.pipelines.wsi.phantom import SlideLayout
from aidx.pipelines.wsi.slide import (
    SlideReader,
    check_request_mpp,
    describe,
    mpp_disagreement,
)
from aidx.pipelines.wsi.tiling import plan_tiles, tissue_fractions
from aidx.pipelines.wsi.tissue import MIN_SATURATION, LowRes, ink_mask, read_low_res, saturation

from .conftest import MarkedSlides, Slides


def low_res(path, max_downsample: float = 4) -> LowRes:  # type: ignore[no-untyped-def]
    reader = SlideReader(describe(path))
    try:
        return read_low_res(reader, max_downsample)
    finally:
        reader.close()


def inked(layout: SlideLayout, low: LowRes) -> np.ndarray:
    h, w = low.mask.shape
    ys, xs = (np.mgrid[0:h, 0:w] + 0.5) * low.downsample
    out = np.zeros((h, w), dtype=bool)
    for mark in layout.ink:
        out |= mark.contains(xs, ys)
    return out


@pytest.mark.parametrize(
    ("rgb", "ink"),
    [
        ((40, 75, 165), True),  # blue marker
        ((150, 170, 225), True),  # a thin blue stroke over glass
        ((45, 125, 85), True),  # green marker
        ((30, 30, 38), True),  # black marker
        ((70, 70, 85), True),  # a thinner black stroke: dark and nearly grey
        ((235, 150, 200), False),  # eosin pink
        ((120, 80, 170), False),  # haematoxylin purple
        ((60, 35, 110), False),  # a dense, dark nucleus: dark but saturated
        ((238, 238, 238), False),  # glass
        ((232, 236, 240), False),  # glass with a faint cool cast (JPEG, lamp)
    ],
)
def test_the_ink_rules_take_marker_colours_and_leave_stains(
    rgb: tuple[int, int, int], ink: bool
) -> None:
    image = np.full((5, 5, 3), rgb, dtype=np.uint8)
    assert bool(ink_mask(image)[2, 2]) is ink


def test_a_slide_with_only_ink_has_no_tissue(marked_slides: MarkedSlides) -> None:
    low = low_res(marked_slides.ink_only)
    ink = inked(marked_slides.ink_only_layout, low)
    assert ink.sum() > 10_000
    # the ink is coloured: saturation alone (the rule before) took it for tissue
    assert (saturation(low.rgb)[ink] > MIN_SATURATION).mean() > 0.95
    assert low.tissue_fraction == 0.0


def test_ink_beside_tissue_adds_no_tiles(marked_slides: MarkedSlides) -> None:
    clean, marked = low_res(marked_slides.tissue), low_res(marked_slides.tissue_inked)
    ink = inked(marked_slides.tissue_inked_layout, marked)
    assert ink.sum() > 1_000 and not marked.mask[ink].any()
    info = describe(marked_slides.tissue_inked)
    plan = plan_tiles(info, 0.5, 256)
    # were the ink tissue, it would fill tiles enough to keep them
    ink_tiles = tissue_fractions(plan, LowRes(marked.rgb, ink, marked.downsample)) >= 0.25
    assert ink_tiles.sum() >= 3
    kept_clean = tissue_fractions(plan, clean) >= 0.25
    kept_marked = tissue_fractions(plan, marked) >= 0.25
    assert kept_marked.sum() > 20
    np.testing.assert_array_equal(kept_marked, kept_clean)


def test_a_request_mpp_within_ten_percent_is_used(slides: Slides) -> None:
    info = describe(slides.tumour, mpp=0.52)
    assert info.mpp == 0.52 and info.mpp_source == "request"
    assert info.slide_mpp == pytest.approx((0.5, 0.5)) and info.slide_mpp_source == "slide"
    assert mpp_disagreement(info) == pytest.approx(0.04)
    check_request_mpp(info, override=False)


def test_a_contradicting_request_mpp_is_refused_with_both_values(slides: Slides) -> None:
    info = describe(slides.tumour, mpp=0.25)
    with pytest.raises(Unprocessable) as caught:
        check_request_mpp(info, override=False)
    assert caught.value.code == "mpp_mismatch"
    assert "0.25 um/px" in caught.value.message and "0.5 um/px" in caught.value.message
    check_request_mpp(info, override=True)  # the request says so: accepted


def test_a_slide_without_its_own_mpp_takes_the_request_s(slides: Slides) -> None:
    info = describe(slides.no_mpp, mpp=2.0)
    assert info.slide_mpp is None and mpp_disagreement(info) is None
    check_request_mpp(info, override=False)
    assert describe(slides.tumour).slide_mpp is None  # the slide's own was used
