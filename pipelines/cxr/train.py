"""Deterministic recipe for the demo chest X-ray weights (synthetic phantoms only).

    python -m aidx.pipelines.cxr.train --out models/cxr_pneumonia --seed 0

Every phantom is drawn from its own generator, `np.random.default_rng([split_seed,
index])`, so a split is reproducible image by image and in any order. With
`--seed S` the splits use seeds 1000*S + 1 (train), + 2 (validation: thresholds)
and + 3 (held-out: the card's metrics). Images go through
`preprocess.to_model_input`, the function the service uses. The held-out metrics
are measured on the exported ONNX file with onnxruntime, i.e. on what ships.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aidx.pipelines.cxr import synthetic
from aidx.pipelines.cxr.model import (
    CAM_SIZE,
    CAM_STRIDE_PX,
    LABELS,
    POOL_SHARPNESS,
    build_model,
    count_parameters,
    export_onnx,
)
from aidx.pipelines.cxr.preprocess import CropGeometry, to_model_input
from aidx.pipelines.metrics import auroc, sensitivity_specificity, youden_threshold
from aidx.pipelines.onnx_export import ONNX_OPSET

PREVALENCE = {"Pneumonia": 0.5, "Cardiomegaly": 0.4}
LABEL_CODES = {"Pneumonia": "233604007", "Cardiomegaly": "8186001"}  # SNOMED CT
SPLIT_OFFSETS = {"train": 1, "val": 2, "heldout": 3}
HIT_DILATION_MODEL_PX = 4.0  # half a cam cell; in original pixels x geometry.scale
LOCALISATION_WEIGHT = 1.0
LOCALISATION_POS_WEIGHT = 10.0  # lesion cells are few: weigh them up in the per-cell loss

RunFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # images -> (logits, cam)


@dataclass(frozen=True)
class Case:
    """One phantom as the model sees it, with the ground truth needed to score it."""

    image: np.ndarray  # 1 x 224 x 224 float32, [-1024, 1024]
    labels: np.ndarray  # float32 [len(LABELS)], 1 = present
    geometry: CropGeometry
    cam_target: np.ndarray  # float32 28 x 28: fraction of each cam cell inside the lesion
    pneumonia_mask: np.ndarray | None  # original pixels; None without pneumonia


def split_seed(seed: int, split: str) -> int:
    return 1000 * seed + SPLIT_OFFSETS[split]


def draw_sample(split_seed_: int, index: int) -> synthetic.SyntheticCxr:
    """Phantom `index` of the split with seed `split_seed_`: labels drawn at
    PREVALENCE, image size from `synthetic.sample_size_px`."""
    rng = np.random.default_rng([split_seed_, index])
    pneumonia = bool(rng.random() < PREVALENCE["Pneumonia"])
    cardiomegaly = bool(rng.random() < PREVALENCE["Cardiomegaly"])
    size = synthetic.sample_size_px(rng)
    return synthetic.generate(rng, size_px=size, pneumonia=pneumonia, cardiomegaly=cardiomegaly)


def make_case(sample: synthetic.SyntheticCxr) -> Case:
    image, geometry = to_model_input(sample.image01)
    g = geometry
    crop = sample.pneumonia_mask[g.row0 : g.row0 + g.side_px, g.col0 : g.col0 + g.side_px]
    target = F.adaptive_avg_pool2d(torch.from_numpy(crop.astype(np.float32))[None], CAM_SIZE)
    labels = np.array([sample.labels[name] for name in LABELS], dtype=np.float32)
    return Case(
        image=image,
        labels=labels,
        geometry=geometry,
        cam_target=target[0].numpy(),
        pneumonia_mask=sample.pneumonia_mask if sample.pneumonia else None,
    )


def _case_job(job: tuple[int, int]) -> Case:
    return make_case(draw_sample(*job))


def _worker_init() -> None:
    torch.set_num_threads(1)


def make_cases(seed_: int, n: int, *, workers: int = 1) -> list[Case]:
    """Cases 0..n-1 of the split with seed `seed_`, in order (the same for any
    number of workers)."""
    jobs = [(seed_, i) for i in range(n)]
    if workers <= 1:
        return [_case_job(job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
        return list(pool.imap(_case_job, jobs, chunksize=16))


# --- metrics ----------------------------------------------------------------------


def peak_in_mask(
    cam: np.ndarray, geometry: CropGeometry, mask: np.ndarray, radius_px: float
) -> bool:
    """Whether the cam's hottest cell, mapped to original pixels, lies within
    `radius_px` of the mask (the mask dilated by a disc of that radius)."""
    i, j = np.unravel_index(int(np.argmax(cam)), cam.shape)
    row, col = geometry.to_original((i + 0.5) * CAM_STRIDE_PX, (j + 0.5) * CAM_STRIDE_PX)
    r = int(np.ceil(radius_px))
    r0, c0 = max(0, int(round(row)) - r), max(0, int(round(col)) - r)
    window = mask[r0 : int(round(row)) + r + 1, c0 : int(round(col)) + r + 1]
    rr, cc = np.nonzero(window)
    return bool(np.any((rr + r0 - row) ** 2 + (cc + c0 - col) ** 2 <= radius_px**2 + 0.5))


def run_in_batches(
    run: RunFn, cases: Sequence[Case], batch: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    logits, cams = [], []
    for start in range(0, len(cases), batch):
        images = np.stack([c.image for c in cases[start : start + batch]])
        out_logits, out_cam = run(images)
        logits.append(out_logits)
        cams.append(out_cam)
    return np.concatenate(logits), np.concatenate(cams)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def evaluate(run: RunFn, cases: Sequence[Case], thresholds: dict[str, float]) -> dict:
    """Per-label AUROC and sensitivity/specificity at `thresholds` (probabilities),
    and the Pneumonia localisation hit rate (mask dilated by HIT_DILATION_MODEL_PX
    model pixels) over pneumonia-positive cases; `..._undilated` without dilation."""
    logits, cams = run_in_batches(run, cases)
    probabilities = sigmoid(logits)
    labels = np.stack([c.labels for c in cases])
    metrics: dict = {"auroc": {}, "sensitivity": {}, "specificity": {}}
    for k, name in enumerate(LABELS):
        metrics["auroc"][name] = auroc(probabilities[:, k], labels[:, k])
        sens, spec = sensitivity_specificity(probabilities[:, k], labels[:, k], thresholds[name])
        metrics["sensitivity"][name], metrics["specificity"][name] = sens, spec
    hits, hits_undilated = [], []
    p = LABELS.index("Pneumonia")
    for case, cam in zip(cases, cams, strict=True):
        if case.pneumonia_mask is None:
            continue
        radius = HIT_DILATION_MODEL_PX * case.geometry.scale
        hits.append(peak_in_mask(cam[p], case.geometry, case.pneumonia_mask, radius))
        hits_undilated.append(peak_in_mask(cam[p], case.geometry, case.pneumonia_mask, 0.0))
    metrics["localisation_hit_rate"] = float(np.mean(hits))
    metrics["localisation_hit_rate_undilated"] = float(np.mean(hits_undilated))
    metrics["n"] = len(cases)
    metrics["n_positive"] = {name: int(labels[:, k].sum()) for k, name in enumerate(LABELS)}
    return metrics


def onnx_runner(path: str | Path) -> RunFn:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, cam = session.run(["logits", "cam"], {"image": images.astype(np.float32)})
        return logits, cam

    return run


def torch_runner(model: torch.nn.Module) -> RunFn:
    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        model.eval()
        with torch.no_grad():
            logits, cam = model(torch.from_numpy(images))
        return logits.numpy(), cam.numpy()

    return run


# --- training ---------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    seed: int = 0
    train_images: int = 3000
    val_images: int = 600
    heldout_images: int = 1000
    epochs: int = 12
    batch: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    threads: int = 2


def train_model(recipe: Recipe, train: Sequence[Case], val: Sequence[Case]) -> torch.nn.Module:
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.seed)
    images = torch.from_numpy(np.stack([c.image for c in train]))
    labels = torch.from_numpy(np.stack([c.labels for c in train]))
    targets = torch.from_numpy(np.stack([c.cam_target for c in train]))
    steps_per_epoch = (len(train) + recipe.batch - 1) // recipe.batch
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=0.15
    )
    order_rng = torch.Generator().manual_seed(recipe.seed)
    p = LABELS.index("Pneumonia")
    pos_weight = torch.tensor(LOCALISATION_POS_WEIGHT)
    for epoch in range(recipe.epochs):
        model.train()
        started, total = time.perf_counter(), 0.0
        for idx in torch.randperm(len(train), generator=order_rng).split(recipe.batch):
            logits, cam = model(images[idx])
            loss = F.binary_cross_entropy_with_logits(logits, labels[idx])
            loss = loss + LOCALISATION_WEIGHT * F.binary_cross_entropy_with_logits(
                cam[:, p], targets[idx], pos_weight=pos_weight
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        val_logits, _ = run_in_batches(torch_runner(model), val)
        val_labels = np.stack([c.labels for c in val])
        aurocs = [auroc(val_logits[:, k], val_labels[:, k]) for k in range(len(LABELS))]
        print(
            f"epoch {epoch + 1:2d}/{recipe.epochs} loss {total / len(train):.4f} "
            f"val AUROC {' '.join(f'{n}={a:.4f}' for n, a in zip(LABELS, aurocs, strict=True))} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return model.eval()


def pick_thresholds(run: RunFn, val: Sequence[Case]) -> dict[str, float]:
    logits, _ = run_in_batches(run, val)
    probabilities = sigmoid(logits)
    labels = np.stack([c.labels for c in val])
    return {
        name: round(youden_threshold(probabilities[:, k], labels[:, k]), 4)
        for k, name in enumerate(LABELS)
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="model folder, e.g. models/cxr_pneumonia"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=Recipe.train_images)
    parser.add_argument("--val-images", type=int, default=Recipe.val_images)
    parser.add_argument("--heldout-images", type=int, default=Recipe.heldout_images)
    parser.add_argument("--epochs", type=int, default=Recipe.epochs)
    parser.add_argument("--threads", type=int, default=Recipe.threads)
    args = parser.parse_args(argv)
    recipe = Recipe(
        seed=args.seed,
        train_images=args.train_images,
        val_images=args.val_images,
        heldout_images=args.heldout_images,
        epochs=args.epochs,
        threads=args.threads,
    )
    return run_recipe(recipe, args.out)


def run_recipe(recipe: Recipe, out: Path) -> int:
    torch.set_num_threads(recipe.threads)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    workers = recipe.threads
    train = make_cases(split_seed(recipe.seed, "train"), recipe.train_images, workers=workers)
    val = make_cases(split_seed(recipe.seed, "val"), recipe.val_images, workers=workers)
    print(f"generated {len(train)} + {len(val)} phantoms in {time.perf_counter() - started:.0f} s")
    model = train_model(recipe, train, val)
    onnx_path = out / "1" / "model.onnx"
    export_onnx(model, onnx_path)
    thresholds = pick_thresholds(onnx_runner(onnx_path), val)
    del train
    heldout_seed = split_seed(recipe.seed, "heldout")
    heldout = make_cases(heldout_seed, recipe.heldout_images, workers=workers)
    metrics = evaluate(onnx_runner(onnx_path), heldout, thresholds)
    wall_s = time.perf_counter() - started
    print(
        json.dumps(
            {"thresholds": thresholds, "metrics": metrics, "wall_s": round(wall_s)}, indent=1
        )
    )
    write_model_folder(
        out,
        recipe=recipe,
        thresholds=thresholds,
        metrics=metrics,
        heldout_seed=heldout_seed,
        parameters=count_parameters(model),
        wall_s=wall_s,
    )
    return 0


CARD_TEMPLATE = """\
---
name: cxr_pneumonia
version: 1
pipeline: cxr
demo_weights: true
files:
  1/model.onnx: {sha256}
