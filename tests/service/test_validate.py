"""`aidx models validate` end to end on a few of the recipes' held-out items (CXR
DICOM files, lab panels), through the serving path, and the models route's link to
the report it writes."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from aidx.inference.settings import Role
from aidx.inference.shadow_compare import tally
from aidx.inference.shadow_store import ShadowBatch, ShadowStore
from aidx.inference.store import create_store, init_store
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


def stored_shadow_runs(url: str) -> None:
    """A production store where shadow v2 ran beside v1 on two batches."""
    db = create_store(url)
    init_store(db)
    store = ShadowStore(db)
    x, y = np.array([0.1, 0.3, 0.8, 0.9]), np.array([0.2, 0.25, 0.7, 0.95])
    for _ in range(2):
        labels = {"Pneumonia": tally(x, y, 0.2635, 0.2635)}
        store.add(ShadowBatch("cxr_pneumonia", 1, 2, 4, 0.010, 0.012, labels))
    db.dispose()


def test_cxr_validation_compares_the_shadow_version_on_the_same_items(
    repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'aidx.db'}"
    stored_shadow_runs(url)
    monkeypatch.setenv("AIDX_DATABASE_URL", url)
    monkeypatch.setenv("AIDX_SHADOW_VERSIONS", '{"cxr_pneumonia": 2}')
    out = tmp_path / "reports"
    result = CliRunner().invoke(
        cli,
        [
            "models", "validate", "cxr_pneumonia", "--repository", str(repository),
            "--resamples", "100", "--synthetic", "8", "--seed", "0", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "latest.json").read_text())
    sections = {s["key"]: s for s in report["sections"]}
    shadow = sections["shadow"]
    assert shadow["title"] == "Shadow: v2 beside serving v1"
    outputs, latency = shadow["tables"]
    rows = {row[0]: dict(zip(outputs["columns"], row, strict=True)) for row in outputs["rows"]}
    assert set(rows) == {"Pneumonia", "Cardiomegaly"}
    pneumonia = rows["Pneumonia"]
    assert pneumonia["n (both scored)"] == 8
    agree, n = re.match(r"(\d+)/(\d+)", pneumonia["agreement"]).groups()  # type: ignore[union-attr]
    assert int(n) == 8 and 0 <= int(agree) <= 8
    assert -1 <= pneumonia["Pearson r"] <= 1 and -1 <= pneumonia["Spearman rho"] <= 1
    assert re.fullmatch(r"[\d.]+ \[[\d.]+, [\d.]+\]", pneumonia["AUROC serving [95% CI]"])
    assert re.fullmatch(r"[\d.]+ \[[\d.]+, [\d.]+\]", pneumonia["AUROC shadow [95% CI]"])
    versions = {row[0]: dict(zip(latency["columns"], row, strict=True)) for row in latency["rows"]}
    assert set(versions) == {"v1", "v2"}
    assert all(v["items"] == 8 and v["compute ms / item"] > 0 for v in versions.values())
    assert len(shadow["figures"]) == 1
    stored = sections["shadow_production"]
    (row,) = stored["tables"][0]["rows"]
    assert row[:4] == ["v1", "v2", "Pneumonia", 8] and row[4].startswith("6/8")
    assert row[-1] == "0.9723 (8)"
    (timing,) = stored["tables"][1]["rows"]
    assert timing == ["v1", "v2", 2, 8, 10.0, 12.0]
    page = (out / "latest.html").read_text()
    assert "Shadow: v2 beside serving v1" in page and "stored in production" in page
