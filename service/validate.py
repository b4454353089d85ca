"""`aidx models validate`: a model scored on a labelled dataset through the serving
path (in-process), its metrics with bootstrap intervals overall and per subgroup,
against its card, written as JSON and HTML into the model's folder."""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from aidx.inference.model_card import Pipeline
from aidx.inference.repository import ModelEntry, load_entry
from aidx.inference.serving import ModelService
from aidx.inference.settings import Settings
from aidx.inference.validation import evaluate as ev
from aidx.inference.validation.metrics import DEFAULT_RESAMPLES
from aidx.inference.validation.report import (
    DatasetInfo,
    ModelInfo,
    ValidationReport,
)
from aidx.inference.validation.shadow import ComputeTimer, Version
from aidx.inference.validation.sources import Scored, ValidationKit
from aidx.inference.validation.store import Written, folder, write_report
from aidx.service import validate_shadow as vs

console = Console()


def kit_for(pipeline: object) -> ValidationKit | None:
    """The pipeline's side of validation (imported on use: each pulls its stack)."""
    if pipeline is Pipeline.cxr:
        from aidx.pipelines.cxr.validation import kit as cxr

        return cxr
    if pipeline is Pipeline.labs:
        from aidx.pipelines.labs.validation import kit as labs

        return labs
    if pipeline is Pipeline.wsi:
        from aidx.pipelines.wsi.validation import kit as wsi

        return wsi
    if pipeline is Pipeline.ct:
        from aidx.pipelines.ct.validation import kit as ct

        return ct
    return None


async def score_dataset(
    settings: Settings, kit: ValidationKit, dataset: Path, timer: ComputeTimer | None = None
) -> Scored:
    """Start the model service (this model only) and score the dataset, with a bar;
    `timer` keeps each batch's compute time and the pass's wall time."""
    service = ModelService(settings, observer=timer)
    await service.start()
    started = time.perf_counter()
    try:
        with Progress(console=console, transient=False) as bar:
            task = bar.add_task("scoring", total=None)
            scored = await kit.score(
                service, dataset, lambda done, total: bar.update(task, completed=done, total=total)
            )
    finally:
        await service.stop()
    if timer is not None:
        timer.wall_s = time.perf_counter() - started
    return scored


def build_report(
    entry: ModelEntry,
    kit: ValidationKit,
    scored: Scored,
    labels_file: Path,
    *,
    source: str,
    seed: int,
    resamples: int,
    attributes: list[str],
) -> ValidationReport:
    """The report: every output at the card's threshold, subgroups, the pipeline's own
    metrics, and the card's stated metrics against the measured ones."""
    card = entry.card
    assert card is not None
    thresholds = {label.name: label.threshold for label in card.labels}
    data = ev.join(scored.items, ev.read_labels(labels_file, list(thresholds)))
    not_scored = dict(scored.not_scored)
    if len(data.items) < len(scored.items):
        not_scored["no_ground_truth"] = len(scored.items) - len(data.items)
    extra = kit.extra()
    report = ValidationReport(
        created=datetime.now(UTC).replace(microsecond=0),
        model=ModelInfo(
            name=entry.name,
            version=entry.version,
            pipeline=str(card.pipeline),
            sha256=entry.sha256,
            demo_weights=card.demo_weights,
        ),
        dataset=DatasetInfo(
            source=source,
            labels_file=labels_file.name,
            items=scored.found,
            scored=len(data.items),
            not_scored=not_scored,
        ),
        seed=seed,
        resamples=resamples,
        outputs=ev.all_outputs(data, thresholds, seed=seed, resamples=resamples),
        subgroups=ev.subgroups(data, thresholds, attributes, seed=seed, resamples=resamples),
        extra=(
            ev.extra_metrics(data, extra[0], extra[1], seed=seed, resamples=resamples)
            if extra
            else []
        ),
    )
    report.card_comparison = kit.compare(dict(card.metrics or {}), report)
    return report


def comparison_table(report: ValidationReport) -> Table:
    table = Table(
        "card metric", "card", "measured", "95% CI", "n", "within CI", title="card vs measured"
    )
    table.columns[0].no_wrap = True  # the metric's full name
    for row in report.card_comparison:
        ci = row.measured.ci95
        table.add_row(
            row.metric,
            f"{row.card_value:.4f}",
            "n/a" if row.measured.value is None else f"{row.measured.value:.4f}",
            f"[{ci.low:.4f}, {ci.high:.4f}]" if ci else "n/a",
            str(row.n),
            {True: "yes", False: "[red]NO[/red]", None: "n/a"}[row.within_ci],
        )
    return table


