"""The labs side of `aidx models validate`: lab panels (CSV, or JSON records, in
canonical units, one column per analyte key) scored by the served anomaly model
through the pipeline's own client, and the recipe's held-out people (normal panels
and each injected anomaly) written as a panels CSV with labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from aidx.inference.serving import ModelService
from aidx.inference.validation.evaluate import ExtraStatistics, ScoredItem
from aidx.inference.validation.report import (
    CardComparison,
    Interval,
    RateEstimate,
    ValidationReport,
)
from aidx.inference.validation.sources import Progress, Scored
from aidx.pipelines.labs.anomaly_client import AnomalyClient
from aidx.pipelines.labs.catalogue import load_catalogue
from aidx.pipelines.labs.synthetic import INJECTORS, complete_panels, load_nhanes
from aidx.pipelines.labs.train import model_features

LABEL = "anomaly"  # the card's label name: 1 for an anomalous panel
KIND = "kind"  # the held-out set's subgroup column: none or the injected anomaly
META_COLUMNS = ("id", "age", "sex")
CHUNK = 1024


def read_panels(dataset: Path) -> list[dict[str, str]]:
    """Every panel in the folder's *.csv and *.json files (JSON: a list of records)."""
    records: list[dict[str, str]] = []
    for path in sorted(dataset.glob("*.csv")):
        if path.name == "labels.csv":
            continue
        with path.open(newline="") as fh:
            records += list(csv.DictReader(fh))
    for path in sorted(dataset.glob("*.json")):
        records += [{k: str(v) for k, v in r.items()} for r in json.loads(path.read_text())]
    return records


def _value(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else np.nan
    except ValueError:
        return np.nan


class LabsValidation:
    input_kind = "lab panels: *.csv or *.json records with id, age, sex and analyte keys"
    extra_subgroups = (KIND,)

    async def score(self, models: ModelService, dataset: Path, progress: Progress) -> Scored:
        catalogue = load_catalogue()
        records = read_panels(dataset)
        scored = Scored(found=len(records))
        values = np.full((len(records), len(catalogue.analytes)), np.nan)
        for key, column in catalogue.index.items():
            values[:, column] = [_value(r.get(key)) for r in records]
        ages = np.array([_value(r.get("age")) for r in records])
        client = AnomalyClient(models, catalogue)
        outside = client.outside_population(ages)
        for start in range(0, len(records), CHUNK):
            rows = slice(start, start + CHUNK)
            result = await client.score(values[rows])
            if result is None:
                raise RuntimeError("the anomaly model is not in service")
            for i, record in enumerate(records[rows]):
                if outside[start + i] is not None:
                    scored.not_scored["model_not_applicable"] += 1
                elif not result.scored[i]:
                    scored.not_scored["too_few_analytes"] += 1
                else:
                    attributes = {k: record[k] for k in ("age", "sex") if record.get(k)}
                    item = ScoredItem(record["id"], {LABEL: 1.0 - float(result.p[i])}, attributes)
                    scored.items.append(item)
            progress(min(start + CHUNK, len(records)), len(records))
        return scored

    def write_heldout(self, folder: Path, n: int, seed: int) -> Path:
        """The recipe's held-out people (`train.train`'s split and draws, full panels):
        the first `n` as normal panels, and the same people with each injected anomaly."""
        features = model_features()
        people = load_nhanes()
        order = np.random.default_rng(seed).permutation(len(people.age_y))
        held = order[int(0.8 * len(order)) :]
        panels = complete_panels(people, features, seed=1000 * seed + 1)[held]
        rng = np.random.default_rng(1000 * seed + 3)
        sets = {
            "none": panels,
            **{k: inject(panels, features, rng) for k, inject in INJECTORS.items()},
        }
        folder.mkdir(parents=True, exist_ok=True)
        count = min(n, len(held))
        with (
            (folder / "panels.csv").open("w", newline="") as fh,
            (folder / "labels.csv").open("w", newline="") as lf,
        ):
            panel_out, label_out = csv.writer(fh), csv.writer(lf)
            panel_out.writerow([*META_COLUMNS, *features])
            label_out.writerow(["id", LABEL, KIND])
            for kind, rows in sets.items():
                for i in range(count):
                    person = held[i]
                    item = f"{kind}_{i:05d}"
                    sex = "M" if people.sex_male[person] else "F"
                    panel_out.writerow([item, f"{people.age_y[person]:g}", sex, *rows[i]])
                    label_out.writerow([item, int(kind != "none"), kind])
        return folder / "labels.csv"

    def compare(
        self, card_metrics: dict[str, Any], report: ValidationReport
    ) -> list[CardComparison]:
        out = []
        far = (card_metrics.get("heldout_false_alarm_rate") or {}).get("full")
        if far is not None:
            spec = report.output(LABEL).specificity
            out.append(
                CardComparison.of(
                    "heldout_false_alarm_rate.full", float(far), _complement(spec), spec.n
                )
            )
        for kind, rates in (card_metrics.get("heldout_detection_rate") or {}).items():
            group = report.subgroup(KIND, kind)
            if group is None or "full" not in rates:
                continue
            sens = group.outputs[0].sensitivity
            out.append(
                CardComparison.of(
                    f"heldout_detection_rate.{kind}.full", float(rates["full"]), sens, sens.n
                )
            )
        return out

    def extra(self) -> tuple[ExtraStatistics, dict[str, str]] | None:
        return None


def _complement(rate: RateEstimate) -> RateEstimate:
    """1 - rate (a false-alarm rate from a specificity), its interval and count flipped."""
    ci = rate.ci95
    return RateEstimate(
        value=None if rate.value is None else round(1.0 - rate.value, 4),
        ci95=None if ci is None else Interval(low=round(1 - ci.high, 4), high=round(1 - ci.low, 4)),
        k=rate.n - rate.k,
        n=rate.n,
    )


kit = LabsValidation()
