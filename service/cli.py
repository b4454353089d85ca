"""The `aidx` command: serve, inspect and verify models, analyze files."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from aidx.inference.key_policy import hash_key, weakness
from aidx.inference.repository import scan
from aidx.inference.settings import Role, Settings
from aidx.pipelines.wsi.cli import wsi_app
from aidx.service.validate import validate

if TYPE_CHECKING:
    from aidx.inference.ood_calibration import Calibration

app = typer.Typer(help="aidx: AI diagnostic assist (demo weights are not for clinical use)")
models_app = typer.Typer(help="Inspect, verify and add models in the repository.")
keys_app = typer.Typer(help="API keys: make one that meets the production policy.")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(wsi_app, name="wsi")
models_app.command("validate")(validate)
console = Console()

RepoOption = Annotated[Path | None, typer.Option(help="model repository (default: settings)")]


def _settings(repository: Path | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = {k: v for k, v in overrides.items() if v is not None}
    if repository is not None:
        values["model_repository"] = repository
    return Settings(**values)  # type: ignore[arg-type]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    log_level: str = "info",
) -> None:
    """Run the HTTP service (settings from AIDX_* environment variables)."""
    import uvicorn

    from aidx.service.app import create_app
    from aidx.service.http_protocol import bounded_protocol

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    settings = _settings(host=host, port=port)
    service = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            service.state.services.labs.end_streams()  # else the graceful shutdown waits them out
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        service,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        # a client that never finishes cannot hold a stop (AIDX_SHUTDOWN_TIMEOUT_S)
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        # request heads bounded in bytes and time, idle connections closed (AIDX_HTTP_*)
        http=bounded_protocol(settings.http),
        timeout_keep_alive=settings.http.keep_alive_timeout_s,
    )
    Server(config).run()


def _device_of(settings: Settings) -> str:
    from aidx.gpu.providers import device_name, select_providers

    try:
        first = select_providers(settings.device.value)[0]
    except RuntimeError as exc:
        return f"unavailable ({exc})"
    return device_name(first[0] if isinstance(first, tuple) else first)


def _models_table(repository: Path | None) -> tuple[Table, int]:
    settings = _settings(repository, mode="development")
    table = Table("model", "version", "backend", "device", "checksum", "status")
    problems = 0
    for entry in track(
        scan(settings.model_repository), description="checking", transient=True, console=console
    ):
        checksum = {True: "ok", False: "MISMATCH", None: "not listed"}[entry.checks.get("sha256")]
        status = entry.problem or "ok"
        problems += entry.problem is not None
        table.add_row(
            entry.name, str(entry.version), "onnxruntime", _device_of(settings), checksum, status
        )
    return table, problems


@models_app.command("list")
def models_list(repository: RepoOption = None) -> None:
    """Each model's version, backend, device and checksum status."""
    table, _ = _models_table(repository)
    console.print(table)


@models_app.command("verify")
def models_verify(repository: RepoOption = None) -> None:
    """Check every model's checksum against its card and that it loads and runs.
    Exits 1 if any model would stay out of service."""
    from aidx.inference.serving import ModelService

    table, problems = _models_table(repository)
    console.print(table)
    service = ModelService(_settings(repository, mode="development"))

    async def load() -> None:
        await service.start()
        await service.stop()

    asyncio.run(load())
    for served in service.models.values():
        if served.reason and served.reason != served.entry.problem:
            console.print(f"[red]{served.name}[/red]: {served.reason}")
            problems += 1
    raise typer.Exit(code=1 if problems else 0)


@models_app.command("export-xrv")
def models_export_xrv(
    repository: RepoOption = None,
    weights: Annotated[
        Path | None, typer.Option(help="a local torchxrayvision weights file")
    ] = None,
    name: str = "xrv_densenet",
) -> None:
    """Write a torchxrayvision DenseNet into the repository layout (needs `aidx[xrv]`)."""
    from aidx.pipelines.cxr.xrv_export import export_xrv

    settings = _settings(repository, mode="development")
    path = export_xrv(settings.model_repository / name, weights=weights)
    console.print(f"wrote {path}")


def _named_folders(pairs: list[str]) -> dict[str, Path]:
    folders = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not Path(folder).is_dir():
            raise typer.BadParameter(f"{pair!r} is not NAME=FOLDER with an existing folder")
        folders[name] = Path(folder)
    return folders


