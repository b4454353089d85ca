"""Tissue detection on a low-resolution view of the slide.

Stained tissue is coloured, glass is grey-white: Otsu's threshold on the HSV
saturation (never below `MIN_SATURATION`, so bare glass with a little noise finds
nothing), with near-black pixels (pen marks, folds, dust) and marker ink left out;
then specks smaller than `MIN_OBJECT_MM2` are removed and holes smaller than
`MAX_HOLE_MM2` filled.

Marker ink (the blue, green and black pens used to circle areas or label glass) is
coloured too, so saturation alone counts it as tissue. Two rules, in optical density
(OD = -log10(I / 255) per channel), take it out:

- *Blue and green ink* absorb red far more than green. H&E never does: eosin absorbs
  green (OD about 0.07 red to 0.99 green) and haematoxylin about as much green as red
  (0.65 to 0.70). So a pixel whose red OD exceeds `INK_RED_GREEN_RATIO` times its
  green OD is ink, if its red OD is above `INK_MIN_RED_OD` (glass with a faint green
  JPEG cast at the tissue's rim is not): in HSV terms a hue between yellow-green and
  blue (green above red), that no H&E stain makes, on a pixel dark enough to be ink.
- *Black ink* is dark and nearly grey: the brightest channel below `BLACK_VALUE` and
  saturation below `BLACK_SATURATION` (dense haematoxylin is as dark but strongly
  saturated purple), or any pixel darker than `DARK_RGB`.

The ink mask is widened by `INK_MARGIN_PX` view pixels, so the blurred rim of a
stroke does not survive as a thin ring of "tissue".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.filters import threshold_otsu
from skimage.morphology import dilation, disk, remove_small_holes, remove_small_objects

from aidx.pipelines.wsi.slide import SlideInfo, SlideReader

MIN_SATURATION = 0.08
DARK_RGB = 40  # max channel below this: pen or debris, not tissue
INK_RED_GREEN_RATIO = 1.15  # blue/green ink: red OD > 1.15 x green OD (H&E: <= ~0.93)
INK_MIN_RED_OD = 0.1  # ... and red OD above this (red < ~200): not a tinted glass rim
BLACK_VALUE = 100  # black ink: brightest channel below this ...
BLACK_SATURATION = 0.35  # ... and nearly grey
INK_MARGIN_PX = 1  # the ink mask is widened by this many view pixels
MIN_OBJECT_MM2 = 0.02
MAX_HOLE_MM2 = 0.02
MAX_VIEW_PX = 2048  # the low-resolution view's longer side, at most
STRIP_PX = 512  # rows read at a time when the view is made from a large level


@dataclass(frozen=True)
class LowRes:
    """A low-resolution RGB view of the slide and its tissue mask."""

    rgb: np.ndarray  # uint8 [h, w, 3]
    mask: np.ndarray  # bool [h, w]
    downsample: float  # level-0 pixels per view pixel

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def tissue_mm2(self, mpp_x: float, mpp_y: float) -> float:
        """The area the mask calls tissue, for a slide of that level-0 MPP."""
        pixel_mm2 = (self.downsample * mpp_x / 1000) * (self.downsample * mpp_y / 1000)
        return float(self.mask.sum()) * pixel_mm2


def saturation(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(high > 0, (high - low) / np.maximum(high, 1), 0).astype(np.float32)


def ink_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean mask of blue, green and black marker ink (the rules above)."""
    od = -np.log10(np.maximum(rgb.astype(np.float32), 1.0) / 255.0)
    red, green = od[..., 0], od[..., 1]
    blue_green = (red > INK_RED_GREEN_RATIO * green) & (red > INK_MIN_RED_OD)
    value = rgb.max(axis=-1)
    black = (value < DARK_RGB) | ((value < BLACK_VALUE) & (saturation(rgb) < BLACK_SATURATION))
    ink = blue_green | black
    if INK_MARGIN_PX and ink.any():
        ink = dilation(ink, disk(INK_MARGIN_PX))
    return np.asarray(ink, dtype=bool)


def tissue_mask(rgb: np.ndarray, pixel_mm2: float) -> np.ndarray:
    """Boolean tissue mask of an RGB view whose pixels cover `pixel_mm2` each."""
    sat = saturation(rgb)
    if sat.size == 0:
        return np.zeros(sat.shape, dtype=bool)
    ink = ink_mask(rgb)
    rest = sat[~ink]  # Otsu on what is not ink: ink would pull the threshold
    threshold = MIN_SATURATION
    if rest.size and float(rest.max()) > float(rest.min()):
        threshold = max(float(threshold_otsu(rest)), MIN_SATURATION)
    mask = (sat > threshold) & ~ink
    min_px = max(1, round(MIN_OBJECT_MM2 / pixel_mm2))
    hole_px = max(1, round(MAX_HOLE_MM2 / pixel_mm2))
    mask = remove_small_objects(mask, max_size=min_px)
    return np.asarray(remove_small_holes(mask, max_size=hole_px))


def view_level(info: SlideInfo, finest_downsample: float) -> int:
    """The coarsest level no coarser than `finest_downsample`; level 0 if none."""
    best = 0
    for i, level in enumerate(info.levels):
        if level.downsample <= finest_downsample * 1.001:
            best = i
    return best


def read_low_res(reader: SlideReader, max_downsample: float) -> LowRes:
    """A view with at most MAX_VIEW_PX on its longer side and at least the
    resolution `max_downsample` (level-0 px per view px) asks for when it fits,
    read strip by strip so that memory stays small whatever the level's size."""
    info = reader.info
    level = view_level(info, max_downsample)
    lv = info.levels[level]
    scale = max(1.0, max(lv.width_px, lv.height_px) / MAX_VIEW_PX)
    out_w, out_h = max(1, math.floor(lv.width_px / scale)), max(1, math.floor(lv.height_px / scale))
    rgb = np.empty((out_h, out_w, 3), dtype=np.uint8)
    rows_per_strip = max(1, math.floor(STRIP_PX / scale))  # output rows per strip
    for out_y in range(0, out_h, rows_per_strip):
        n = min(rows_per_strip, out_h - out_y)
        src_y0 = round(out_y * scale)
        src_y1 = min(lv.height_px, round((out_y + n) * scale))
        strip = reader.read_region(
            0, round(src_y0 * lv.downsample), level, lv.width_px, max(1, src_y1 - src_y0)
        )
        if strip.shape[:2] != (n, out_w):
            strip = np.asarray(Image.fromarray(strip).resize((out_w, n), Image.Resampling.BOX))
        rgb[out_y : out_y + n] = strip
    downsample = lv.downsample * lv.width_px / out_w
    pixel_mm2 = (downsample * info.mpp_x / 1000) * (downsample * info.mpp_y / 1000)
    return LowRes(rgb, tissue_mask(rgb, pixel_mm2), downsample)
