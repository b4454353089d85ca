"""From the tile heatmap to what a pathologist reviews: suspicious regions (ranked,
outlined in level-0 pixels, with an area in mm^2), a QuPath-importable GeoJSON and
a heatmap PNG over the slide's thumbnail."""

from __future__ import annotations

import io
import textwrap
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from skimage.measure import approximate_polygon, find_contours

from aidx.pipelines.wsi.tiling import TilePlan

UPSAMPLE = 4  # the outline is traced on a 4x finer grid, so corners are cut by 1/8 tile
SIMPLIFY_PX = 0.75  # Douglas-Peucker tolerance on that finer grid
CLASS_NAME = "Suspicious (AI)"
CLASS_COLOR = (220, 30, 30)
HEATMAP_MAX_PX = 1024
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class SuspiciousRegion:
    rank: int
    score: float  # mean tile probability over the region
    peak: float  # highest tile probability in it
    peak_x_px: float  # centre of that tile, level 0
    peak_y_px: float
    tiles: int
    area_mm2: float  # the flagged tiles' area
    polygon_px: tuple[tuple[float, float], ...]  # closed ring, level-0 (x, y)

    @property
    def bbox_px(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.polygon_px]
        ys = [p[1] for p in self.polygon_px]
        return min(xs), min(ys), max(xs), max(ys)


