"""Model outputs -> findings, hot regions in original pixels, and the overlay image."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from aidx.inference.model_card import Label
from aidx.inference.reports import Coding, Finding, Region
from aidx.pipelines.cxr.preprocess import MODEL_SIZE_PX, CropGeometry

REGION_FRACTION_OF_PEAK = 0.5  # a region is where heat >= half of the map's peak
MAX_REGIONS = 3
OVERLAY_MAX_SIDE_PX = 1024
HEAT_FLOOR = 0.35


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def normalised_heat(cam: np.ndarray) -> np.ndarray:
    """One label's activation map scaled to 0..1 over its own range."""
    lo, hi = float(cam.min()), float(cam.max())
    return (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)


def hot_regions(heat: np.ndarray, geometry: CropGeometry) -> list[Region]:
    """Connected areas of high heat, largest peak first, as boxes in original pixels."""
    cell = MODEL_SIZE_PX / heat.shape[0]
    labelled, count = ndimage.label(heat >= REGION_FRACTION_OF_PEAK)
    regions = []
    for index, box in enumerate(ndimage.find_objects(labelled), start=1):
        if box is None:
            continue
        component = np.where(labelled[box] == index, heat[box], -1.0)
        peak_r, peak_c = np.unravel_index(int(np.argmax(component)), component.shape)
        y0, x0 = geometry.to_original(box[0].start * cell, box[1].start * cell)
        y1, x1 = geometry.to_original(box[0].stop * cell, box[1].stop * cell)
        py, px = geometry.to_original(
            (box[0].start + peak_r + 0.5) * cell, (box[1].start + peak_c + 0.5) * cell
        )
        regions.append(
            Region(
                x_min_px=round(x0, 1),
                y_min_px=round(y0, 1),
                x_max_px=round(x1, 1),
                y_max_px=round(y1, 1),
                peak_x_px=round(px, 1),
                peak_y_px=round(py, 1),
                peak_heat=round(float(component.max()), 4),
            )
        )
    regions.sort(key=lambda r: r.peak_heat, reverse=True)
    return regions[:MAX_REGIONS]


def findings(
    probabilities: np.ndarray,
    cam: np.ndarray | None,
    labels: tuple[Label, ...],
    geometry: CropGeometry,
) -> list[Finding]:
    """One finding per label; regions only for findings present at their threshold."""
    if len(probabilities) != len(labels):
        raise ValueError(
            f"model gave {len(probabilities)} outputs; its card has {len(labels)} labels"
        )
    result = []
    for i, label in enumerate(labels):
        probability = float(probabilities[i])
        present = probability >= label.threshold
        regions = []
        if present and cam is not None:
            regions = hot_regions(normalised_heat(cam[i]), geometry)
        result.append(
            Finding(
                concept=Coding(scheme=label.scheme, code=label.code, meaning=label.meaning),
                probability=round(probability, 6),
                threshold=label.threshold,
                present=present,
                regions=regions,
            )
        )
    return result


def _jet_lut() -> np.ndarray:
    """A blue-cyan-yellow-red ramp as a 256 x 3 uint8 lookup table."""
    x = np.linspace(0.0, 1.0, 256)
    anchors = np.array([0.0, 0.35, 0.65, 1.0])
    colours = np.array([[0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]], float)
    return np.stack([np.interp(x, anchors, colours[:, c]) for c in range(3)], axis=-1)


JET = _jet_lut().astype(np.float32)


def overlay_scale(shape: tuple[int, ...]) -> float:
    """Overlay pixels per original pixel: the original size, capped at OVERLAY_MAX_SIDE_PX."""
    return min(1.0, OVERLAY_MAX_SIDE_PX / max(shape))


