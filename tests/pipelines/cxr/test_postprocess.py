"""Findings and regions: thresholds, and boxes mapped back to original pixels."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from aidx.inference.repository import Label
from aidx.pipelines.cxr.postprocess import findings, hot_regions, render_overlay
from aidx.pipelines.cxr.preprocess import CropGeometry

LABELS = (
    Label("Pneumonia", "SCT", "233604007", "Pneumonia", 0.4),
    Label("Cardiomegaly", "SCT", "8186001", "Cardiomegaly", 0.7),
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
    png = render_overlay(image, np.ones((28, 28)), 0.9, CropGeometry(57, 0, 1841), [])
    overlay = Image.open(io.BytesIO(png))
    assert overlay.size == (round(1841 * 1024 / 1955), 1024)