def polygon_area(ring: tuple[tuple[float, float], ...] | list[tuple[float, float]]) -> float:
    """Shoelace area of a ring, in squared input units."""
    pts = np.asarray(ring, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _outline(component: np.ndarray) -> np.ndarray:
    """The outer boundary of one component (bool grid) as a closed ring of grid
    coordinates (row, col), tile edges at integers."""
    filled = ndimage.binary_fill_holes(component)
    fine = np.kron(filled, np.ones((UPSAMPLE, UPSAMPLE), dtype=bool))
    padded = np.pad(fine, 1).astype(np.float32)
    contours = find_contours(padded, 0.5)
    ring = max(contours, key=len)
    ring = approximate_polygon(ring, SIMPLIFY_PX)
    if not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    return (ring - 1 + 0.5) / UPSAMPLE  # undo the padding; pixel centres to grid


def find_regions(
    heat: np.ndarray,
    plan: TilePlan,
    *,
    mpp_x: float,
    mpp_y: float,
    threshold: float,
    max_regions: int,
    min_tiles: int = 2,
) -> list[SuspiciousRegion]:
    """Connected groups (8-neighbours) of tiles at or above `threshold`, ranked by
    mean probability (ties: the larger first), at most `max_regions`. `heat` is
    float [rows, cols] with NaN where no tile was analysed."""
    hot = np.nan_to_num(heat, nan=0.0) >= threshold
    labels, _ = ndimage.label(hot, structure=_EIGHT)
    found = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        component = labels[box] == index
        tiles = int(component.sum())
        if tiles < min_tiles:
            continue
        values = heat[box][component]
        local = np.argwhere(component)[int(np.argmax(values))]
        peak_row, peak_col = local[0] + box[0].start, local[1] + box[1].start
        ring = _outline(component)
        polygon = tuple(
            plan.to_level0(r + box[0].start, c + box[1].start) for r, c in ring.tolist()
        )
        found.append(
            (
                float(values.mean()),
                tiles,
                float(values.max()),
                plan.to_level0(peak_row + 0.5, peak_col + 0.5),
                polygon,
            )
        )
    found.sort(key=lambda f: (-f[0], -f[1]))
    # the area of the flagged tiles themselves (the outline's corners are rounded)
    tile_mm2 = (plan.stride_px * mpp_x / 1000) * (plan.stride_px * mpp_y / 1000)
    return [
        SuspiciousRegion(
            rank=rank,
            score=round(score, 4),
            peak=round(peak, 4),
            peak_x_px=round(peak_xy[0], 1),
            peak_y_px=round(peak_xy[1], 1),
            tiles=tiles,
            area_mm2=round(tiles * tile_mm2, 4),
            polygon_px=tuple((round(x, 1), round(y, 1)) for x, y in polygon),
        )
        for rank, (score, tiles, peak, peak_xy, polygon) in enumerate(found[:max_regions], 1)
    ]


def to_geojson(regions: list[SuspiciousRegion], *, namespace: str = "") -> dict[str, Any]:
    """A GeoJSON FeatureCollection QuPath imports as annotations (level-0 pixels,
    origin top-left): one Polygon per region with its class, rank and measurements.
    Feature ids are stable for a given namespace (e.g. the report id) and rank."""
    features = []
    for region in regions:
        feature_id = uuid.uuid5(uuid.NAMESPACE_URL, f"aidx-wsi/{namespace}/{region.rank}")
        features.append(
            {
                "type": "Feature",
                "id": str(feature_id),
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[x, y] for x, y in region.polygon_px]],
                },
                "properties": {
                    "objectType": "annotation",
                    "name": f"Suspicious region {region.rank}",
                    "classification": {"name": CLASS_NAME, "color": list(CLASS_COLOR)},
                    "isLocked": False,
                    "measurements": {
                        "rank": region.rank,
                        "score": region.score,
                        "peak": region.peak,
                        "area_mm2": region.area_mm2,
                        "tiles": region.tiles,
                    },
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


_RAMP = np.array(  # probability 0 .. 1: dark blue, teal, yellow, red
    [[40, 40, 140], [30, 150, 160], [250, 220, 60], [230, 30, 30]], dtype=np.float32
)


def colormap(values: np.ndarray) -> np.ndarray:
    """float 0..1 -> uint8 RGB."""
    stops = np.linspace(0, 1, len(_RAMP))
    v = np.clip(values, 0, 1)
    channels = [np.interp(v, stops, _RAMP[:, k]) for k in range(3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def render_heatmap(
    thumbnail: np.ndarray,
    downsample: float,
    heat: np.ndarray,
    plan: TilePlan,
    regions: list[SuspiciousRegion],
) -> bytes:
    """PNG: the tile probabilities over the slide's thumbnail (`downsample` level-0
    px per thumbnail px), analysed tiles only, with the regions outlined and ranked."""
    image = Image.fromarray(thumbnail)
    scale = max(1.0, max(image.size) / HEATMAP_MAX_PX)
    if scale > 1:
        size = (max(1, round(image.width / scale)), max(1, round(image.height / scale)))
        image = image.resize(size, Image.Resampling.BOX)
    px = downsample * thumbnail.shape[1] / image.width  # level-0 px per output px
    xs = (np.arange(image.width) + 0.5) * px
    ys = (np.arange(image.height) + 0.5) * px
    cols = np.floor((xs - plan.origin_x) / plan.stride_px).astype(int)
    rows = np.floor((ys - plan.origin_y) / plan.stride_px).astype(int)
    valid_c = (cols >= 0) & (cols < heat.shape[1])
    valid_r = (rows >= 0) & (rows < heat.shape[0])
    values = np.full((image.height, image.width), np.nan, dtype=np.float32)
    if heat.size:
        sub = heat[np.clip(rows, 0, heat.shape[0] - 1)][:, np.clip(cols, 0, heat.shape[1] - 1)]
        values = np.where(valid_r[:, None] & valid_c[None, :], sub, np.nan)
    analysed = ~np.isnan(values)
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    colour = colormap(np.nan_to_num(values)).astype(np.float32)
    alpha = np.where(analysed, 0.2 + 0.45 * np.nan_to_num(values), 0.0)[..., None]
    blended = (base * (1 - alpha) + colour * alpha).astype(np.uint8)
    out = Image.fromarray(blended)
    draw = ImageDraw.Draw(out)
    for region in regions:
        ring = [(x / px, y / px) for x, y in region.polygon_px]
        draw.line(ring, fill=(0, 0, 0), width=3)
        draw.line(ring, fill=(255, 255, 255), width=1)
        x0, y0, _, _ = region.bbox_px
        draw.text((x0 / px + 2, y0 / px + 2), str(region.rank), fill=(0, 0, 0))
    buffer = io.BytesIO()
    out.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def render_not_assessed(thumbnail: np.ndarray, message: str) -> bytes:
    """PNG for a slide that was not assessed: its thumbnail greyed out under a banner
    that says so, with no heat colour anywhere (no colour could then be read as a low
    probability)."""
    image = Image.fromarray(thumbnail).convert("L").convert("RGB")
    scale = max(1.0, max(image.size) / HEATMAP_MAX_PX)
    if scale > 1:
        size = (max(1, round(image.width / scale)), max(1, round(image.height / scale)))
        image = image.resize(size, Image.Resampling.BOX)
    faded = (np.asarray(image, dtype=np.float32) * 0.5 + 127).astype(np.uint8)
    out = Image.fromarray(faded)
    draw = ImageDraw.Draw(out)
    big = max(12, out.width // 24)
    small = max(9, big // 2)
    lines = textwrap.wrap(message, width=max(20, int(out.width / (small * 0.6))))
    draw.rectangle((0, 0, out.width, big * 2 + len(lines) * small * 1.3), fill=(60, 60, 60))
    draw.text((big // 2, big // 3), "NOT ASSESSED", fill=(255, 255, 255), font_size=big)
    for k, line in enumerate(lines):
        where = (big // 2, big * 1.6 + k * small * 1.3)
        draw.text(where, line, fill=(230, 230, 230), font_size=small)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
