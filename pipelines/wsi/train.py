"""Deterministic recipe for the demo tile classifier (synthetic H&E tiles only).

    python -m aidx.pipelines.wsi.train --out models/wsi_tiles --seed 0

Tile `i` of a split is drawn from `np.random.default_rng([split_seed, i])`; with
`--seed S` the splits use 1000*S + 1 (train), + 2 (validation: the threshold) and
+ 3 (held-out: the card's metrics). A tile is a 256 x 256 px field at 0.5 um/px
of one or two kinds of tissue split by a random line (suspicious, normal stroma,
a dense lymphoid infiltrate, bare glass), JPEG-compressed as in a slide; its label
is "suspicious" when at least half of it is suspicious tissue. The held-out metrics
are measured on the exported ONNX file with onnxruntime, i.e. on what ships.

Last, the tile model's out-of-distribution gate is calibrated on tiles of the same
split seeds (`aidx models calibrate-ood wsi_tiles --synthetic 400` does the same step
alone, leaving the weights as they are).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

from aidx.inference.model_card import FrontMatter, Label, Pipeline, WsiTiling
from aidx.inference.model_card import render_card as render
from aidx.pipelines.metrics import auroc, sensitivity_specificity
from aidx.pipelines.wsi import synthetic
from aidx.pipelines.wsi.model import (
    INPUT,
    OUTPUT,
    TILE_MPP,
    TILE_PX,
    TileNet,
    count_parameters,
    export_onnx,
)
from aidx.pipelines.wsi.synthetic import Tissue

SPLIT_OFFSETS = {"train": 1, "val": 2, "heldout": 3}
SUSPICIOUS_SCT = ("108369006", "Neoplasm")  # SNOMED CT morphologic abnormality
# What a tile's two halves are: weights of (first kind, second kind) pairs.
_PAIRS: list[tuple[Tissue, Tissue, float]] = [
    (Tissue.suspicious, Tissue.suspicious, 0.30),
    (Tissue.suspicious, Tissue.normal, 0.10),
    (Tissue.suspicious, Tissue.lymphoid, 0.04),
    (Tissue.suspicious, Tissue.background, 0.06),
    (Tissue.normal, Tissue.normal, 0.22),
    (Tissue.lymphoid, Tissue.lymphoid, 0.10),
    (Tissue.normal, Tissue.lymphoid, 0.06),
    (Tissue.normal, Tissue.background, 0.09),
    (Tissue.lymphoid, Tissue.background, 0.03),
]


@dataclass(frozen=True)
class Recipe:
    seed: int = 0
    n_train: int = 2400
    n_val: int = 600
    n_heldout: int = 1000
    epochs: int = 6
    batch: int = 32
    lr: float = 3e-3
    workers: int = 2
    threads: int = 2
    ood_tiles: int = 400  # tiles per split for the OOD gate (ood_sets.py)
    ood_target_frr: float = 0.01


def split_seed(seed: int, split: str) -> int:
    return 1000 * seed + SPLIT_OFFSETS[split]


def draw_tile(split_seed_: int, index: int) -> tuple[np.ndarray, int]:
    """Tile `index` of a split: (uint8 256 x 256 x 3, label)."""
    rng = np.random.default_rng([split_seed_, index])
    weights = np.array([w for *_, w in _PAIRS])
    first, second, _ = _PAIRS[int(rng.choice(len(_PAIRS), p=weights / weights.sum()))]
    if rng.random() < 0.5:
        first, second = second, first
    x0, y0 = (int(v) for v in rng.integers(0, 1 << 22, 2))
    angle = rng.uniform(0, 2 * np.pi)
    cut = rng.uniform(-0.35, 0.35) * TILE_PX  # the line's distance from the tile centre
    cx, cy = x0 + TILE_PX / 2, y0 + TILE_PX / 2

    def layout(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        side = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle) < cut
        return np.where(side, int(first), int(second)).astype(np.uint8)

    seed = int(rng.integers(1 << 30))
    tile = synthetic.render(
        x0, y0, TILE_PX, TILE_PX, layout, seed=seed, stain=synthetic.random_stain(rng)
    )
    grid = np.arange(TILE_PX) + 0.5
    kinds = layout(x0 + grid[None, :], y0 + grid[:, None])
    label = int((kinds == Tissue.suspicious).mean() >= 0.5)
    quality = int(rng.integers(70, 92))
    tile = imagecodecs.jpeg_decode(imagecodecs.jpeg_encode(tile, level=quality))
    return np.ascontiguousarray(tile), label


def _draw(job: tuple[int, int]) -> tuple[np.ndarray, int]:
    return draw_tile(*job)


def make_set(seed_: int, n: int, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    jobs = [(seed_, i) for i in range(n)]
    if workers <= 1:
        drawn = [_draw(job) for job in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            drawn = pool.map(_draw, jobs, chunksize=32)
    tiles = np.stack([t for t, _ in drawn])
    labels = np.array([lab for _, lab in drawn], dtype=np.int64)
    return tiles, labels


# --- metrics ----------------------------------------------------------------------


def pick_threshold(probabilities: np.ndarray, labels: np.ndarray, min_specificity: float) -> float:
    """The lowest cut whose specificity reaches `min_specificity` on the validation
    set (a false region costs a pathologist's look), midway between two scores."""
    p = np.sort(np.unique(np.asarray(probabilities, dtype=np.float64)))
    cuts = np.concatenate([[p[0]], (p[:-1] + p[1:]) / 2, [min(1.0, p[-1] + 1e-6)]])
    for cut in cuts:
        _, spec = sensitivity_specificity(probabilities, labels, float(cut))
        if spec >= min_specificity:
            return float(cut)
    return float(cuts[-1])


# --- training -----------------------------------------------------------------------


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flips and quarter turns (tiles have no up), N x H x W x 3."""
    if torch.rand(1, generator=generator).item() < 0.5:
        batch = batch.flip(2)
    turns = int(torch.randint(0, 4, (1,), generator=generator).item())
    return torch.rot90(batch, turns, dims=(1, 2))


def train_model(recipe: Recipe, tiles: np.ndarray, labels: np.ndarray) -> TileNet:
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    model = TileNet()
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    steps = recipe.epochs * (len(tiles) // recipe.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, recipe.lr, total_steps=steps)
    x_all, y_all = torch.from_numpy(tiles), torch.from_numpy(labels).float()
    model.train()
    for epoch in range(recipe.epochs):
        order = torch.randperm(len(tiles), generator=generator)
        losses = []
        for start in range(0, len(order) - recipe.batch + 1, recipe.batch):
            idx = order[start : start + recipe.batch]
            x = _augment(x_all[idx], generator)
            loss = F.binary_cross_entropy_with_logits(model.logits(x)[:, 0], y_all[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        print(f"epoch {epoch + 1}/{recipe.epochs}: loss {np.mean(losses):.4f}", flush=True)
    model.eval()
    return model


def onnx_probabilities(path: Path, tiles: np.ndarray, batch: int = 64) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = [
        session.run([OUTPUT], {INPUT: tiles[i : i + batch]})[0][:, 0]
        for i in range(0, len(tiles), batch)
    ]
    return np.concatenate(out)


# --- the model folder ---------------------------------------------------------------

CONFIG_PBTXT = """\
name: "wsi_tiles"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [
  {
    name: "tile"
    data_type: TYPE_UINT8
    dims: [ 256, 256, 3 ]
  }
]
output [
  {
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ 1 ]
  }
]
dynamic_batching {
  max_queue_delay_microseconds: 2000
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy {
    max_queue_size: 256
  }
}
instance_group [
  {
    count: 1
    kind: KIND_AUTO
  }
]
"""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render_card(recipe: Recipe, threshold: float, metrics: dict, sha256: str, params: int) -> str:
    code, meaning = SUSPICIOUS_SCT
    front = FrontMatter(
        name="wsi_tiles",
        version=1,
        pipeline=Pipeline.wsi,
        demo_weights=True,
        files={"1/model.onnx": sha256},
        outputs={"probabilities": OUTPUT},
        wsi=WsiTiling(tile_px=TILE_PX, mpp=TILE_MPP),
        labels=(
            Label(
                name="suspicious",
                scheme="SCT",
                code=code,
                meaning=meaning,
                threshold=round(threshold, 4),
            ),
        ),
        metrics=metrics,
    )
    m = metrics
    return render(
        front,
        f"""\
