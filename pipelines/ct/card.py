"""The CT model's config.pbtxt and card.md, written by the recipe."""

from __future__ import annotations

from typing import Any

from aidx.inference.model_card import FrontMatter, Label, Pipeline
from aidx.inference.model_card import render_card as render
from aidx.pipelines.ct.model import WINDOW_VOXELS

PNEUMONIA = {"name": "Pneumonia", "scheme": "SCT", "code": "233604007", "meaning": "Pneumonia"}

# the card's prose, filled by _body with the recipe and its held-out results
BODY = """\
# ct_pneumonia — DEMO WEIGHTS, NOT FOR CLINICAL USE

**These are demo weights, trained on synthetic chest-CT phantoms only. They have
never seen a real CT and must not be used for diagnosis, triage or any clinical
decision.** They exist so that the CT pipeline (series assembly, MONAI
preprocessing, sliding-window inference through the batcher, lesion measurement,
label map, key-slice overlays) runs end to end on a fresh machine.

## Intended use

Exercising and testing aidx: an axial chest CT series in, a voxel-wise
probability of pneumonia-pattern opacity (ground-glass or consolidation,
SNOMED CT 233604007) out, from which the pipeline builds a lesion list.

## Model

A small 3D U-Net (`aidx.pipelines.ct.model.CtNet`, two down-samplings, width 8,
ONNX opset 18, {size_mb:.2f} MB).
- Input `image`: N x 1 x {w} x {w} x {w} float32, a window of the volume as
  `aidx.pipelines.ct.preprocess.to_model_grid` returns it: RAS orientation,
  {recipe.spacing_mm} mm isotropic voxels, lung window (-1350..150 HU) scaled to 0..1.
- Output `logits`: N x 1 x {w} x {w} x {w}; probability = sigmoid(logit).
- `config.pbtxt` parameters: `spacing_mm`, `overlap` (sliding-window overlap,
  Gaussian blending), `sw_batch_size` (windows per batcher request),
  `min_lesion_ml` (smaller components are dropped), `min_lung_ml` (default 500:
  with less aerated lung inside the body the finding is not assessed, `no_lungs`).

## Training data

Synthetic phantoms from `aidx.pipelines.ct.synthetic.generate`: an elliptic body
(fat rim, soft tissue), two lungs at -850 HU, heart, spine, slanted ribs, trachea
and main bronchi, 18-30 vessels per lung fanning out from the hilum, Gaussian
noise (10-30 HU). Pneumonia: 0-4 lobulated blobs (one to three overlapping
ellipsoids, 7-28 mm), clipped to the lung, at -700..0 HU with texture (30 % of
scans have none). Each phantom is drawn at a random acquisition spacing
(in-plane 2.4-3.6 mm, slices 2.5-5 mm) and put through the serving
preprocessing. Phantom i of a split comes from `np.random.default_rng([split_seed, i])`.

| split | scans | split seed | use |
|---|---|---|---|
| train | {recipe.n_train} | {train_seed} | weights ({train_use}) |
| validation | {recipe.n_validation} | {val_seed} | threshold ({val_use}) |
| held-out | {recipe.n_heldout} | {heldout_seed} | the metrics below |

## Recipe

```
python -m aidx.pipelines.ct.train --out models/ct_pneumonia --seed 0
```

AdamW (one-cycle, peak {recipe.lr}), loss BCE + soft Dice, torch deterministic
algorithms on {recipe.threads} CPU threads; {minutes} minutes for
generation, training, export and evaluation. Versions: {versions}.

## Metrics (held-out synthetic phantoms, this ONNX file, onnxruntime)

Measured through the serving path's own code: sliding-window inference
({w}^3 windows, overlap {recipe.overlap}), threshold {t}, HU lung mask,
components under {recipe.min_volume_ml} mL dropped, on the {recipe.spacing_mm} mm grid.

| metric | value |
|---|---|
| scans / ground-truth lesions (>= {recipe.min_volume_ml} mL) | {m[scans]} / {m[lesions]} |
| Dice, all voxels pooled | {m[dice_global]} |
| Dice, mean over scans with pneumonia | {m[dice_mean_positive_scans]} |
| lesion-level sensitivity (any overlap) | {m[lesion_sensitivity]} |
| false-positive lesions per scan | {m[false_positives_per_scan]} |

## Limitations

- Synthetic domain only; real CT (other diseases, motion, contrast, real
  anatomy and texture, atelectasis, effusions) is out of distribution.
- A held-out set of {m[scans]} scans gives wide confidence intervals.
- {recipe.spacing_mm} mm voxels: lesions under about 1 mL are barely resolved;
  resampling has no anti-aliasing filter.
- Large dense consolidations (tens of mL near soft-tissue HU) are the weak spot:
  the model may segment only part of one, so its volume is underestimated.
- Lesions that touch are measured as one component (one lesion, summed volume).
- The probability is a segmentation score, not a calibrated risk.

## Replacing these weights

Keep the input/output names, a window size in `dims`, and set `spacing_mm` and
`overlap` in `config.pbtxt`; list the new file's sha256 and real metrics here.
"""


def render_config(recipe: Any) -> str:
    w = WINDOW_VOXELS
    params = {
        "spacing_mm": recipe.spacing_mm,
        "overlap": recipe.overlap,
        "sw_batch_size": 4,
        "min_lesion_ml": recipe.min_volume_ml,
    }
    lines = "\n".join(
        f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in params.items()
    )
    return f"""name: "ct_pneumonia"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {{
    name: "image"
    data_type: TYPE_FP32
    dims: [ 1, {w}, {w}, {w} ]
  }}
]
output [
  {{
    name: "logits"
    data_type: TYPE_FP32
    dims: [ 1, {w}, {w}, {w} ]
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: 2000
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy {{
    max_queue_size: 256
  }}
}}
instance_group [
  {{
    count: 1
    kind: KIND_AUTO
  }}
]
version_policy: {{ latest: {{ num_versions: 1 }} }}
{lines}
"""


def front_matter(recipe: Any, result: dict[str, Any], sha256: str) -> FrontMatter:
    m = result["heldout"]
    return FrontMatter(
        name="ct_pneumonia",
        version=1,
        pipeline=Pipeline.ct,
        demo_weights=True,
        files={"1/model.onnx": sha256},
        outputs={"logits": "logits"},
        labels=(Label(**PNEUMONIA, threshold=result["threshold"]),),
        metrics={"heldout_scans": m["scans"], "seed": 1000 * recipe.seed + 3, **m},
    )


def render_card(
    recipe: Any, result: dict[str, Any], sha256: str, size_bytes: int, versions: str
) -> str:
    return render(front_matter(recipe, result, sha256), _body(recipe, result, size_bytes, versions))


def _body(recipe: Any, result: dict[str, Any], size_bytes: int, versions: str) -> str:
    seed = 1000 * recipe.seed
    return BODY.format(
        recipe=recipe,
        m=result["heldout"],
        t=result["threshold"],
        w=WINDOW_VOXELS,
        size_mb=size_bytes / 1e6,
        train_seed=seed + 1,
        val_seed=seed + 2,
        heldout_seed=seed + 3,
        train_use=f"{recipe.steps} steps of {recipe.batch} patches of {recipe.patch}^3",
        val_use="best pooled Dice of 0.2, 0.3, ..., 0.6",
        minutes=result["minutes"],
        versions=versions,
    )
