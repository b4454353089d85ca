"""Sliding-window inference (MONAI) over the model grid. The predictor is any
function from a window batch [n, 1, W, W, W] to logits of the same shape: the
service's dynamic batcher when serving, onnxruntime directly in the recipe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference

Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class WindowConfig:
    roi_voxels: int = 64
    overlap: float = 0.25
    sw_batch_size: int = 4
    spacing_mm: float = 3.0


def probability_map(image: np.ndarray, predict: Predictor, config: WindowConfig) -> np.ndarray:
    """image [1, X, Y, Z] -> probability [X, Y, Z] (sigmoid of the blended logits)."""

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(windows.numpy(), dtype=np.float32)
        return torch.from_numpy(np.asarray(predict(batch), dtype=np.float32))

    with torch.no_grad():
        logits = sliding_window_inference(
            torch.from_numpy(image[None]),
            roi_size=(config.roi_voxels,) * 3,
            sw_batch_size=config.sw_batch_size,
            predictor=predictor,
            overlap=config.overlap,
            mode="gaussian",
            padding_mode="replicate",
        )
    assert isinstance(logits, torch.Tensor)  # one output, not a tuple or dict
    out: np.ndarray = torch.sigmoid(logits[0, 0]).numpy()
    return out
