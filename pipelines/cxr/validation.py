"""The CXR side of `aidx models validate`: DICOM files scored through the served
chest X-ray pipeline, and the recipe's held-out phantoms written as CR files."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any

from aidx.inference.assessment import OodPolicy
from aidx.inference.cpu_stage import CpuStage
from aidx.inference.errors import AidxError
from aidx.inference.reports import ReportStore
from aidx.inference.serving import ModelService
from aidx.inference.validation.evaluate import ExtraStatistics, ScoredItem
from aidx.inference.validation.report import CardComparison, ValidationReport
from aidx.inference.validation.sources import Progress, Scored, bounded_gather, header_attributes
from aidx.pipelines.cxr.model import LABELS
from aidx.pipelines.cxr.pipeline import CxrPipeline
from aidx.pipelines.cxr.synthetic_dicom import write_dicom
from aidx.pipelines.cxr.train_data import draw_sample
from aidx.pipelines.cxr.train_recipe import split_seed

IN_FLIGHT = 16  # concurrent analyses: enough for the batcher to form batches


def dicom_files(dataset: Path) -> list[Path]:
    return sorted(p for p in dataset.rglob("*") if p.is_file() and p.suffix.lower() == ".dcm")


class CxrValidation:
    input_kind = "DICOM files (*.dcm, any depth); id = file name without .dcm"
    extra_subgroups: tuple[str, ...] = ()

    async def score(self, models: ModelService, dataset: Path, progress: Progress) -> Scored:
        files = dicom_files(dataset)
        scored = Scored(found=len(files))
        served = models.for_pipeline("cxr")
        card = served.entry.card
        names = {lab.code: lab.name for lab in card.labels} if card else {}
        with tempfile.TemporaryDirectory() as tmp:
            # warn, not stop, out of distribution: every item the model can judge is
            # scored, as the card's metrics were
            pipeline = CxrPipeline(models, ReportStore(Path(tmp)), CpuStage(1), OodPolicy.warn)

            async def one(path: Path) -> None:
                try:
                    report = await pipeline.analyze(path.read_bytes())
                except (AidxError, OSError) as exc:
                    scored.not_scored[getattr(exc, "code", "unreadable_file")] += 1
                    return
                if report.not_assessed is not None:
                    scored.not_scored[report.not_assessed.reason.value] += 1
                    return
                scores = {
                    names.get(f.concept.code, f.concept.meaning): float(f.probability)
                    for f in report.findings
                    if f.probability is not None
                }
                scored.items.append(ScoredItem(path.stem, scores, header_attributes(path)))

            jobs = [lambda p=p: one(p) for p in files]
            await bounded_gather(jobs, IN_FLIGHT, progress)
        return scored

    def write_heldout(self, folder: Path, n: int, seed: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        heldout = split_seed(seed, "heldout")
        labels_path = folder / "labels.csv"
        with labels_path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", *LABELS])
            for i in range(n):
                sample = draw_sample(heldout, i)
                item = f"heldout_{i:05d}"
                write_dicom(sample, folder / f"{item}.dcm", patient_id=f"SYN{i:06d}")
                writer.writerow([item, *(int(sample.labels[name]) for name in LABELS)])
        return labels_path

    def compare(
        self, card_metrics: dict[str, Any], report: ValidationReport
    ) -> list[CardComparison]:
        rows = []
        for metric in ("auroc", "sensitivity", "specificity"):
            for label, value in (card_metrics.get(metric) or {}).items():
                measured = report.output(label)
                estimate = getattr(measured, metric)
                n = measured.n if metric == "auroc" else estimate.n
                rows.append(CardComparison.of(f"{metric}.{label}", float(value), estimate, n))
        return rows

    def extra(self) -> tuple[ExtraStatistics, dict[str, str]] | None:
        return None


kit = CxrValidation()
