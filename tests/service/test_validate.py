"""`aidx models validate` end to end on a few of the recipes' held-out items (CXR
DICOM files, lab panels), through the serving path, and the models route's link to
the report it writes."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from aidx.inference.settings import Role
from aidx.service.app import create_app
from aidx.service.cli import app as cli
from tests.conftest import MODELS, auth, make_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo CXR and labs models, for the reports to be written beside."""
    root = tmp_path_factory.mktemp("models")
    for name in ("cxr_pneumonia", "labs_anomaly"):
        shutil.copytree(MODELS / name, root / name, ignore=shutil.ignore_patterns("validation"))
    return root


def run_validate(repository: Path, model: str, *args: str) -> dict:  # type: ignore[type-arg]
    result = CliRunner().invoke(
        cli,
        ["models", "validate", model, "--repository", str(repository), "--resamples", "100", *args],
    )
    assert result.exit_code == 0, result.output
    return json.loads((repository / model / "validation" / "latest.json").read_text())


@pytest.fixture(scope="module")
def cxr_report(repository: Path) -> dict:  # type: ignore[type-arg]
    return run_validate(repository, "cxr_pneumonia", "--synthetic", "8", "--seed", "0")


def test_cxr_validation_scores_dicom_files_through_the_pipeline(
    cxr_report: dict,  # type: ignore[type-arg]
    repository: Path,
) -> None:
    assert cxr_report["dataset"]["items"] == cxr_report["dataset"]["scored"] == 8
    outputs = {o["output"]: o for o in cxr_report["outputs"]}
    assert set(outputs) == {"Pneumonia", "Cardiomegaly"}
    pneumonia = outputs["Pneumonia"]
    assert pneumonia["threshold"] == 0.2635 and pneumonia["n"] == 8
    assert pneumonia["sensitivity"]["n"] + pneumonia["specificity"]["n"] == 8
    assert pneumonia["auroc"]["value"] is not None and pneumonia["auroc"]["ci95"] is not None
    # subgroups from the DICOM headers the phantoms carry
    groups = {(g["attribute"], g["value"]) for g in cxr_report["subgroups"]}
    assert ("view", "PA") in groups and ("manufacturer", "aidx synthetic") in groups
    metrics = {c["metric"] for c in cxr_report["card_comparison"]}
    assert {"auroc.Pneumonia", "sensitivity.Cardiomegaly", "specificity.Pneumonia"} <= metrics
    folder = repository / "cxr_pneumonia" / "validation"
    assert len(list(folder.glob("2*.json"))) == 1 and len(list(folder.glob("2*.html"))) == 1
    page = (folder / "latest.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 2


def test_labs_validation_reproduces_the_card_on_held_out_people(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(MODELS / "labs_anomaly", repository / "labs_anomaly")
    panels = tmp_path / "panels"
    report = run_validate(
        repository, "labs_anomaly", "--synthetic", "40", "--keep-dataset", str(panels)
    )
    assert (panels / "panels.csv").is_file() and (panels / "labels.csv").is_file()
    assert report["dataset"]["scored"] == 7 * 40  # normal and six injected kinds
    (anomaly,) = report["outputs"]
    assert anomaly["n_positive"] == 6 * 40 and anomaly["specificity"]["n"] == 40
    kinds = {g["value"] for g in report["subgroups"] if g["attribute"] == "kind"}
    assert {"none", "edta_contamination", "haemolysis"} <= kinds
    assert {g["attribute"] for g in report["subgroups"]} >= {"sex", "age_band", "kind"}
    rows = {c["metric"]: c for c in report["card_comparison"]}
    assert rows["heldout_detection_rate.edta_contamination.full"]["measured"]["value"] == 1.0
    assert "heldout_false_alarm_rate.full" in rows


@pytest.fixture(scope="module")
def client(
    repository: Path,
    cxr_report: dict,  # type: ignore[type-arg]
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("var"),
        model_repository=repository,
        enabled_models=["cxr_pneumonia", "labs_anomaly"],
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_models_route_links_the_latest_report(client: TestClient) -> None:
    model = client.get("/v1/models/cxr_pneumonia", headers=auth(Role.radiologist)).json()
    link = model["validation"]
    assert link["report_url"] == "/v1/models/cxr_pneumonia/validation"
    assert link["items"] == 8 and link["model_version"] == 1
    page = client.get(link["report_url"], headers=auth(Role.engineer))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "img-src data:" in page.headers["content-security-policy"]
    assert "Validation of cxr_pneumonia v1" in page.text
    refused = client.get(link["report_url"], headers=auth(Role.radiologist))
    assert refused.status_code == 403
    missing = client.get("/v1/models/labs_anomaly/validation", headers=auth(Role.engineer))
    assert missing.status_code == 404 and missing.json()["code"] == "no_validation_report"
    assert client.get("/v1/models/nope", headers=auth(Role.engineer)).status_code == 404
