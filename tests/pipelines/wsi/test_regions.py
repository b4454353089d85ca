"""From a heatmap to ranked regions, GeoJSON for QuPath and the heatmap PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from aidx.pipelines.wsi.regions import (
    find_regions,
    polygon_area,
    render_heatmap,
    to_geojson,
)
from aidx.pipelines.wsi.tiling import TilePlan

PLAN = TilePlan(
    level=0,
    level_downsample=1.0,
    tile_px=256,
    read_px=256,
    stride_px=256.0,
    origin_x=0,
    origin_y=0,
    rows=20,
    cols=30,
    target_mpp=0.5,
    effective_mpp=0.5,
)
TILE_MM2 = (256 * 0.5 / 1000) ** 2


def heat_with_blobs() -> np.ndarray:
    heat = np.full((20, 30), 0.05, dtype=np.float32)
    heat[:, 25:] = np.nan  # not tissue
    heat[2:8, 2:8] = 0.9  # a 6 x 6 region
    heat[12:15, 10:13] = 0.99  # a 3 x 3 region, more suspicious
    heat[18, 0] = 0.97  # a lone tile: below min_tiles
    return heat


def test_regions_are_ranked_outlined_and_measured() -> None:
    regions = find_regions(
        heat_with_blobs(), PLAN, mpp_x=0.5, mpp_y=0.5, threshold=0.5, max_regions=10
    )
    assert [r.rank for r in regions] == [1, 2]
    first, second = regions
    assert first.score == pytest.approx(0.99) and first.tiles == 9
    assert second.score == pytest.approx(0.9) and second.tiles == 36
    x0, y0, x1, y1 = second.bbox_px
    assert (x0, y0, x1, y1) == pytest.approx((512, 512, 2048, 2048), abs=256 / 8 + 1)
    assert second.area_mm2 == pytest.approx(36 * TILE_MM2, abs=1e-4)
    # outline traced on a 4x finer grid: corners rounded off by 1/8 tile
    assert polygon_area(second.polygon_px) == pytest.approx(36 * 256**2, rel=0.05)
    assert second.polygon_px[0] == second.polygon_px[-1]
    assert 10 * 256 <= first.peak_x_px <= 13 * 256 and 12 * 256 <= first.peak_y_px <= 15 * 256


def test_max_regions_and_min_tiles() -> None:
    heat = heat_with_blobs()
    assert len(find_regions(heat, PLAN, mpp_x=0.5, mpp_y=0.5, threshold=0.5, max_regions=1)) == 1
    regions = find_regions(
        heat, PLAN, mpp_x=0.5, mpp_y=0.5, threshold=0.5, max_regions=10, min_tiles=1
    )
    assert len(regions) == 3


def test_nothing_above_threshold_gives_no_regions() -> None:
    heat = np.full((20, 30), 0.1, dtype=np.float32)
    assert find_regions(heat, PLAN, mpp_x=0.5, mpp_y=0.5, threshold=0.5, max_regions=5) == []


def assert_qupath_geojson(doc: dict) -> None:
    """The shape QuPath imports: a FeatureCollection of Polygon features with
    properties.objectType and properties.classification {name, color}."""
    assert doc["type"] == "FeatureCollection"
    for feature in doc["features"]:
        assert feature["type"] == "Feature"
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon"
        for ring in geometry["coordinates"]:
            assert len(ring) >= 4 and ring[0] == ring[-1]
            assert all(len(p) == 2 and all(isinstance(v, float | int) for v in p) for p in ring)
        props = feature["properties"]
        assert props["objectType"] in ("annotation", "detection")
        assert isinstance(props["classification"]["name"], str)
        color = props["classification"]["color"]
        assert len(color) == 3 and all(0 <= c <= 255 for c in color)


def test_geojson_has_the_qupath_shape_and_stable_ids() -> None:
    regions = find_regions(
        heat_with_blobs(), PLAN, mpp_x=0.5, mpp_y=0.5, threshold=0.5, max_regions=10
    )
    doc = to_geojson(regions, namespace="r1")
    assert_qupath_geojson(doc)
    assert len(doc["features"]) == 2
    assert doc["features"][0]["properties"]["measurements"]["rank"] == 1
    assert to_geojson(regions, namespace="r1") == doc


def test_heatmap_png_covers_the_thumbnail() -> None:
    thumbnail = np.full((320, 480, 3), 240, dtype=np.uint8)  # 16 level-0 px per pixel
    heat = heat_with_blobs()
    regions = find_regions(heat, PLAN, mpp_x=0.5, mpp_y=0.5, threshold=0.5, max_regions=10)
    png = render_heatmap(thumbnail, 16.0, heat, PLAN, regions)
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert image.shape == (320, 480, 3)
    hot = image[13 * 16 + 8, 11 * 16 + 8]  # inside the 0.99 region: red
    cold = image[10 * 16 + 8, 20 * 16 + 8]  # analysed, low: bluish
    untouched = image[5 * 16, 27 * 16]  # NaN: the thumbnail as it was
    assert hot[0] > hot[2] + 60
    assert cold[2] > cold[0]
    assert untouched.tolist() == [240, 240, 240]