# wsi_tiles: suspicious-tile classifier (demo weights)

**Demo weights, trained on synthetic data only: not for clinical use.** They exist so
that the whole-slide pipeline runs end to end on a fresh machine; a real tile model
(trained on annotated H&E slides) drops in by replacing `1/model.onnx` and this card.

## Intended use
Scores 256 x 256 px RGB tiles of an H&E slide at {TILE_MPP} um/px for how suspicious
they look; the pipeline turns the scores into a heatmap and suggests the top regions
for a pathologist to review. It never makes a diagnosis.

## Input and output
- `tile`: uint8 [N, 256, 256, 3], RGB as OpenSlide reads it, at {TILE_MPP} um/px
  (normalisation is inside the model).
- `probabilities`: float32 [N, 1], P(suspicious); the tile counts as suspicious at
  p >= {threshold:.4f}, the lowest cut with specificity >= 0.97 on the validation set.

## Training data
`python -m aidx.pipelines.wsi.train --out models/wsi_tiles --seed {recipe.seed}`:
{recipe.n_train} training, {recipe.n_val} validation and {recipe.n_heldout} held-out tiles
from `aidx.pipelines.wsi.synthetic`: pink stroma (eosin) with purple nuclei
(haematoxylin); "suspicious" tissue has crowded, enlarged, pleomorphic,
hyperchromatic nuclei; hard negatives are dense small-lymphocyte infiltrates. Tiles mix
two kinds of tissue along a random line; JPEG quality 70-91 as in a scanned slide.
Small CNN, {params:,} parameters, {recipe.epochs} epochs.

