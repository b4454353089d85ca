"""A small 3D U-Net for pneumonia-pattern opacity: a lung-windowed window
[N, 1, D, D, D] in, per-voxel logits [N, 1, D, D, D] out."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aidx.pipelines import onnx_export

WINDOW_VOXELS = 64


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


class CtNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        w = width
        self.enc1 = _block(1, w)
        self.enc2 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w))
        self.enc3 = nn.Sequential(_block(2 * w, 4 * w, 2), _block(4 * w, 4 * w))
        self.mid = _block(4 * w, 4 * w)
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.dec2 = _block(6 * w, 2 * w)
        self.dec1 = _block(3 * w, w)
        self.head = nn.Conv3d(w, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(image)
        e2 = self.enc2(e1)
        e3 = self.mid(self.enc3(e2))
        d2 = self.dec2(torch.cat([self.up(e3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], dim=1))
        return self.head(d1)


def export_onnx(model: nn.Module, path: str | Path, window: int = WINDOW_VOXELS) -> None:
    """Input `image` [N, 1, W, W, W], output `logits` [N, 1, W, W, W], dynamic N."""
    example = torch.zeros(2, 1, window, window, window)
    onnx_export.export_onnx(
        model, example, path, input_name="image", output_names=["logits"], max_batch=64
    )
