"""The deterministic recipe for the demo CT weights: synthetic phantoms ->
the serving preprocessing -> a small 3D U-Net -> ONNX -> held-out metrics -> card.

    python -m aidx.pipelines.ct.train --out models/ct_pneumonia --seed 0

Last, the model's out-of-distribution gate is calibrated on chest phantoms of the
same split seeds (`aidx models calibrate-ood ct_pneumonia --synthetic 100` does the
same step alone, leaving the weights as they are).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

from aidx.pipelines.ct import postprocess, synthetic
from aidx.pipelines.ct.inference import WindowConfig, probability_map
from aidx.pipelines.ct.model import WINDOW_VOXELS, CtNet, export_onnx
from aidx.pipelines.ct.preprocess import ModelGrid, to_model_grid

SPLITS = {"train": 1, "validation": 2, "heldout": 3}
CHEST_EXTENT_MM = (340.0, 300.0, 400.0)  # z, y, x


@dataclass(frozen=True)
class Recipe:
    seed: int = 0
    threads: int = 2
    n_train: int = 60
    n_validation: int = 8
    n_heldout: int = 20
    steps: int = 600
    batch: int = 4
    patch: int = 40
    lr: float = 3e-3
    spacing_mm: float = 3.0
    min_volume_ml: float = 0.5
    overlap: float = 0.25
    ood_volumes: int = 100  # chest phantoms per split for the OOD gate (ood_sets.py)
    ood_target_frr: float = 0.01


def split_seed(seed: int, split: str) -> int:
    return 1000 * seed + SPLITS[split]


def draw_phantom(seed_: int, index: int) -> synthetic.Phantom:
    """Phantom `index` of a split at a random acquisition spacing."""
    rng = np.random.default_rng([seed_, index])
    in_plane = float(rng.uniform(2.4, 3.6))
    step = float(rng.uniform(2.5, 5.0))
    spacing = (in_plane, in_plane, step)
    shape = tuple(int(round(e / s)) for e, s in zip(CHEST_EXTENT_MM, spacing[::-1], strict=True))
    return synthetic.generate(rng, shape_kji=shape, spacing_mm=spacing)  # type: ignore[arg-type]


def draw_case(seed_: int, index: int, spacing_mm: float) -> ModelGrid:
    """Phantom `index` of a split at a random acquisition spacing, on the model grid."""
    phantom = draw_phantom(seed_, index)
    return to_model_grid(phantom.hu, phantom.affine_lps, spacing_mm, phantom.lesions)


def sample_patches(
    cases: Sequence[ModelGrid], rng: np.random.Generator, batch: int, patch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for _ in range(batch):
        case = cases[int(rng.integers(len(cases)))]
        assert case.label is not None
        shape = np.array(case.label.shape)
        positives = np.flatnonzero(case.label.ravel()[::7] > 0) * 7
        if positives.size and rng.random() < 0.6:
            centre = np.array(np.unravel_index(int(rng.choice(positives)), case.label.shape))
            centre = centre + rng.integers(-patch // 3, patch // 3 + 1, 3)
        else:
            centre = rng.integers(patch // 2, np.maximum(shape - patch // 2, patch // 2 + 1))
        start = np.clip(centre - patch // 2, 0, np.maximum(shape - patch, 0))
        box = tuple(slice(int(s), int(s) + patch) for s in start)
        images.append(case.image[(slice(None), *box)])
        labels.append((case.label[box] > 0)[None].astype(np.float32))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return bce + dice


def train_model(recipe: Recipe, cases: Sequence[ModelGrid]) -> CtNet:
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng([recipe.seed, 99])
    model = CtNet()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.steps)
    model.train()
    for step in range(recipe.steps):
        images, labels = sample_patches(cases, rng, recipe.batch, recipe.patch)
        loss = loss_fn(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:
            print(f"step {step:4d} loss {loss.item():.4f}", flush=True)
    return model.eval()


def onnx_predictor(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def evaluate_case(
    case: ModelGrid, probability: np.ndarray, threshold: float, min_volume_ml: float
) -> dict[str, float]:
    assert case.label is not None
    lungs = postprocess.lung_mask(case.hu, case.voxel_ml)
    found, _ = postprocess.lesions(
        case, probability, lungs, threshold=threshold, min_volume_ml=min_volume_ml
    )
    truth = case.label
    predicted = found > 0
    counts = np.bincount(truth.ravel(), minlength=256)
    real = [t for t in range(1, 256) if counts[t] * case.voxel_ml >= min_volume_ml]
    hit = sum(bool(np.any(predicted[truth == t])) for t in real)
    fps = sum(not np.any(truth[found == n] > 0) for n in range(1, int(found.max()) + 1))
    return {
        "overlap": float(np.count_nonzero(predicted & (truth > 0))),
        "predicted": float(np.count_nonzero(predicted)),
        "truth": float(np.count_nonzero(truth > 0)),
        "lesions": float(len(real)),
        "detected": float(hit),
        "false_positives": float(fps),
    }


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    total = {k: sum(r[k] for r in rows) for k in rows[0]}
    per_scan = [2 * r["overlap"] / (r["predicted"] + r["truth"]) for r in rows if r["truth"] > 0]
    return {
        "scans": len(rows),
        "lesions": int(total["lesions"]),
        "dice_global": round(2 * total["overlap"] / max(total["predicted"] + total["truth"], 1), 4),
        "dice_mean_positive_scans": round(float(np.mean(per_scan)) if per_scan else 0.0, 4),
        "lesion_sensitivity": round(total["detected"] / max(total["lesions"], 1), 4),
        "false_positives_per_scan": round(total["false_positives"] / len(rows), 4),
    }


def run_recipe(recipe: Recipe, out: Path) -> dict[str, object]:
    torch.set_num_threads(recipe.threads)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    seeds = {name: split_seed(recipe.seed, name) for name in SPLITS}
    train = [draw_case(seeds["train"], i, recipe.spacing_mm) for i in range(recipe.n_train)]
    model = train_model(recipe, train)
    onnx_path = out / "1" / "model.onnx"
    export_onnx(model, onnx_path)
    session = onnx_predictor(onnx_path, recipe.threads)
    window = WindowConfig(WINDOW_VOXELS, recipe.overlap, 4, recipe.spacing_mm)

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["logits"], {"image": batch})[0])

    def maps(split: str, n: int) -> list[tuple[ModelGrid, np.ndarray]]:
        cases = [draw_case(seeds[split], i, recipe.spacing_mm) for i in range(n)]
        return [(c, probability_map(c.image, predict, window)) for c in cases]

    validation = maps("validation", recipe.n_validation)
    candidates = [0.2, 0.3, 0.4, 0.5, 0.6]
    scores = [
        summarise([evaluate_case(c, p, t, recipe.min_volume_ml) for c, p in validation])
        for t in candidates
    ]
    best = max(range(len(candidates)), key=lambda i: float(scores[i]["dice_global"]))
    threshold = candidates[best]
    heldout = maps("heldout", recipe.n_heldout)
    metrics = summarise([evaluate_case(c, p, threshold, recipe.min_volume_ml) for c, p in heldout])
    minutes = (time.perf_counter() - started) / 60
    result = {"threshold": threshold, "heldout": metrics, "minutes": round(minutes, 2)}
    write_model_folder(out, recipe, result)
    print(json.dumps(result, indent=2))
    calibrate_gate(recipe, out)
    return result


def calibrate_gate(recipe: Recipe, out: Path) -> None:
    """The model's out-of-distribution gate on phantoms of the recipe's split seeds
    (fit: train, threshold: validation, false-rejection rate: held-out), written
    into `out` beside the weights."""
    from aidx.inference.ood_calibration import write_calibration
    from aidx.pipelines.ct.ood_sets import calibration_for

    calibration = calibration_for(
        dataset=None,
        synthetic_images=recipe.ood_volumes,
        recipe_seed=recipe.seed,
        target_frr=recipe.ood_target_frr,
        workers=recipe.threads,
    )
    write_calibration(out, 1, calibration)
    print(calibration.section.model_dump_json(indent=1))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_model_folder(out: Path, recipe: Recipe, result: dict) -> None:  # type: ignore[type-arg]
    from aidx.pipelines.ct.card import render_card, render_config

    (out / "labels.txt").write_text("Pneumonia\n")
    (out / "config.pbtxt").write_text(render_config(recipe))
    onnx_path = out / "1" / "model.onnx"
    versions = (
        f"torch {torch.__version__}, numpy {np.__version__}, onnxruntime {ort.__version__}, "
        f"Python {platform.python_version()}"
    )
    card = render_card(recipe, result, sha256_file(onnx_path), onnx_path.stat().st_size, versions)
    (out / "card.md").write_text(card)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("models/ct_pneumonia"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=Recipe.steps)
    args = parser.parse_args(argv)
    recipe = Recipe(seed=args.seed, steps=args.steps)
    print(json.dumps(asdict(recipe)))
    run_recipe(recipe, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
