"""The demo tile classifier: a small CNN that takes RGB tiles as OpenSlide gives them
(uint8, N x 256 x 256 x 3, 0.5 um/px) and says how suspicious each one looks.

The uint8-to-float conversion and normalisation are part of the graph, so the
service ships 4x fewer bytes per tile through the batcher than float input would,
and nothing outside the model needs to know its normalisation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aidx.pipelines import onnx_export

TILE_PX = 256
TILE_MPP = 0.5
INPUT = "tile"
OUTPUT = "probabilities"
_MEAN = (0.80, 0.60, 0.85)  # about the synthetic H&E's mean colour
_STD = (0.15, 0.20, 0.12)


def _block(c_in: int, c_out: int, kernel: int = 3, stride: int = 2) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            c_in,
            c_out,
            kernel,
            stride=stride,
            padding=(kernel - 1) // 2 if kernel % 2 else 0,
            bias=False,
        ),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TileNet(nn.Module):
    """A 4 x 4 stride-4 stem (256 -> 64 px, 2 um per cell: a normal nucleus spans
    about two cells, a suspicious one three to five), three stride-2 conv blocks
    (-> 8 px), then mean and max pooling: the mean sees how crowded the nuclei are,
    the max the most atypical spot."""

    def __init__(self, widths: tuple[int, ...] = (24, 32, 48, 64)) -> None:
        super().__init__()
        layers, c_in = [_block(3, widths[0], kernel=4, stride=4)], widths[0]
        for width in widths[1:]:
            layers.append(_block(c_in, width))
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c_in, 1)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1) * 255)

    def logits(self, tile: torch.Tensor) -> torch.Tensor:
        """uint8 or float N x H x W x 3 in 0..255 -> N x 1 logits."""
        x = tile.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        x = self.features(x)
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        out: torch.Tensor = self.head(pooled)
        return out

    def forward(self, tile: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(tile))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def export_onnx(model: TileNet, path: Path) -> None:
    """Write the model as ONNX: `tile` uint8 [N, 256, 256, 3] -> `probabilities`
    float32 [N, 1], a dynamic batch axis (pipelines/onnx_export.py)."""
    example = torch.zeros(2, TILE_PX, TILE_PX, 3, dtype=torch.uint8)
    proto = onnx_export.export_onnx(
        model, example, path, input_name=INPUT, output_names=[OUTPUT], max_batch=4096
    )
    (tile,) = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in tile.type.tensor_type.shape.dim]
    if tile.name != INPUT or dims[1:] != [TILE_PX, TILE_PX, 3] or not isinstance(dims[0], str):
        raise ValueError(f"exported input is {tile.name} {dims}, not {INPUT} [N, 256, 256, 3]")