outputs: {{logits: logits, cam: cam}}
labels:
{labels_yaml}metrics: {metrics_yaml}
---

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
  distribution; expect meaningless outputs on them.
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


def _r(x: float) -> float:
    return round(float(x), 4)


def _library_versions() -> str:
    import onnx
    import onnxruntime

    return (
        f"torch {torch.__version__}, numpy {np.__version__}, onnx {onnx.__version__}, "
        f"onnxruntime {onnxruntime.__version__}"
    )


def render_card(
    *,
    sha256: str,
    size_bytes: int,
    recipe: Recipe,
    thresholds: dict[str, float],
    metrics: dict,
    heldout_seed: int,
    parameters: int,
    wall_s: float,
) -> str:
    """The model card: YAML front matter the service parses, then prose."""
    m = metrics

    def per_label(key: str) -> str:
        return "{" + ", ".join(f"{n}: {_r(m[key][n])}" for n in LABELS) + "}"

    labels_yaml = "".join(
        f'  - {{name: {n}, scheme: SCT, code: "{LABEL_CODES[n]}", meaning: {n}, '
        f"threshold: {thresholds[n]}}}\n"
        for n in LABELS
    )
    metrics_yaml = (
        f"{{heldout_images: {m['n']}, seed: {heldout_seed}, auroc: {per_label('auroc')}, "
        f"sensitivity: {per_label('sensitivity')}, specificity: {per_label('specificity')}, "
        f"localisation_hit_rate: {_r(m['localisation_hit_rate'])}}}"
    )
    metric_rows = "".join(
        f"| {n} | {m['n_positive'][n]} / {m['n']} | {_r(m['auroc'][n])} | {thresholds[n]} "
        f"| {_r(m['sensitivity'][n])} | {_r(m['specificity'][n])} |\n"
        for n in LABELS
    )
    return CARD_TEMPLATE.format(
        sha256=sha256,
        labels_yaml=labels_yaml,
        metrics_yaml=metrics_yaml,
        parameters=parameters,
        opset=ONNX_OPSET,
        size_mb=size_bytes / 1e6,
        sharpness=POOL_SHARPNESS,
        prev_pneumonia=PREVALENCE["Pneumonia"],
        prev_cardiomegaly=PREVALENCE["Cardiomegaly"],
        train_images=recipe.train_images,
        train_seed=split_seed(recipe.seed, "train"),
        val_images=recipe.val_images,
        val_seed=split_seed(recipe.seed, "val"),
        heldout_images=m["n"],
        heldout_seed=heldout_seed,
        seed=recipe.seed,
        epochs=recipe.epochs,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        batch=recipe.batch,
        threads=recipe.threads,
        loc_weight=LOCALISATION_WEIGHT,
        loc_pos_weight=LOCALISATION_POS_WEIGHT,
        wall_min=wall_s / 60,
        versions=_library_versions(),
        metric_rows=metric_rows,
        dilation=HIT_DILATION_MODEL_PX,
        hit_rate=_r(m["localisation_hit_rate"]),
        hit_rate_undilated=_r(m["localisation_hit_rate_undilated"]),
        n_pneumonia=m["n_positive"]["Pneumonia"],
    )


