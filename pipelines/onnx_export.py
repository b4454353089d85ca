"""Demo models to ONNX, one way for every pipeline: torch's dynamo exporter, a dynamic
batch axis on the single input, the weights inside the file, checked with onnx.checker."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

ONNX_OPSET = 18


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    input_name: str,
    output_names: Sequence[str],
    max_batch: int,
) -> onnx.ModelProto:
    """Write `model` (in eval mode; its training mode is restored) to `path` and return
    the checked ONNX graph. `example`'s first axis is the batch (2 or more, so the
    exporter cannot specialise it to 1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=list(output_names),
            opset_version=ONNX_OPSET,
            dynamic_shapes={input_name: {0: torch.export.Dim("batch", min=1, max=max_batch)}},
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    finally:
        model.train(was_training)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    return proto
