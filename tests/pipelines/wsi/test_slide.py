"""Opening slides through OpenSlide: geometry, MPP, and clear errors."""

from __future__ import annotations

import numpy as np
import openslide
import pytest

from aidx.inference.errors import NotFound, Unprocessable
from aidx.pipelines.wsi.slide import SlideReader, describe, rgba_to_rgb
from aidx.service.handlers import http_status

from .conftest import Slides


def test_the_synthetic_pyramid_is_an_aperio_slide_to_openslide(slides: Slides) -> None:
    slide = openslide.OpenSlide(str(slides.tumour))
    try:
        assert slide.properties["openslide.vendor"] == "aperio"
        assert slide.level_dimensions == ((4096, 3072), (2048, 1536), (1024, 768))
        assert slide.properties["openslide.level[0].tile-width"] == "256"
    finally:
        slide.close()


def test_describe_reads_mpp_objective_and_levels(slides: Slides) -> None:
    info = describe(slides.tumour)
    assert (info.width_px, info.height_px) == (4096, 3072)
    assert info.mpp_x == pytest.approx(0.5) and info.mpp_source == "slide"
    assert info.objective_power == 20
    assert [lv.downsample for lv in info.levels] == [1.0, 2.0, 4.0]
    assert info.levels[0].tile_px == 256
    assert info.quickhash and len(info.quickhash) == 64
    assert "path" not in info.summary()


def test_a_missing_mpp_is_an_error_unless_the_request_gives_one(slides: Slides) -> None:
    with pytest.raises(Unprocessable) as caught:
        describe(slides.no_mpp)
    assert caught.value.code == "missing_mpp"
    info = describe(slides.no_mpp, mpp=0.5)
    assert info.mpp == 0.5 and info.mpp_source == "request" and info.vendor == "generic-tiff"


def test_implausible_mpp_is_refused(slides: Slides) -> None:
    with pytest.raises(Unprocessable) as caught:
        describe(slides.no_mpp, mpp=500.0)
    assert caught.value.code == "implausible_mpp"


@pytest.mark.parametrize("name", ["truncated", "text"])
def test_files_openslide_cannot_open_are_unprocessable(slides: Slides, name: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        describe(getattr(slides, name))
    assert http_status(caught.value) == 422
    assert caught.value.code == "unsupported_slide_format"


def test_a_missing_file_is_not_found(slides: Slides) -> None:
    with pytest.raises(NotFound) as caught:
        describe(slides.root / "nope.svs")
    assert caught.value.code == "slide_not_found"


def test_reader_reads_tiles_and_resizes(slides: Slides) -> None:
    reader = SlideReader(describe(slides.tumour))
    try:
        tiles = reader.read_tiles([(0, 0), (2048, 1536)], 0, 256, 256)
        assert tiles.shape == (2, 256, 256, 3) and tiles.dtype == np.uint8
        assert tiles[0].mean() > 235  # the corner is bare glass
        assert tiles[1].mean() < 225  # the centre is tissue
        small = reader.read_tiles([(2048, 1536)], 1, 256, 128)
        assert small.shape == (1, 128, 128, 3)
    finally:
        reader.close()


def test_transparent_pixels_become_white() -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    rgb = rgba_to_rgb(rgba)
    assert rgb[0, 0].tolist() == [10, 20, 30]
    assert rgb[1, 1].tolist() == [255, 255, 255]
