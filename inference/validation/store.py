"""Where a model's validation reports live: `<model folder>/validation/`, as
`latest.json` and `latest.html` and a timestamped copy of each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aidx.inference.validation.report import ValidationReport

FOLDER = "validation"
LATEST = "latest"


@dataclass(frozen=True)
class Written:
    json: Path
    html: Path
    stamped_json: Path
    stamped_html: Path


def folder(model_directory: Path) -> Path:
    return model_directory / FOLDER


def write_report(out: Path, report: ValidationReport) -> Written:
    """Write the report's JSON and HTML into `out` (a model's: `folder(directory)`) as
    the latest and under its creation time."""
    from aidx.inference.validation.html import render_html  # matplotlib: only when writing

    out.mkdir(parents=True, exist_ok=True)
    stamp = report.created.strftime("%Y%m%dT%H%M%SZ")
    data, page = report.model_dump_json(indent=1), render_html(report)
    paths = Written(
        json=out / f"{LATEST}.json",
        html=out / f"{LATEST}.html",
        stamped_json=out / f"{stamp}.json",
        stamped_html=out / f"{stamp}.html",
    )
    for path, text in ((paths.stamped_json, data), (paths.stamped_html, page)):
        path.write_text(text)
    for path, text in ((paths.json, data), (paths.html, page)):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # a reader never sees half a report
    return paths


def latest_html(model_directory: Path) -> Path | None:
    path = folder(model_directory) / f"{LATEST}.html"
    return path if path.is_file() else None


def read_latest(model_directory: Path) -> ValidationReport | None:
    path = folder(model_directory) / f"{LATEST}.json"
    if not path.is_file():
        return None
    return ValidationReport.model_validate_json(path.read_text())