def overlay_grey(image01: np.ndarray) -> np.ndarray:
    """The radiograph at overlay size as uint8 grey: all the overlay needs of the image."""
    scale = overlay_scale(image01.shape)
    size = (round(image01.shape[1] * scale), round(image01.shape[0] * scale))
    grey = Image.fromarray((image01 * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(grey)


def _heat_patch(
    cam: np.ndarray | None, geometry: CropGeometry, scale: float, shape: tuple[int, int]
) -> tuple[np.ndarray, int, int]:
    """The normalised map resized onto the model's crop (as much of it as lies inside
    an overlay of `shape`), and the overlay row and column of its corner."""
    if cam is None:
        cam = np.zeros((1, 1), np.float32)
    side = max(1, round(geometry.side_px * scale))
    heat_img = Image.fromarray(normalised_heat(cam).astype(np.float32)).resize(
        (side, side), Image.Resampling.BILINEAR
    )
    rows, cols = shape
    r0, c0 = round(geometry.row0 * scale), round(geometry.col0 * scale)
    return np.asarray(heat_img, dtype=np.float32)[: rows - r0, : cols - c0], r0, c0


def _heat_on_overlay(
    cam: np.ndarray | None, geometry: CropGeometry, scale: float, shape: tuple[int, int]
) -> np.ndarray:
    """The normalised map resized onto the model's crop, zero outside it."""
    patch, r0, c0 = _heat_patch(cam, geometry, scale, shape)
    heat = np.zeros(shape, np.float32)
    heat[r0 : r0 + patch.shape[0], c0 : c0 + patch.shape[1]] = patch
    return heat


def _opacity(heat: np.ndarray, probability: float) -> np.ndarray:
    """The heat's opacity, 0..0.6: below HEAT_FLOOR the map stays transparent (a tinted
    lung everywhere hides detail), above it scaled by the probability."""
    visible = np.clip((heat - HEAT_FLOOR) / (1.0 - HEAT_FLOOR), 0.0, 1.0)
    return 0.6 * probability * visible


def _nonzero_box(values: np.ndarray) -> tuple[slice, slice] | None:
    """The smallest box of rows and columns that holds every non-zero value."""
    rows = np.flatnonzero(values.any(axis=1))
    if not rows.size:
        return None
    cols = np.flatnonzero(values.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _blend(region: np.ndarray, heat: np.ndarray, alpha: np.ndarray) -> None:
    """`region` (grey RGB uint8) blended in place with the heat's colours at `alpha`:
    grey * (1 - alpha) + colour * alpha in float32, truncated to uint8. The grey term
    is the same in the three channels, so it is computed once; the colour, a channel
    at a time from the ramp's column."""
    index = (np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8)
    grey_part = region[..., 0].astype(np.float32)
    grey_part *= 1 - alpha
    for channel in range(3):
        blended = JET[:, channel].take(index)
        blended *= alpha
        blended += grey_part
        region[..., channel] = np.clip(blended, 0, 255, out=blended)  # truncated, as astype


def render_overlay_rgb(
    grey: np.ndarray,
    cam: np.ndarray | None,
    probability: float,
    geometry: CropGeometry,
    scale: float,
    boxes_px: np.ndarray,
) -> np.ndarray:
    """The radiograph (`grey`, at overlay size) with the label's heatmap over the
    model's crop and the hot regions' boxes (`boxes_px`: [n, 4] x0, y0, x1, y1 in
    original pixels, `scale` overlay pixels per original pixel), as RGB uint8.

    Opacity scales with the probability, so a confident negative shows almost no
    colour instead of a misleading relative hot spot.
    """
    rgb = np.repeat(grey[..., None], 3, axis=2)
    patch, r0, c0 = _heat_patch(cam, geometry, scale, (int(grey.shape[0]), int(grey.shape[1])))
    alpha = _opacity(patch, probability)
    # Blended only in the box around the colour: where the opacity is 0 the float
    # blend gives the grey back exactly, so outside that box the image is the grey.
    tinted = _nonzero_box(alpha)
    if tinted is not None:
        rows, cols = tinted
        region = rgb[r0 : r0 + patch.shape[0], c0 : c0 + patch.shape[1]][rows, cols]
        _blend(region, patch[rows, cols], alpha[rows, cols])
    out = Image.fromarray(rgb)
    draw = ImageDraw.Draw(out)
    for box in boxes_px:
        draw.rectangle([float(v) * scale for v in box], outline=(255, 255, 255), width=2)
    return np.asarray(out)


def render_heat_rgba(
    shape: tuple[int, int],
    cam: np.ndarray | None,
    probability: float,
    geometry: CropGeometry,
    scale: float,
    boxes_px: np.ndarray,
) -> np.ndarray:
    """The heatmap and the hot regions' boxes alone, as RGBA uint8 over a transparent
    image of the overlay's `shape`: the review workspace lays it over the radiograph
    with its own opacity. The alpha is the overlay's (scaled by the probability), so
    full opacity there shows what the blended overlay shows."""
    heat = _heat_on_overlay(cam, geometry, scale, shape)
    visible = np.clip((heat - HEAT_FLOOR) / (1.0 - HEAT_FLOOR), 0.0, 1.0)
    alpha = (255 * 0.6 * probability * visible).astype(np.uint8)
    colour = JET[(np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8)].astype(np.uint8)
    out = Image.fromarray(np.dstack([colour, alpha]), mode="RGBA")
    draw = ImageDraw.Draw(out)
    for box in boxes_px:
        draw.rectangle([float(v) * scale for v in box], outline=(255, 255, 255, 255), width=2)
    return np.asarray(out)


def encode_png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)  # speed: a preview
    return buffer.getvalue()
