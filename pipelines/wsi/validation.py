"""The WSI side of `aidx models validate`: slide tiles (PNG/JPEG/TIFF files at the
model's tile size and resolution) scored by the served tile model through the
engine's batcher, as the slide analysis sends them; and the recipe's held-out
tiles written as PNG (lossless: the recipe's own JPEG round trip is kept)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np

from aidx.inference.serving import ModelService
from aidx.inference.validation.evaluate import ExtraStatistics, ScoredItem
from aidx.inference.validation.report import CardComparison, ValidationReport
from aidx.inference.validation.sources import Progress, Scored
from aidx.pipelines.wsi.analysis import tile_model
from aidx.pipelines.wsi.train import draw_tile, split_seed

SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def tile_files(dataset: Path) -> list[Path]:
    return sorted(p for p in dataset.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def read_tile(path: Path, tile_px: int) -> np.ndarray | None:
    """RGB uint8 tile_px x tile_px, or None when the file is not such a tile."""
    try:
        image = np.asarray(imagecodecs.imread(path))
    except Exception:  # imagecodecs raises per codec; any undecodable file is one case
        return None
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.shape != (tile_px, tile_px, 3) or image.dtype != np.uint8:
        return None
    return image


class WsiValidation:
    input_kind = "slide tiles: PNG/JPEG/TIFF files at the card's tile size; id = file stem"
    extra_subgroups: tuple[str, ...] = ()

    async def score(self, models: ModelService, dataset: Path, progress: Progress) -> Scored:
        model = tile_model(models)
        files = tile_files(dataset)
        scored = Scored(found=len(files))
        label = model.served.entry.card.labels[0].name  # type: ignore[union-attr]
        batch = max(1, min(model.max_batch, 64))
        for start in range(0, len(files), batch):
            read = [(p, read_tile(p, model.tile_px)) for p in files[start : start + batch]]
            good = [(p, t) for p, t in read if t is not None]
            scored.not_scored["not_a_tile"] += len(read) - len(good)
            if good:
                tiles = np.stack([t for _, t in good])
                result = await models.infer(model.name, {model.input_name: tiles})
                probabilities = result.outputs[model.output_name][:, model.label_index]
                for (path, _), p in zip(good, probabilities, strict=True):
                    scored.items.append(ScoredItem(path.stem, {label: float(p)}))
            progress(min(start + batch, len(files)), len(files))
        return scored

    def write_heldout(self, folder: Path, n: int, seed: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        heldout = split_seed(seed, "heldout")
        labels_path = folder / "labels.csv"
        with labels_path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "suspicious"])
            for i in range(n):
                tile, label = draw_tile(heldout, i)
                item = f"heldout_{i:05d}"
                (folder / f"{item}.png").write_bytes(imagecodecs.png_encode(tile))
                writer.writerow([item, label])
        return labels_path

    def compare(
        self, card_metrics: dict[str, Any], report: ValidationReport
    ) -> list[CardComparison]:
        measured = report.outputs[0]
        rows = []
        for metric in ("auroc", "sensitivity", "specificity"):
            if metric in card_metrics:
                estimate = getattr(measured, metric)
                n = measured.n if metric == "auroc" else estimate.n
                rows.append(CardComparison.of(metric, float(card_metrics[metric]), estimate, n))
        return rows

    def extra(self) -> tuple[ExtraStatistics, dict[str, str]] | None:
        return None


kit = WsiValidation()
