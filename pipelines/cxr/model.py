"""The demo chest X-ray network: a small CNN whose heatmap is its own classifier.

Input `image`: N x 1 x 224 x 224 float32 in [-1024, 1024], exactly what
`preprocess.to_model_input` returns, stacked on the batch axis.
Outputs:
- `cam`: N x 2 x 28 x 28, a class activation map in logit units per label; cell
  (i, j) covers model-input pixels [8i, 8i+8) x [8j, 8j+8).
- `logits`: N x 2, multi-label (apply a sigmoid per label), labels in `LABELS`
  order. Each logit is the smooth maximum of its map,
  logit = log(mean(exp(r * cam))) / r with r = `POOL_SHARPNESS`: a map that is
  x everywhere gives logit x, and one hot region can raise it, as a lesion should.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from aidx.pipelines import onnx_export

LABELS = ("Pneumonia", "Cardiomegaly")
INPUT_SIZE_PX = 224
CAM_SIZE = 28
CAM_STRIDE_PX = INPUT_SIZE_PX // CAM_SIZE  # 8 model-input pixels per cam cell
INPUT_RANGE = 1024.0
POOL_SHARPNESS = 4.0


def _conv(c_in: int, c_out: int, *, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CxrNet(nn.Module):
    """Five stride-2 stages (224 -> 7); the 28, 14 and 7 grids are fused at 28 x 28,
    so each cam cell sees both local texture and the whole chest."""

    def __init__(self, widths: tuple[int, int, int, int, int] = (16, 24, 32, 48, 64)) -> None:
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.stem = _conv(1, w1, stride=2, kernel=5)  # 112
        self.stage2 = nn.Sequential(_conv(w1, w2, stride=2), _conv(w2, w2))  # 56
        self.stage3 = nn.Sequential(_conv(w2, w3, stride=2), _conv(w3, w3))  # 28
        self.stage4 = nn.Sequential(_conv(w3, w4, stride=2), _conv(w4, w4))  # 14
        self.stage5 = nn.Sequential(_conv(w4, w5, stride=2), _conv(w5, w5))  # 7
        self.fuse = _conv(w3 + w4 + w5, 48, kernel=1)
        self.head = nn.Conv2d(48, len(LABELS), kernel_size=1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(image * (1.0 / INPUT_RANGE))
        f28 = self.stage3(self.stage2(x))
        f14 = self.stage4(f28)
        f7 = self.stage5(f14)
        size = (CAM_SIZE, CAM_SIZE)
        fused = torch.cat(
            [
                f28,
                F.interpolate(f14, size=size, mode="bilinear", align_corners=False),
                F.interpolate(f7, size=size, mode="bilinear", align_corners=False),
            ],
            dim=1,
        )
        cam = self.head(self.fuse(fused))
        return pool_cam(cam), cam


def pool_cam(cam: torch.Tensor) -> torch.Tensor:
    """N x K x H x W cam -> N x K logits: log-mean-exp with sharpness POOL_SHARPNESS."""
    r = POOL_SHARPNESS
    cells = cam.shape[-1] * cam.shape[-2]
    return (torch.logsumexp(cam.flatten(2) * r, dim=2) - math.log(cells)) / r


def build_model(seed: int) -> CxrNet:
    """A freshly initialised network; the same seed gives the same weights."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return CxrNet()
    finally:
        torch.random.set_rng_state(generator_state)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def export_onnx(model: nn.Module, path: str | Path) -> None:
    """Write `model` as ONNX: input `image`, outputs `logits` and `cam`, a dynamic
    batch axis on all three (pipelines/onnx_export.py)."""
    example = torch.zeros(2, 1, INPUT_SIZE_PX, INPUT_SIZE_PX)
    proto = onnx_export.export_onnx(
        model, example, path, input_name="image", output_names=["logits", "cam"], max_batch=1024
    )
    _check_signature(proto)


def _check_signature(proto: onnx.ModelProto) -> None:
    def dims(value: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = {v.name: dims(v) for v in proto.graph.input}
    outputs = {v.name: dims(v) for v in proto.graph.output}
    expected_in = {"image": [1, INPUT_SIZE_PX, INPUT_SIZE_PX]}
    expected_out = {"logits": [len(LABELS)], "cam": [len(LABELS), CAM_SIZE, CAM_SIZE]}
    for found, expected in ((inputs, expected_in), (outputs, expected_out)):
        for name, tail in expected.items():
            shape = found.get(name)
            if shape is None or shape[1:] != tail or not isinstance(shape[0], str):
                raise ValueError(f"exported ONNX has {name} shaped {shape}, want [batch, *{tail}]")