# --- the model folder -------------------------------------------------------------

CONFIG_PBTXT = """\
name: "cxr_pneumonia"
platform: "onnxruntime_onnx"
max_batch_size: 32
input [
  {
    name: "image"
    data_type: TYPE_FP32
    dims: [ 1, 224, 224 ]
  }
]
output [
  {
    name: "logits"
    data_type: TYPE_FP32
    dims: [ 2 ]
    label_filename: "labels.txt"
  },
  {
    name: "cam"
    data_type: TYPE_FP32
    dims: [ 2, 28, 28 ]
  }
]
dynamic_batching {
  max_queue_delay_microseconds: 2000
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy {
    max_queue_size: 128
  }
}
instance_group [
  {
    count: 1
    kind: KIND_AUTO
  }
]
version_policy: { latest: { num_versions: 1 } }
"""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_model_folder(
    out: Path,
    *,
    recipe: Recipe,
    thresholds: dict[str, float],
    metrics: dict,
    heldout_seed: int,
    parameters: int,
    wall_s: float,
) -> None:
    """config.pbtxt, labels.txt and card.md next to an exported 1/model.onnx."""
    (out / "config.pbtxt").write_text(CONFIG_PBTXT)
    (out / "labels.txt").write_text("".join(f"{name}\n" for name in LABELS))
    onnx_path = out / "1" / "model.onnx"
    card = render_card(
        sha256=sha256_file(onnx_path),
        size_bytes=onnx_path.stat().st_size,
        recipe=recipe,
        thresholds=thresholds,
        metrics=metrics,
        heldout_seed=heldout_seed,
        parameters=parameters,
        wall_s=wall_s,
    )
    (out / "card.md").write_text(card)


if __name__ == "__main__":
    raise SystemExit(main())
