"""Synthetic PA chest radiographs (phantoms) with known labels and lesion masks.

The phantoms train and test the demo weights and feed the service's tests and
benchmarks. They are drawings, not patients: a soft-tissue body, two air-filled
lungs, ribs, clavicles, spine and mediastinum, a heart whose cardiothoracic ratio
(CTR) is 0.38-0.50 when normal and 0.56-0.68 with cardiomegaly, two diaphragm
domes, vessel markings, and, with pneumonia, one to three patchy consolidations
inside the lung fields. Exposure, contrast, gamma, noise, rotation, offset, image
size and aspect ratio vary. Everything is drawn analytically in a body frame
(units: half the shorter image side), so one draw takes a few milliseconds.

Orientation is that of a PA radiograph: the patient's right is on the image's left.
The anatomy is drawn in `synthetic_anatomy`; `synthetic_dicom` writes a phantom as
a CR file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aidx.pipelines.cxr.synthetic_anatomy import (
    BodyFrame,
    Thorax,
    anatomy,
    consolidations,
    expose,
    resize,
    work_shape,
)

THORAX_WIDTH_MM = 290.0  # inner rib-to-rib width the pixel spacing is derived from


@dataclass(frozen=True)
class SyntheticCxr:
    """One phantom: the display-ready image, its ground truth and its geometry."""

    image01: np.ndarray  # float32 (rows, cols) in [0, 1], bright = dense (MONOCHROME2)
    pneumonia_mask: np.ndarray  # bool (rows, cols); all False without pneumonia
    lung_mask: np.ndarray  # bool (rows, cols): the visible lung fields
    pneumonia: bool
    cardiomegaly: bool
    cardiothoracic_ratio: float
    pixel_spacing_mm: tuple[float, float]  # (row spacing, column spacing)

    @property
    def labels(self) -> dict[str, bool]:
        return {"Pneumonia": self.pneumonia, "Cardiomegaly": self.cardiomegaly}


def sample_size_px(
    rng: np.random.Generator, *, min_px: int = 256, max_px: int = 1024
) -> tuple[int, int]:
    """A random (rows, cols): shorter side log-uniform in [min_px, max_px], aspect
    ratio 1 about a third of the time, otherwise portrait or landscape up to 1.3."""
    short = float(np.exp(rng.uniform(np.log(min_px), np.log(max_px))))
    aspect = 1.0 if rng.random() < 0.35 else float(rng.uniform(1.05, 1.3))
    long = min(short * aspect, max_px * 1.3)
    shape = (round(long), round(short)) if rng.random() < 0.6 else (round(short), round(long))
    return int(shape[0]), int(shape[1])


def generate(
    rng: np.random.Generator,
    *,
    size_px: tuple[int, int] = (512, 512),
    pneumonia: bool,
    cardiomegaly: bool,
) -> SyntheticCxr:
    """Draw one PA chest phantom of `size_px` = (rows, cols) from `rng`."""
    rows, cols = int(size_px[0]), int(size_px[1])
    if rows < 64 or cols < 64:
        raise ValueError(f"size_px must be at least 64 x 64, got {size_px}")
    work = work_shape(rows, cols)
    frame = BodyFrame.draw(rng, (rows, cols), work)
    thorax = Thorax.draw(rng, cardiomegaly=cardiomegaly)
    density, lung_soft = anatomy(rng, frame, thorax)
    core = np.full(work, -1.0, dtype=np.float32)  # > 0 inside a consolidation
    if pneumonia:
        opacity, core = consolidations(rng, frame, thorax, lung_soft)
        density += opacity
    density, lung_soft, core = resize((density, lung_soft, core), (rows, cols))
    lung_mask = lung_soft > 0.5
    pneumonia_mask = (core > 0) & lung_mask
    if pneumonia and not pneumonia_mask.any():  # a sliver lost in resampling
        pneumonia_mask = (core >= core.max()) & lung_mask
    image = expose(rng, density)
    spacing = THORAX_WIDTH_MM / (thorax.width * frame.scale_px)
    return SyntheticCxr(
        image01=image,
        pneumonia_mask=pneumonia_mask,
        lung_mask=lung_mask,
        pneumonia=bool(pneumonia),
        cardiomegaly=bool(cardiomegaly),
        cardiothoracic_ratio=thorax.ctr,
        pixel_spacing_mm=(round(spacing, 4), round(spacing, 4)),
    )
