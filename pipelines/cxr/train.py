"""Deterministic recipe for the demo chest X-ray weights (synthetic phantoms only).

    python -m aidx.pipelines.cxr.train --out models/cxr_pneumonia --seed 0

Every phantom is drawn from its own generator, `np.random.default_rng([split_seed,
index])`, so a split is reproducible image by image and in any order. With
`--seed S` the splits use seeds 1000*S + 1 (train), + 2 (validation: thresholds)
and + 3 (held-out: the card's metrics). Images go through
`preprocess.to_model_input`, the function the service uses. The held-out metrics
are measured on the exported ONNX file with onnxruntime, i.e. on what ships.
Last, the recipe calibrates the model's out-of-distribution gate on the same three
splits (what `aidx models calibrate-ood cxr_pneumonia --synthetic N` does).
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

from aidx.inference.model_card import Label
from aidx.pipelines.cxr import card as card_md
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
    ood_images: int = 1000  # phantoms per split for the OOD gate (fit, held-out; 0.6x threshold)
    ood_target_frr: float = 0.005  # the gate's threshold: this share of the threshold split above
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
    parser.add_argument("--ood-images", type=int, default=Recipe.ood_images)
    parser.add_argument("--epochs", type=int, default=Recipe.epochs)
    parser.add_argument("--threads", type=int, default=Recipe.threads)
    args = parser.parse_args(argv)
    recipe = Recipe(
        seed=args.seed,
        train_images=args.train_images,
        val_images=args.val_images,
        heldout_images=args.heldout_images,
        ood_images=args.ood_images,
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
    calibrate_gate(recipe, out)
    return 0


def calibrate_gate(recipe: Recipe, out: Path) -> None:
    """The model's out-of-distribution gate on the recipe's own splits (fit: train,
    threshold: validation, false-rejection rate: held-out), written into `out`."""
    from aidx.inference.ood_calibration import write_calibration
    from aidx.pipelines.cxr.ood_sets import calibration_for

    calibration = calibration_for(
        dataset=None,
        synthetic_images=recipe.ood_images,
        recipe_seed=recipe.seed,
        target_frr=recipe.ood_target_frr,
        workers=recipe.threads,
    )
    write_calibration(out, 1, calibration)
    print(calibration.section.model_dump_json(indent=1))


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
    labels = tuple(
        Label(name=n, scheme="SCT", code=LABEL_CODES[n], meaning=n, threshold=thresholds[n])
        for n in LABELS
    )
    front = card_md.front_matter(
        sha256,
        labels,
        {
            "heldout_images": m["n"],
            "seed": heldout_seed,
            **{
                key: {n: _r(m[key][n]) for n in LABELS}
                for key in ("auroc", "sensitivity", "specificity")
            },
            "localisation_hit_rate": _r(m["localisation_hit_rate"]),
        },
    )
    metric_rows = "".join(
        f"| {n} | {m['n_positive'][n]} / {m['n']} | {_r(m['auroc'][n])} | {thresholds[n]} "
        f"| {_r(m['sensitivity'][n])} | {_r(m['specificity'][n])} |\n"
        for n in LABELS
    )
    return card_md.render_card(
        front,
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