@models_app.command("calibrate-ood")
def models_calibrate_ood(
    model: Annotated[str, typer.Argument(help="the model's folder in the repository")],
    dataset: Annotated[
        Path | None,
        typer.Option(help="in-distribution inputs: DICOM files (CXR), series (CT), slides (WSI)"),
    ] = None,
    synthetic: Annotated[
        int | None, typer.Option(help="instead: N phantoms (tiles) per split from the recipe")
    ] = None,
    ood_set: Annotated[
        list[str] | None, typer.Option(help="NAME=FOLDER: a further out-of-distribution set")
    ] = None,
    builtin_sets: Annotated[
        bool, typer.Option(help="also measure the built-in sets (pydicom-data, drawn)")
    ] = True,
    target_frr: Annotated[float, typer.Option(min=0.001, max=0.05)] = 0.01,
    seed: int = 0,
    workers: int = 1,
    repository: RepoOption = None,
) -> None:
    """Fit the model's out-of-distribution gate, measure it, and write its reference
    (<version>/ood.npz) and the card's `ood:` section and table."""
    from aidx.inference.ood_calibration import write_calibration
    from aidx.inference.repository import load_entry

    settings = _settings(repository, mode="development")
    entry = load_entry(settings.model_repository / model, verify=False)
    calibration_for = _calibration_for(entry.card.pipeline if entry.card else None)
    if calibration_for is None:
        console.print(f"[red]{model}: calibrate-ood reads CXR, CT and WSI models only[/red]")
        raise typer.Exit(code=2)
    try:
        calibration = calibration_for(
            dataset=dataset,
            synthetic_images=synthetic,
            recipe_seed=seed,
            extra_sets=_named_folders(ood_set or []),
            builtin_sets=builtin_sets,
            target_frr=target_frr,
            workers=workers,
        )
    except ValueError as exc:
        console.print(f"[red]{model}: {exc}[/red]")
        raise typer.Exit(code=1) from None
    path = write_calibration(entry.directory, entry.version, calibration)
    console.print(_ood_table(calibration.section))
    console.print(f"wrote {path} and the card's `ood:` section")


def _calibration_for(pipeline: object) -> Callable[..., Calibration] | None:
    """The pipeline's side of the calibration: how its inputs become model tensors
    and which out-of-distribution sets it is measured on (None: not an imaging model)."""
    from aidx.inference.model_card import Pipeline

    if pipeline is Pipeline.cxr:
        from aidx.pipelines.cxr import ood_sets as cxr

        return cxr.calibration_for
    if pipeline is Pipeline.ct:
        from aidx.pipelines.ct import ood_sets as ct

        return ct.calibration_for
    if pipeline is Pipeline.wsi:
        from aidx.pipelines.wsi import ood_sets as wsi

        return wsi.calibration_for
    return None


def _ood_table(section) -> Table:  # type: ignore[no-untyped-def]
    table = Table(
        "set", "images", "detected", "rate",
        title=f"threshold {section.threshold}: false-rejection rate "
        f"{section.false_rejection_rate:.1%} on {section.heldout_images} held-out images",
    )  # fmt: skip
    for name, result in section.detection.items():
        table.add_row(name, str(result.images), str(result.detected), f"{result.rate:.1%}")
    return table


