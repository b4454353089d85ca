"""Findings and regions: thresholds, boxes mapped back to original pixels, the overlay."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from aidx.inference.model_card import Label
from aidx.pipelines.cxr.postprocess import (
    encode_png,
    findings,
    hot_regions,
    overlay_grey,
    overlay_scale,
    render_overlay_rgb,
)
from aidx.pipelines.cxr.preprocess import CropGeometry

NO_BOXES = np.zeros((0, 4))
LABELS = (
    Label(name="Pneumonia", scheme="SCT", code="233604007", meaning="Pneumonia", threshold=0.4),
    Label(name="Cardiomegaly", scheme="SCT", code="8186001", meaning="Cardiomegaly", threshold=0.7),
)


def test_a_hot_cell_maps_back_to_the_original_pixels() -> None:
    # a 28x28 map over a 1000-px square crop that starts at row 100 of the original
    heat = np.zeros((28, 28))
    heat[7, 14] = 1.0  # model pixels rows 56..64, cols 112..120
    geometry = CropGeometry(row0=100, col0=0, side_px=1000)
    (region,) = hot_regions(heat, geometry)
    scale = 1000 / 224
    assert region.y_min_px == round(100 + 56 * scale, 1) and region.y_max_px == round(
        100 + 64 * scale, 1
    )
    assert region.x_min_px == round(112 * scale, 1) and region.x_max_px == round(120 * scale, 1)
    assert region.y_min_px < region.peak_y_px < region.y_max_px


def test_presence_follows_each_labels_threshold_and_only_present_findings_get_regions() -> None:
    cam = np.random.default_rng(0).normal(size=(2, 28, 28))
    geometry = CropGeometry(0, 0, 224)
    result = findings(np.array([0.45, 0.65]), cam, LABELS, geometry)
    assert [f.present for f in result] == [True, False]
    assert result[0].regions and not result[1].regions
    assert result[0].concept.code == "233604007" and result[0].threshold == 0.4


def test_the_overlay_is_the_original_image_size_capped_at_1024() -> None:
    image = np.random.default_rng(1).uniform(size=(1955, 1841)).astype(np.float32)
    crop = CropGeometry(57, 0, 1841)
    grey, scale = overlay_grey(image), overlay_scale(image.shape)
    rgb = render_overlay_rgb(grey, np.ones((28, 28)), 0.9, crop, scale, NO_BOXES)
    assert rgb.shape == (1024, round(1841 * 1024 / 1955), 3) and rgb.dtype == np.uint8
    overlay = Image.open(io.BytesIO(encode_png(rgb)))
    assert overlay.size == (round(1841 * 1024 / 1955), 1024)
    assert (np.asarray(overlay) == rgb).all()  # lossless: the PNG is the rendered pixels


def test_heat_shows_only_inside_the_crop_and_fades_with_the_probability() -> None:
    grey = np.full((100, 200), 128, np.uint8)
    cam = np.zeros((7, 7))
    cam[3, 3] = 1.0  # hot in the middle of the crop (cols 50..150)
    crop = CropGeometry(0, 50, 100)
    confident = render_overlay_rgb(grey, cam, 0.95, crop, 1.0, NO_BOXES).astype(int)
    unlikely = render_overlay_rgb(grey, cam, 0.01, crop, 1.0, NO_BOXES).astype(int)
    assert (confident[:, :50] == 128).all() and (confident[:, 150:] == 128).all()
    assert np.abs(confident[50, 100] - 128).max() > 40  # coloured where the map is hot
    assert np.abs(unlikely - 128).max() <= 2  # a confident negative shows ~no colour


def test_region_boxes_are_drawn_in_white_at_overlay_scale() -> None:
    grey = np.zeros((100, 100), np.uint8)
    boxes = np.array([[40.0, 60.0, 120.0, 160.0]])  # original pixels; overlay is half size
    rgb = render_overlay_rgb(grey, None, 0.9, CropGeometry(0, 0, 200), 0.5, boxes)
    assert (rgb[30, 20:61] == 255).all() and (rgb[30:81, 20] == 255).all()
    assert (rgb[50, 40] == 0).all()  # inside the box: untouched
