"""Which tiles to read: a grid at the model's MPP over the slide's scanned area,
read from the best pyramid level, kept where there is enough tissue."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from aidx.inference.errors import Unprocessable
from aidx.pipelines.wsi.slide import SlideInfo
from aidx.pipelines.wsi.tissue import LowRes

SNAP = 0.02  # a level within 2% of the wanted downsample is read as is, not resized
MAX_UPSAMPLE = 1.1  # a slide at most this much coarser than the model's MPP still serves


@dataclass(frozen=True)
class TilePlan:
    """A grid of square tiles. Tile (row, col) covers level-0 pixels from
    (origin_x + col * stride_px, origin_y + row * stride_px), stride_px wide, and
    is read at `level` as read_px x read_px, then resized to tile_px if they differ."""

    level: int
    level_downsample: float
    tile_px: int
    read_px: int
    stride_px: float  # level-0 pixels per tile side
    origin_x: int
    origin_y: int
    rows: int
    cols: int
    target_mpp: float
    effective_mpp: float  # what a tile pixel really covers

    @property
    def resized(self) -> bool:
        return self.read_px != self.tile_px

    @property
    def total(self) -> int:
        return self.rows * self.cols

    def origin(self, row: int, col: int) -> tuple[int, int]:
        return (
            self.origin_x + round(col * self.stride_px),
            self.origin_y + round(row * self.stride_px),
        )

    def to_level0(self, row: float, col: float) -> tuple[float, float]:
        """Grid coordinates (fractional; tile edges at integers) to level-0 (x, y)."""
        return self.origin_x + col * self.stride_px, self.origin_y + row * self.stride_px


def plan_tiles(info: SlideInfo, target_mpp: float, tile_px: int) -> TilePlan:
    wanted = target_mpp / info.mpp  # level-0 px per model px
    if wanted < 1 / MAX_UPSAMPLE:
        raise Unprocessable(
            f"the slide's resolution ({info.mpp:.3g} um/px) is coarser than the model "
            f"needs ({target_mpp:g} um/px)",
            code="slide_resolution_too_low",
        )
    # Snap to a level when close: its native tiles are then read whole, not resized.
    for level in info.levels:
        if abs(level.downsample - wanted) <= SNAP * wanted:
            wanted = level.downsample
            break
    wanted = max(wanted, 1.0)
    level = 0
    for i, lv in enumerate(info.levels):
        if lv.downsample <= wanted * (1 + 1e-6):
            level = i
    downsample = info.levels[level].downsample
    stride = tile_px * wanted
    read_px = max(1, round(stride / downsample))
    x, y, width, height = info.bounds
    return TilePlan(
        level=level,
        level_downsample=downsample,
        tile_px=tile_px,
        read_px=read_px,
        stride_px=stride,
        origin_x=x,
        origin_y=y,
        rows=math.floor(height / stride),
        cols=math.floor(width / stride),
        target_mpp=target_mpp,
        effective_mpp=stride * info.mpp / tile_px,
    )


def tissue_fractions(plan: TilePlan, low: LowRes) -> np.ndarray:
    """float32 [rows, cols]: the fraction of each tile that the mask calls tissue
    (area-weighted, from a summed-area table of the mask)."""
    mask = low.mask.astype(np.float64)
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1))
    table[1:, 1:] = mask.cumsum(0).cumsum(1)

    def edges(origin: int, n: int, limit: int) -> np.ndarray:
        level0 = origin + np.arange(n + 1) * plan.stride_px
        return np.clip(np.round(level0 / low.downsample).astype(int), 0, limit)

    ys = edges(plan.origin_y, plan.rows, mask.shape[0])
    xs = edges(plan.origin_x, plan.cols, mask.shape[1])
    y0, y1 = ys[:-1, None], ys[1:, None]
    x0, x1 = xs[None, :-1], xs[None, 1:]
    area = np.maximum((y1 - y0) * (x1 - x0), 1)
    inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    return (inside / area).astype(np.float32)


def tissue_tiles(fractions: np.ndarray, min_fraction: float) -> Iterator[tuple[int, int]]:
    """(row, col) of the tiles with enough tissue, row by row: a generator, so a
    huge slide never has its tile list in memory."""
    for row in range(fractions.shape[0]):
        for col in np.flatnonzero(fractions[row] >= min_fraction):
            yield row, int(col)
