"""The CXR demo model's card.md: front matter and prose, written by the recipe
(pipelines/cxr/train.py) through the one card renderer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aidx.inference.model_card import FrontMatter, Label, Pipeline
from aidx.inference.model_card import render_card as render

# the card's prose; the recipe fills its fields
BODY = """\
# cxr_pneumonia — DEMO WEIGHTS, NOT FOR CLINICAL USE

**These are demo weights, trained on synthetic phantoms only. They have never seen
a real radiograph and must not be used for diagnosis, triage or any clinical
decision.** They exist so that the chest X-ray pipeline, its heatmaps, findings
and PACS/EMR writeback run end to end on a fresh machine.

## Intended use

Exercising and testing aidx: a frontal (PA) chest radiograph in, two multi-label
findings out — Pneumonia (SNOMED CT 233604007) and Cardiomegaly (SNOMED CT
8186001) — each with a probability, a present/absent call at the threshold below,
and a class activation map that locates the evidence.

## Model

A small CNN (`aidx.pipelines.cxr.model.CxrNet`, {parameters:,} parameters, ONNX
opset {opset}, {size_mb:.2f} MB).
- Input `image`: N x 1 x 224 x 224 float32 in [-1024, 1024], exactly what
  `aidx.pipelines.cxr.preprocess.to_model_input` returns (centre square crop,
  area resize, torchxrayvision scaling), stacked on the batch axis.
- Output `logits`: N x 2, labels in `labels.txt` order (Pneumonia, Cardiomegaly);
  multi-label, probability = sigmoid(logit).
- Output `cam`: N x 2 x 28 x 28 in logit units; cell (i, j) covers model-input
  pixels [8i, 8i+8) x [8j, 8j+8). The logits are pooled from it,
  logit = log(mean(exp({sharpness:g} * cam))) / {sharpness:g} (a smooth maximum), so
  the heatmap is the classifier's own evidence, not a post-hoc explanation.

## Training data

Synthetic PA chest phantoms from `aidx.pipelines.cxr.synthetic.generate`: body,
lungs, arched ribs, clavicles, spine, mediastinum, a heart with cardiothoracic
ratio 0.38–0.50 (normal) or 0.56–0.68 (cardiomegaly), diaphragm domes, vessel
markings; random exposure, contrast, gamma, noise, rotation (±5°), offset, image
size (shorter side 256–1024 px) and aspect ratio (up to 1.3, portrait or
landscape). Pneumonia is one to three patchy, textured consolidations with
irregular borders (some bounded by a fissure, some faint) in a random lobe of
either lung. Labels are drawn independently: Pneumonia with probability
{prev_pneumonia}, Cardiomegaly with probability {prev_cardiomegaly}. Phantom i of a
split is drawn from `np.random.default_rng([split_seed, i])`.

| split | images | split seed | use |
|---|---|---|---|
| train | {train_images} | {train_seed} | weights |
| validation | {val_images} | {val_seed} | thresholds |
| held-out | {heldout_images} | {heldout_seed} | the metrics below |

## Recipe

```
python -m aidx.pipelines.cxr.train --out models/cxr_pneumonia --seed {seed}
```

{epochs} epochs of AdamW (one-cycle learning rate, peak {lr}, weight decay
{weight_decay}, batch {batch}) with torch deterministic algorithms on {threads} CPU
threads. Loss: binary cross-entropy on the two logits + {loc_weight} x per-cell
binary cross-entropy (positive weight {loc_pos_weight}) between the Pneumonia cam
and the fraction of each cam cell covered by the lesion mask, a weak localisation
signal that makes the heatmap peak inside the consolidation. The last epoch's
weights are exported. The whole recipe (generation, training, export, evaluation)
took {wall_min:.1f} minutes on 2 shared CPU cores, with
{versions}. The recipe is deterministic for a given machine and library versions;
others may change the file's bits (and so its sha256) slightly.

Last, the recipe calibrates the model's out-of-distribution gate on the same
splits (`calibrate_gate`, what `aidx models calibrate-ood cxr_pneumonia --synthetic
N` does; see *Out-of-distribution gate*). The reference file is rewritten (its zip
entries carry a timestamp) and so gets a new sha256 each run.

## Metrics (held-out synthetic phantoms, measured on this ONNX file with onnxruntime)

| label | positives | AUROC | threshold (probability) | sensitivity | specificity |
|---|---|---|---|---|---|
{metric_rows}
Localisation hit rate: the Pneumonia cam's hottest cell, mapped to original pixels
with `CropGeometry.to_original`, falls inside the ground-truth lesion mask dilated
by {dilation:g} model-input pixels (half a cam cell, i.e. {dilation:g} x crop scale
original pixels) in {hit_rate} of the {n_pneumonia} pneumonia-positive held-out
images ({hit_rate_undilated} without dilation). It is counted over all positive
images, whatever the model called.

## Threshold selection

Each label's threshold is the probability that maximises Youden's J
(sensitivity + specificity - 1) on the validation split; a finding is present
when probability >= threshold. The held-out split played no part in choosing it.

## Limitations

- Synthetic domain only. Real radiographs (devices, lines, positioning, other
  diseases, real anatomy and texture, lateral views, children) are out of
  distribution: the gate above says so on each report and their findings are not
  assessed; a site that sets `AIDX_OOD_POLICY=warn` gets meaningless scores under a
  warning.
- The phantoms are drawn to be learnable; the metrics say the pipeline works, not
  that the task is solved. Cardiomegaly in particular is easy here: the normal and
  enlarged cardiothoracic ratio ranges do not overlap (0.50 vs 0.56), so a
  near-perfect AUROC is expected and means little.
- Only the centre square of a non-square image is seen (the torchxrayvision
  contract); findings outside it are missed.
- No calibration beyond the threshold: probabilities are not risks.

## Replacing these weights with real ones

Keep the layout: `config.pbtxt`, `labels.txt`, `1/model.onnx` with the same input
and output names and shapes, and a new `card.md` listing the file's sha256,
thresholds chosen on a real validation set, and real metrics. An exported
torchxrayvision DenseNet takes the same input (`aidx models export-xrv`).
Set `demo_weights: false` only for weights validated on real data.
"""


def front_matter(
    sha256: str, labels: tuple[Label, ...], metrics: Mapping[str, Any], version: int = 1
) -> FrontMatter:
    return FrontMatter(
        name="cxr_pneumonia",
        version=version,
        pipeline=Pipeline.cxr,
        demo_weights=True,
        files={f"{version}/model.onnx": sha256},
        outputs={"logits": "logits", "cam": "cam"},
        labels=labels,
        metrics=dict(metrics),
    )


def render_card(front: FrontMatter, **values: Any) -> str:
    """card.md: `front` as YAML, then BODY filled with `values` (see BODY's fields)."""
    return render(front, BODY.format(**values))
