"""`aidx wsi ...`: analyse a whole slide from the command line, and write a
synthetic one for demos. Heavy imports happen inside the commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

wsi_app = typer.Typer(help="Whole-slide pathology: suggested suspicious regions.")
console = Console()


@wsi_app.command("analyze")
def analyze_slide(
    slide: Annotated[Path, typer.Argument(help="a slide OpenSlide reads (SVS, tiled TIFF...)")],
    out: Annotated[
        Path | None, typer.Option(help="folder for report.json, heatmap and GeoJSON")
    ] = None,
    mpp: Annotated[float | None, typer.Option(help="um/px, if the slide lacks it")] = None,
    mpp_override: Annotated[
        bool, typer.Option(help="use --mpp even where it contradicts the slide's own")
    ] = False,
    max_regions: Annotated[int, typer.Option(min=1)] = 10,
    repository: Annotated[Path | None, typer.Option(help="model repository")] = None,
    readers: Annotated[int, typer.Option(min=0, help="reader threads; 0: cores / 2")] = 0,
) -> None:
    """Tile the slide, score every tissue tile with the tile model, and print the
    top suspicious regions; the files go to OUT (default SLIDE.aidx/)."""
    from aidx.inference.errors import AidxError
    from aidx.inference.serving import ModelService
    from aidx.inference.settings import Settings
    from aidx.pipelines.wsi.analysis import AnalysisParams, build_report, tile_model
    from aidx.pipelines.wsi.slide import check_request_mpp, describe

    values: dict[str, object] = {"mode": "development", "dev_api_key": "cli-" + "x" * 28}
    if repository is not None:
        values["model_repository"] = repository
    settings = Settings(**values)  # type: ignore[arg-type]
    target = out or slide.with_name(slide.name + ".aidx")

    async def run() -> int:
        service = ModelService(settings)
        await service.start()
        try:
            info = describe(slide, mpp)
            check_request_mpp(info, override=mpp_override)
            model = tile_model(service)
            params = AnalysisParams(
                max_regions=max_regions, readers=readers, ood_policy=settings.ood_policy
            )
            result = await _with_progress_bar(service, info, params, model)
            report, files = build_report(result, model)
        except AidxError as exc:
            console.print(f"[red]{slide.name}: {exc.code}: {exc.message}[/red]")
            return 1
        finally:
            await service.stop()
        target.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (target / name).write_bytes(data)
        (target / "report.json").write_text(report.model_dump_json(indent=2))
        console.print(_regions_table(slide.name, report, result.tally.done, result.stream_s))
        console.print(f"wrote {target}/ (report.json, overlay.png, regions.geojson)")
        return 0

    raise typer.Exit(code=asyncio.run(run()))



async def _with_progress_bar(service, info, params, model):  # type: ignore[no-untyped-def]
    """The slide's analysis, with a progress bar of its tiles."""
    from aidx.pipelines.wsi.analysis import analyze

    columns = (TextColumn("[bold]tiles"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("tiles", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return await analyze(service, info, params, progress, model)

def _regions_table(title: str, report, tiles: int, seconds: float) -> Table:  # type: ignore[no-untyped-def]
    finding = report.findings[0]
    rate = tiles / seconds if seconds > 0 else 0.0
    if not finding.assessed:
        title = f"{title}: not assessed ({finding.not_assessed_message})"
    table = Table(
        "rank",
        "score",
        "peak",
        "area mm2",
        "bbox x0,y0,x1,y1 (level-0 px)",
        title=f"{title} - {report.model.name} v{report.model.version}: "
        f"{tiles} tiles at {rate:.0f} tiles/s",
        caption=report.disclaimer or "",
    )
    for r in finding.regions:
        table.add_row(
            str(r.rank),
            f"{r.score:.3f}",
            f"{r.peak_heat:.3f}",
            f"{r.area_mm2:.3f}",
            f"{r.x_min_px:.0f},{r.y_min_px:.0f},{r.x_max_px:.0f},{r.y_max_px:.0f}",
        )
    return table


@wsi_app.command("synth")
def synth(
    out: Annotated[Path, typer.Argument(help="the .tiff to write")],
    width: int = 8192,
    height: int = 6144,
    mpp: float = 0.5,
    seed: int = 0,
    suspicious: int = 2,
) -> None:
    """Write a synthetic pyramidal slide with planted suspicious areas (demo data)."""
    from aidx.pipelines.wsi.phantom import make_layout, write_slide

    layout = make_layout(seed, width, height, mpp=mpp, n_suspicious=suspicious)
    source = "render" if width * height <= 100_000_000 else "bank"
    write_slide(out, layout, source=source)
    planted = [
        {"x_px": round(b.x_px), "y_px": round(b.y_px), "radius_px": round(b.rx_px)}
        for b in layout.suspicious
    ]
    console.print(json.dumps({"slide": str(out), "suspicious": planted}))
