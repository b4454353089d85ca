"""Write a torchxrayvision DenseNet into the model repository layout, so real
weights drop in where the demo weights are (same preprocessing contract: 1 x 224 x
224 in [-1024, 1024]). Needs the optional extra `aidx[xrv]`.

No weights can be downloaded here: `weights=None` gives an untrained network (useful
to check the plumbing, useless clinically: its card says so); pass a local
state_dict file for real weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aidx.inference.model_card import FrontMatter, Label, Pipeline, render_card
from aidx.inference.repository import sha256_file

# torchxrayvision's 18 outputs, in order, with SNOMED CT codes where an exact concept
# exists; the rest carry local codes (scheme 99AIDX) rather than a guessed SNOMED code.
XRV_LABELS: list[tuple[str, str, str]] = [
    ("Atelectasis", "SCT", "46621007"),
    ("Consolidation", "SCT", "95436008"),
    ("Infiltration", "SCT", "409609008"),
    ("Pneumothorax", "SCT", "36118008"),
    ("Edema", "SCT", "19242006"),
    ("Emphysema", "SCT", "87433001"),
    ("Fibrosis", "SCT", "51615001"),
    ("Effusion", "SCT", "60046008"),
    ("Pneumonia", "SCT", "233604007"),
    ("Pleural_Thickening", "99AIDX", "xrv-pleural-thickening"),
    ("Cardiomegaly", "SCT", "8186001"),
    ("Nodule", "SCT", "786838002"),
    ("Mass", "99AIDX", "xrv-mass"),
    ("Hernia", "SCT", "84089009"),
    ("Lung Lesion", "99AIDX", "xrv-lung-lesion"),
    ("Fracture", "SCT", "125605004"),
    ("Lung Opacity", "99AIDX", "xrv-lung-opacity"),
    ("Enlarged Cardiomediastinum", "99AIDX", "xrv-enlarged-cardiomediastinum"),
]

CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 32
input [ {{ name: "image" data_type: TYPE_FP32 dims: [ 1, 224, 224 ] }} ]
output [ {{ name: "probabilities" data_type: TYPE_FP32 dims: [ {n} ] }} ]
dynamic_batching {{
  # A batch takes ~0.25 s on 2 CPU cores: waiting up to 20 ms for a fuller one
  # costs little, and lets requests that arrive while the cores are busy join.
  max_queue_delay_microseconds: 20000
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy {{ max_queue_size: 64 }}
}}
# Measured on 2 CPU cores (benchmarks/batching.py): one session runs 64-70 images/s
# from batch 4 to 32, so a batch as large as the clients in flight costs nothing and
# keeps each to one batch's wait. Two single-threaded copies reach ~76/s at high
# load but halve the speed of a lone request, so one copy; on a GPU, measure there.
instance_group [ {{ count: 1 kind: KIND_AUTO }} ]
"""


class _WithSigmoid(torch.nn.Module):
    """torchxrayvision applies op_norm for its own weights; otherwise a sigmoid."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.model(image)
        return out if getattr(self.model, "op_threshs", None) is not None else torch.sigmoid(out)


def _card(name: str, digest: str, weights: Path | None) -> str:
    front = FrontMatter(
        name=name,
        version=1,
        pipeline=Pipeline.cxr,
        demo_weights=weights is None,
        files={"1/model.onnx": digest},
        outputs={"probabilities": "probabilities"},
        labels=tuple(
            Label(name=n, scheme=s, code=c, meaning=n, threshold=0.5) for n, s, c in XRV_LABELS
        ),
        metrics={},
    )
    origin = f"local weights file `{weights.name}`" if weights else "NO weights (untrained)"
    warning = "UNTRAINED: outputs are meaningless; use it only to check the plumbing. "
    return render_card(
        front,
        f"""\
# {name}: torchxrayvision DenseNet-121

Exported by `aidx models export-xrv` from {origin}.
{warning if weights is None else ""}\
Not validated by aidx: measure AUROC and calibrate each threshold (0.5 here) on your
own data before any use. Inputs follow torchxrayvision's contract, which aidx's CXR
preprocessing produces: 1 x 224 x 224, centre crop, values in [-1024, 1024].
Labels without an exact SNOMED CT concept carry local codes (scheme 99AIDX).
""",
    )


def export_xrv(directory: Path, *, weights: Path | None = None) -> Path:
    import torchxrayvision as xrv  # optional extra: aidx[xrv]

    model = xrv.models.DenseNet(weights=None)
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    path = directory / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        _WithSigmoid(model),
        (torch.zeros(1, 1, 224, 224),),
        str(path),
        input_names=["image"],
        output_names=["probabilities"],
        dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    name = directory.name
    (directory / "config.pbtxt").write_text(CONFIG.format(name=name, n=len(XRV_LABELS)))
    (directory / "card.md").write_text(_card(name, sha256_file(path), weights))
    return path