## Measured on the held-out synthetic tiles (the exported ONNX, onnxruntime)
| metric | value |
|---|---|
| tile AUROC | {m["auroc"]:.4f} |
| sensitivity at threshold | {m["sensitivity"]:.4f} |
| specificity at threshold | {m["specificity"]:.4f} |
| tiles (suspicious) | {m["n"]} ({m["n_positive"]}) |

These numbers say that the recipe works on its own synthetic tissue. They say nothing
about real slides.
""",
    )


def run_recipe(recipe: Recipe, out: Path) -> dict:
    torch.set_num_threads(recipe.threads)
    t0 = time.perf_counter()
    train_x, train_y = make_set(split_seed(recipe.seed, "train"), recipe.n_train, recipe.workers)
    val_x, val_y = make_set(split_seed(recipe.seed, "val"), recipe.n_val, recipe.workers)
    held_x, held_y = make_set(split_seed(recipe.seed, "heldout"), recipe.n_heldout, recipe.workers)
    print(f"tiles drawn in {time.perf_counter() - t0:.0f} s", flush=True)
    model = train_model(recipe, train_x, train_y)
    onnx_path = out / "1" / "model.onnx"
    export_onnx(model, onnx_path)
    threshold = pick_threshold(onnx_probabilities(onnx_path, val_x), val_y, 0.97)
    held_p = onnx_probabilities(onnx_path, held_x)
    sens, spec = sensitivity_specificity(held_p, held_y, threshold)
    metrics = {
        "auroc": round(auroc(held_p, held_y), 4),
        "sensitivity": round(sens, 4),
        "specificity": round(spec, 4),
        "n": int(len(held_y)),
        "n_positive": int(held_y.sum()),
        "split": "heldout synthetic tiles",
    }
    (out / "config.pbtxt").write_text(CONFIG_PBTXT)
    card = render_card(recipe, threshold, metrics, sha256_file(onnx_path), count_parameters(model))
    (out / "card.md").write_text(card)
    print(json.dumps({"threshold": threshold, **metrics}), flush=True)
    calibrate_gate(recipe, out)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)
    return metrics


def calibrate_gate(recipe: Recipe, out: Path) -> None:
    """The tile model's out-of-distribution gate on tiles of the recipe's split seeds
    (fit: train, threshold: validation, false-rejection rate: held-out), written into
    `out` beside the weights."""
    from aidx.inference.ood_calibration import write_calibration
    from aidx.pipelines.wsi.ood_sets import calibration_for

    calibration = calibration_for(
        dataset=None,
        synthetic_images=recipe.ood_tiles,
        recipe_seed=recipe.seed,
        target_frr=recipe.ood_target_frr,
        workers=recipe.workers,
    )
    write_calibration(out, 1, calibration)
    print(calibration.section.model_dump_json(indent=1), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the demo tile classifier.")
    parser.add_argument("--out", type=Path, default=Path("models/wsi_tiles"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=Recipe.epochs)
    parser.add_argument("--n-train", type=int, default=Recipe.n_train)
    parser.add_argument("--workers", type=int, default=Recipe.workers)
    args = parser.parse_args(argv)
    recipe = Recipe(seed=args.seed, epochs=args.epochs, n_train=args.n_train, workers=args.workers)
    run_recipe(recipe, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
