"""Display-ready radiograph -> model tensor, the torchxrayvision contract.

One function serves training and serving, so the demo model sees at serve time
exactly what it saw in training, and an exported torchxrayvision DenseNet drops in:
a 1 x 224 x 224 float32 tensor, centre-cropped to a square, values in [-1024, 1024].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MODEL_SIZE_PX = 224
XRV_RANGE = 1024.0


@dataclass(frozen=True)
class CropGeometry:
    """Where the model's 224 x 224 square lies in the original image's pixels."""

    row0: int
    col0: int
    side_px: int

    @property
    def scale(self) -> float:
        """Original pixels per model pixel."""
        return self.side_px / MODEL_SIZE_PX

    def to_original(self, row: float, col: float) -> tuple[float, float]:
        """Model-grid coordinates (224 grid) to original-image pixel coordinates."""
        return self.row0 + row * self.scale, self.col0 + col * self.scale


def centre_square(shape: tuple[int, int]) -> CropGeometry:
    rows, cols = shape
    side = min(rows, cols)
    return CropGeometry(row0=(rows - side) // 2, col0=(cols - side) // 2, side_px=side)


def to_model_input(image01: np.ndarray) -> tuple[np.ndarray, CropGeometry]:
    """A display-ready image in [0, 1] (bright = dense, MONOCHROME2 sense) to the
    model tensor (1 x 224 x 224, float32, [-1024, 1024]) and the crop it came from."""
    if image01.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image01.shape}")
    geometry = centre_square(image01.shape)  # type: ignore[arg-type]
    square = image01[
        geometry.row0 : geometry.row0 + geometry.side_px,
        geometry.col0 : geometry.col0 + geometry.side_px,
    ]
    tensor = torch.from_numpy(np.ascontiguousarray(square, dtype=np.float32))[None, None]
    # Area averaging is the anti-aliased downsampling torchxrayvision's resizer does.
    resized = F.interpolate(tensor, size=(MODEL_SIZE_PX, MODEL_SIZE_PX), mode="area")
    scaled = (resized[0].clamp(0.0, 1.0) * 2.0 - 1.0) * XRV_RANGE
    return scaled.numpy().astype(np.float32), geometry