def validate(
    model: Annotated[str, typer.Argument(help="the model's folder in the repository")],
    dataset: Annotated[
        Path | None, typer.Option(help="the inputs: DICOM files, CT series folders, tiles, panels")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="ground-truth CSV: id, one 0/1 column per output, subgroups")
    ] = None,
    synthetic: Annotated[
        int | None, typer.Option(help="instead: the first N items of the recipe's held-out set")
    ] = None,
    seed: Annotated[int, typer.Option(help="the recipe's seed (with --synthetic)")] = 0,
    bootstrap_seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    subgroup: Annotated[
        list[str] | None, typer.Option(help="a further labels-file column to split by")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="where to write the reports (default: beside the model)")
    ] = None,
    keep_dataset: Annotated[
        Path | None, typer.Option(help="with --synthetic: write the held-out set here and keep it")
    ] = None,
    repository: Annotated[
        Path | None, typer.Option(help="model repository (default: settings)")
    ] = None,
    shadow: Annotated[
        int | None,
        typer.Option(help="the shadow version to compare (default: as the service runs; 0: none)"),
    ] = None,
) -> None:
    """Measure MODEL on a labelled dataset through the serving path: AUROC (bootstrap
    95% CI), sensitivity and specificity at the card's threshold, calibration, per
    subgroup; write validation/latest.json and .html beside the model."""
    values: dict[str, object] = {"mode": "development", "enabled_models": [model]}
    if repository is not None:
        values["model_repository"] = repository
    settings = Settings(**values)  # type: ignore[arg-type]
    entry = load_entry(settings.model_repository / model)
    kit = kit_for(entry.card.pipeline if entry.card else None)
    if kit is None or entry.card is None:
        console.print(f"[red]{model}: no validation for this model's pipeline[/red]")
        raise typer.Exit(code=2)
    settings = settings.model_copy(update={"pipeline_models": {str(entry.card.pipeline): model}})
    shadow_number = vs.shadow_version(settings, entry, shadow)
    attributes = [*ev.SUBGROUP_ATTRIBUTES, *kit.extra_subgroups, *(subgroup or [])]
    with tempfile.TemporaryDirectory() as tmp:
        dataset, labels, source = _inputs(
            kit, dataset, labels, synthetic=synthetic, seed=seed, folder=keep_dataset or Path(tmp)
        )
        timer = ComputeTimer()
        scored = asyncio.run(score_dataset(vs.pinned(settings, model, None), kit, dataset, timer))
        report = build_report(
            entry, kit, scored, labels, source=source, seed=bootstrap_seed,
            resamples=resamples, attributes=attributes,
        )  # fmt: skip
        serving = vs.version_of(entry, scored, timer, labels)
        report = with_shadow(report, settings, kit, serving, shadow_number, (dataset, labels))
    _print_summary(report, write_report(out or folder(entry.directory), report))


def _inputs(
    kit: ValidationKit,
    dataset: Path | None,
    labels: Path | None,
    *,
    synthetic: int | None,
    seed: int,
    folder: Path,
) -> tuple[Path, Path, str]:
    """The dataset, its labels and what it is: the one given, or the recipe's first
    `synthetic` held-out items written to `folder`."""
    if synthetic is not None:
        console.print(f"writing {synthetic} held-out items (recipe seed {seed}) to {folder}")
        labels = kit.write_heldout(folder, synthetic, seed)
        return folder, labels, f"recipe held-out set, seed {seed}, first {synthetic} items"
    if dataset is None or labels is None:
        raise typer.BadParameter("give --dataset and --labels, or --synthetic N")
    return dataset, labels, str(dataset)


def with_shadow(
    report: ValidationReport,
    settings: Settings,
    kit: ValidationKit,
    serving: Version,
    shadow_number: int | None,
    data: tuple[Path, Path],
) -> ValidationReport:
    """The report with the shadow version's comparison on the same dataset (when the
    model has one) and production's stored comparisons (when the store has any)."""
    model = report.model.name
    candidate = None
    if shadow_number is not None:
        entry = vs.load_shadow_entry(load_entry(settings.model_repository / model), shadow_number)
        candidate = score_shadow(settings, kit, *data, entry)
    return vs.with_shadow_sections(
        report, serving, candidate, vs.stored_comparisons(settings, model)
    )


def score_shadow(
    settings: Settings, kit: ValidationKit, dataset: Path, labels: Path, shadow: ModelEntry
) -> Version:
    """The shadow version scored on the same dataset, served on its own."""
    console.print(f"scoring the same items with shadow v{shadow.version}")
    timer = ComputeTimer()
    pinned = vs.pinned(settings, shadow.name, shadow.version)
    scored = asyncio.run(score_dataset(pinned, kit, dataset, timer))
    return vs.version_of(shadow, scored, timer, labels)


def _print_summary(report: ValidationReport, written: Written) -> None:
    table = Table("output", "n", "AUROC [95% CI]", "sensitivity", "specificity", "ECE")
    for o in report.outputs:
        ci = o.auroc.ci95
        table.add_row(
            o.output,
            f"{o.n} ({o.n_positive}+)",
            f"{o.auroc.value} [{ci.low}, {ci.high}]" if ci else str(o.auroc.value),
            f"{o.sensitivity.value} ({o.sensitivity.k}/{o.sensitivity.n})",
            f"{o.specificity.value} ({o.specificity.k}/{o.specificity.n})",
            str(o.ece.value),
        )
    console.print(table)
    if report.card_comparison:
        console.print(comparison_table(report))
    console.print(f"wrote {written.json} and {written.html}")
