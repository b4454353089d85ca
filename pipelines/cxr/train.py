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
The settings are in `train_recipe`, the phantoms as model inputs in `train_data`, the
metrics in `train_eval` and the model folder with its card in `train_card`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aidx.pipelines.cxr.model import LABELS, build_model, count_parameters, export_onnx
from aidx.pipelines.cxr.train_card import write_model_folder
from aidx.pipelines.cxr.train_data import Case, make_cases
from aidx.pipelines.cxr.train_eval import (
    evaluate,
    onnx_runner,
    pick_thresholds,
    run_in_batches,
    torch_runner,
)
from aidx.pipelines.cxr.train_recipe import (
    LOCALISATION_POS_WEIGHT,
    LOCALISATION_WEIGHT,
    Recipe,
    split_seed,
)
from aidx.pipelines.metrics import auroc


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
    parser.add_argument(
        "--version", type=int, default=Recipe.version, help="the version folder, e.g. 2"
    )
    args = parser.parse_args(argv)
    recipe = Recipe(
        seed=args.seed,
        train_images=args.train_images,
        val_images=args.val_images,
        heldout_images=args.heldout_images,
        ood_images=args.ood_images,
        epochs=args.epochs,
        threads=args.threads,
        version=args.version,
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
    onnx_path = out / str(recipe.version) / "model.onnx"
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
    write_calibration(out, recipe.version, calibration)
    print(calibration.section.model_dump_json(indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