@models_app.command("drift-reference")
def models_drift_reference(
    model: Annotated[str, typer.Argument(help="the model's folder in the repository")],
    dataset: Annotated[
        Path | None,
        typer.Option(help="reference inputs: the site's DICOM files, CT series folders or slides"),
    ] = None,
    synthetic: Annotated[
        int | None, typer.Option(help="instead: the recipe's first N held-out inputs")
    ] = None,
    seed: int = 0,
    repository: RepoOption = None,
) -> None:
    """Analyse the reference inputs as served and write what the model saw and said
    (<version>/drift.json), its sha256 in the card's `files` and a section of prose."""
    from aidx.inference.drift import DriftReference
    from aidx.inference.drift_reference import write_reference
    from aidx.inference.repository import load_entry
    from aidx.service import drift_inputs

    if (dataset is None) == (synthetic is None):
        raise typer.BadParameter("give either --dataset or --synthetic")
    settings = _settings(repository, mode="development", enabled_models=[model])
    entry = load_entry(settings.model_repository / model, verify=False)
    if entry.card is None:
        console.print(f"[red]{model}: no model card[/red]")
        raise typer.Exit(code=2)
    pipeline = entry.card.pipeline
    settings = _settings(repository, mode="development", enabled_models=[model],
                         pipeline_models={pipeline.value: model})  # fmt: skip
    try:
        observations, what = asyncio.run(drift_inputs.observations(
            pipeline, settings, dataset=dataset, synthetic=synthetic, seed=seed, console=console,
        ))  # fmt: skip
    except drift_inputs.NoReferenceInputs as exc:
        console.print(f"[red]{model}: {exc}[/red]")
        raise typer.Exit(code=2) from exc
    reference = DriftReference.fit(observations, model=model, version=entry.version, dataset=what)
    path = write_reference(entry.directory, entry.version, reference)
    console.print(f"wrote {path} ({len(reference.features)} features, {reference.n} inputs)")


@app.command()
def analyze(
    files: Annotated[list[Path], typer.Argument(help="chest radiographs, DICOM")],
    repository: RepoOption = None,
) -> None:
    """Run the chest X-ray pipeline on DICOM files and print the findings."""
    from aidx.inference.cpu_stage import CpuStage
    from aidx.inference.errors import AidxError
    from aidx.inference.reports import ReportStore
    from aidx.inference.serving import ModelService
    from aidx.pipelines.cxr.pipeline import CxrPipeline

    settings = _settings(repository, mode="development")

    async def run() -> int:
        service = ModelService(settings)
        await service.start()
        failures = 0
        with tempfile.TemporaryDirectory() as tmp:
            store = ReportStore(Path(tmp))
            pipeline = CxrPipeline(service, store, CpuStage(1), settings.ood_policy)
            for path in track(files, description="analyzing", console=console):
                try:
                    report = await pipeline.analyze(path.read_bytes())
                except (AidxError, OSError) as exc:
                    failures += 1
                    code = getattr(exc, "code", "unreadable_file")
                    console.print(f"[red]{path.name}: {code}: {exc}[/red]")
                    continue
                console.print(_findings_table(path.name, report))
        await service.stop()
        return failures

    raise typer.Exit(code=1 if asyncio.run(run()) else 0)


def _findings_table(title: str, report) -> Table:  # type: ignore[no-untyped-def]
    table = Table(
        "finding",
        "code",
        "probability",
        "threshold",
        "present",
        "regions (x0,y0,x1,y1 px)",
        title=f"{title} - {report.model.name} v{report.model.version}",
        caption=" ".join(filter(None, [report.disclaimer, _not_assessed_caption(report)])),
    )
    for f in report.findings:
        boxes = "; ".join(
            f"{r.x_min_px:.0f},{r.y_min_px:.0f},{r.x_max_px:.0f},{r.y_max_px:.0f}"
            for r in f.regions
        )
        if f.assessed and f.probability is not None:
            probability, present = f"{f.probability:.3f}", "yes" if f.present else "no"
        else:  # no probability and no present/absent it could stand by
            probability = f"not assessed ({f.not_assessed_reason or 'unknown'})"
            present = "not assessed"
        table.add_row(
            f.concept.meaning,
            f"{f.concept.scheme} {f.concept.code}",
            probability,
            f"{f.threshold:.3f}",
            present,
            boxes,
        )
    return table


def _not_assessed_caption(report) -> str:  # type: ignore[no-untyped-def]
    why = report.not_assessed
    return f"Not assessed ({why.reason}): {why.message}" if why is not None else ""


@keys_app.command("new")
def keys_new(name: str, role: Role) -> None:
    """A random key (shown once; give it to the client) and the AIDX_API_KEYS entry
    that configures it by its hash alone."""
    import json
    import secrets

    key = secrets.token_urlsafe(32)
    assert weakness(key) is None  # 43 characters, about 5 bits each
    entry = {"name": name, "role": role.value, "key_sha256": hash_key(key)}
    print(f"key (shown once): {key}")
    print(f"AIDX_API_KEYS entry: {json.dumps(entry)}")


def main() -> None:
    app()
