"""The CT side of `aidx models validate`: each sub-folder of the dataset is one
series (DICOM files; id = the folder's name), run through the CT pipeline's own
steps (series assembly, model grid, lungs, sliding-window inference through the
engine's batcher). The scan's score is the pipeline's finding probability (peak
voxel probability inside the lungs). Where a series folder holds `truth.npy` (the
lesion labels on its acquisition grid), the recipe's segmentation metrics are
measured too (Dice, lesion sensitivity, false positives), bootstrapped over scans.

The screening (lungs and OOD gate) is left out: the card's metrics were measured
without it."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aidx.inference.serving import ModelService, ServedModel
from aidx.inference.validation.evaluate import ExtraStatistics, ScoredItem
from aidx.inference.validation.report import CardComparison, ValidationReport
from aidx.inference.validation.sources import Progress, Scored, header_attributes
from aidx.pipelines.ct import synthetic
from aidx.pipelines.ct.inference import probability_map
from aidx.pipelines.ct.pipeline import decode, find_lungs, window_config
from aidx.pipelines.ct.preprocess import to_model_grid
from aidx.pipelines.ct.train import draw_phantom, evaluate_case, split_seed, summarise

TRUTH_FILE = "truth.npy"
LABEL = "Pneumonia"
SEGMENTATION = {
    "dice_global": "Dice over all voxels pooled",
    "dice_mean_positive_scans": "Dice, mean over scans with pneumonia",
    "lesion_sensitivity": "lesion-level sensitivity (any overlap), lesions >= min volume",
    "false_positives_per_scan": "false-positive lesions per scan",
}


def series_folders(dataset: Path) -> list[Path]:
    return sorted(p for p in dataset.iterdir() if p.is_dir() and any(p.glob("*.dcm")))


def segmentation_statistics(items: Sequence[ScoredItem]) -> dict[str, float | None]:
    """The recipe's summary (`train.summarise`) over the items that carry counts."""
    rows = [item.extras for item in items if item.extras]
    if not rows:
        return {}
    summary = summarise(rows)
    return {name: float(summary[name]) for name in SEGMENTATION}


def _predictor(models: ModelService, served: ServedModel, loop: asyncio.AbstractEventLoop):  # type: ignore[no-untyped-def]
    """A blocking predictor for MONAI (run in a worker thread) that sends each window
    batch through the model's dynamic batcher, as the pipeline's does."""

    def predict(batch: np.ndarray) -> np.ndarray:
        call = models.infer(served.name, {"image": batch})
        return asyncio.run_coroutine_threadsafe(call, loop).result().outputs["logits"]

    return predict


class CtValidation:
    input_kind = "CT series: one sub-folder of DICOM files per series; id = folder name"
    extra_subgroups: tuple[str, ...] = ()

    async def score(self, models: ModelService, dataset: Path, progress: Progress) -> Scored:
        served = models.for_pipeline("ct")
        window, min_lesion_ml = window_config(served)
        threshold = served.entry.card.labels[0].threshold  # type: ignore[union-attr]
        predict = _predictor(models, served, asyncio.get_running_loop())
        folders = series_folders(dataset)
        scored = Scored(found=len(folders))
        for done, folder in enumerate(folders, start=1):
            files = sorted(folder.glob("*.dcm"))
            truth_path = folder / TRUTH_FILE
            truth = np.load(truth_path) if truth_path.is_file() else None
            volume, _, _ = await asyncio.to_thread(decode, [p.read_bytes() for p in files])
            grid = to_model_grid(volume.hu, volume.affine_lps, window.spacing_mm, truth)
            lungs, _ = find_lungs(grid)
            probability = await asyncio.to_thread(probability_map, grid.image, predict, window)
            in_lung = probability[lungs.region]
            peak = float(in_lung.max()) if in_lung.size else 0.0
            extras = {}
            if truth is not None:
                extras = evaluate_case(grid, probability, threshold, min_lesion_ml)
            attributes = header_attributes(files[0])
            scored.items.append(ScoredItem(folder.name, {LABEL: peak}, attributes, extras))
            progress(done, len(folders))
        return scored

    def write_heldout(self, folder: Path, n: int, seed: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        heldout = split_seed(seed, "heldout")
        labels_path = folder / "labels.csv"
        with labels_path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", LABEL])
            for i in range(n):
                phantom = draw_phantom(heldout, i)
                item = f"heldout_{i:03d}"
                synthetic.write_series(phantom, folder / item)
                np.save(folder / item / TRUTH_FILE, phantom.lesions)
                writer.writerow([item, int(phantom.lesions.max() > 0)])
        return labels_path

    def compare(
        self, card_metrics: dict[str, Any], report: ValidationReport
    ) -> list[CardComparison]:
        rows = []
        for name in SEGMENTATION:
            if name in card_metrics and any(e.name == name for e in report.extra):
                measured = report.extra_metric(name).estimate
                rows.append(
                    CardComparison.of(
                        name, float(card_metrics[name]), measured, report.dataset.scored
                    )
                )
        return rows

    def extra(self) -> tuple[ExtraStatistics, dict[str, str]] | None:
        return segmentation_statistics, SEGMENTATION


kit = CtValidation()
