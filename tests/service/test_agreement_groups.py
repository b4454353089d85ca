"""Agreement per subgroup: three real chest CRs (pydicom's RG1_UNCR with the study
context of three sites, sexes and ages), answered by a radiologist; each answer moves
the rate of its own site, sex and age band, in the API and on /metrics, every rate
with its n, and the sites on /metrics are capped."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aidx.inference.agreement_metrics import FeedbackCollector
from aidx.inference.settings import Role
from aidx.service.app import create_app
from aidx.service.container import Services

from ..conftest import auth, dicom_bytes, make_settings

# (station, sex, age, birth date) -> site, sex, band
STUDIES = {
    "original": (None, None, None, None),  # THORAVISION, F, born 1940 seen 2004: 64
    "young_man": ("CR-ED-2", "M", "030Y", ""),
    "unknown": ("", "", "", ""),
}


def _study(station: str | None, sex: str | None, age: str | None, birth: str | None) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes("RG1_UNCR.dcm")))
    if station is not None:
        ds.StationName, ds.InstitutionName = station, ""
    if sex is not None:
        ds.PatientSex = sex
    if age is not None:
        ds.PatientAge = age
    if birth is not None:
        ds.PatientBirthDate = birth
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    var_dir: Path = tmp_path_factory.mktemp("agreement_groups")
    settings = make_settings(var_dir, enabled_models=["cxr_pneumonia"], writeback=False)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def reports(client: TestClient) -> dict[str, dict[str, Any]]:
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    made = {}
    for name, context in STUDIES.items():
        answer = client.post("/v1/cxr", content=_study(*context), headers=headers)
        assert answer.status_code == 200, answer.text
        made[name] = dict(answer.json())
    return made


def _answer(client: TestClient, report: dict[str, Any], verdict: str) -> None:
    answer = {"finding": "Pneumonia", "verdict": verdict}
    if verdict == "disagree":
        said_present = report["findings"][0]["present"]
        answer["reason"] = "false_positive" if said_present else "missed_finding"
    url = f"/v1/reports/{report['id']}/feedback"
    posted = client.post(url, json={"answers": [answer]}, headers=auth(Role.radiologist))
    assert posted.status_code == 200, posted.text


def _groups(client: TestClient, query: str) -> dict[str, dict[str, Any]]:
    answer = client.get(f"/v1/feedback/agreement?{query}", headers=auth(Role.engineer))
    assert answer.status_code == 200, answer.text
    rows = answer.json()["groups"]
    dimension = query.split("by=")[1].split("&")[0]
    return {row[dimension]: row for row in rows if row["finding"] == "Pneumonia"}


def _rates(groups: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, int]]:
    return {g: (row["agreement"]["value"], row["agreement"]["n"]) for g, row in groups.items()}


def _metric(client: TestClient, dimension: str) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == "aidx_feedback_group_answers":
            for s in family.samples:
                if s.labels["dimension"] == dimension:
                    key = (s.labels["group"], s.labels["verdict"])
                    found[key] = found.get(key, 0.0) + s.value
    return found


def test_the_reports_keep_their_study_context(reports: dict[str, dict[str, Any]]) -> None:
    source = reports["original"]["source"]
    assert (source["station_name"], source["patient_sex"], source["patient_age_y"]) == (
        "THORAVISION", "F", 64,
    )  # fmt: skip
    young = reports["young_man"]["source"]
    assert (young["station_name"], young["patient_sex"], young["patient_age_y"]) == (
        "CR-ED-2", "M", 30,
    )  # fmt: skip
    empty = reports["unknown"]["source"]
    assert (empty["station_name"], empty["patient_sex"], empty["patient_age_y"]) == (
        None, None, None,
    )  # fmt: skip


def test_each_answer_moves_its_own_subgroup(
    client: TestClient, reports: dict[str, dict[str, Any]]
) -> None:
    _answer(client, reports["original"], "agree")
    _answer(client, reports["young_man"], "disagree")
    _answer(client, reports["unknown"], "agree")
    assert _rates(_groups(client, "pipeline=cxr&by=sex")) == {
        "F": (1.0, 1), "M": (0.0, 1), "unknown": (1.0, 1),
    }  # fmt: skip
    assert _rates(_groups(client, "by=age_band")) == {
        "40-64": (1.0, 1), "18-39": (0.0, 1), "unknown": (1.0, 1),
    }  # fmt: skip
    assert _rates(_groups(client, "by=site")) == {
        "THORAVISION": (1.0, 1), "CR-ED-2": (0.0, 1), "unknown": (1.0, 1),
    }  # fmt: skip
    assert _metric(client, "sex") == {("F", "agree"): 1, ("M", "disagree"): 1,
                                      ("unknown", "agree"): 1}  # fmt: skip

    _answer(client, reports["young_man"], "agree")  # the reader changes their mind
    by_sex = _groups(client, "by=sex")
    assert _rates(by_sex)["M"] == (1.0, 1) and by_sex["M"]["disagree"] == 0
    said_present = reports["young_man"]["findings"][0]["present"] is True
    assert by_sex["M"]["ppv"] == ({"value": 1.0, "n": 1} if said_present else
                                  {"value": None, "n": 0})  # fmt: skip
    assert _metric(client, "sex")[("M", "agree")] == 1
    assert ("M", "disagree") not in _metric(client, "sex")
    assert _metric(client, "age_band")[("18-39", "agree")] == 1

    # Grouped by two dimensions and kept to one group of a third.
    both = client.get(
        "/v1/feedback/agreement?by=sex&by=site&age_band=40-64", headers=auth(Role.engineer)
    ).json()["groups"]
    assert [(g["sex"], g["site"], g["age_band"], g["agree"]) for g in both] == [
        ("F", "THORAVISION", None, 1)
    ]
    ungrouped = client.get("/v1/feedback/agreement", headers=auth(Role.engineer)).json()
    (overall,) = ungrouped["groups"]
    assert overall["agreement"] == {"value": 1.0, "n": 3} and overall["sex"] is None
    bad = client.get("/v1/feedback/agreement?by=patient_id", headers=auth(Role.engineer))
    assert bad.status_code == 422


def test_only_the_sites_with_most_answers_keep_their_name_on_metrics(
    client: TestClient, reports: dict[str, dict[str, Any]]
) -> None:
    for report in reports.values():
        _answer(client, report, "agree")  # (already current after the test above)
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    (_, groups) = FeedbackCollector(services.db, max_sites=1).collect()
    sites = {s.labels["group"] for s in groups.samples if s.labels["dimension"] == "site"}
    assert sites == {"CR-ED-2", "other", "unknown"}  # one answer each: the first name kept


def test_each_new_report_is_counted_once_with_its_outcome(
    client: TestClient, reports: dict[str, dict[str, Any]]
) -> None:
    def made() -> dict[tuple[str, str, str], float]:
        found: dict[tuple[str, str, str], float] = {}
        for family in text_string_to_metric_families(client.get("/metrics").text):
            if family.name == "aidx_reports":
                for s in family.samples:
                    if s.name == "aidx_reports_total":
                        key = (s.labels["pipeline"], s.labels["outcome"], s.labels["ood"])
                        found[key] = found.get(key, 0.0) + s.value
        return found

    (ood,) = {r["ood"]["status"] if r["ood"] else "none" for r in reports.values()}
    assert made() == {("cxr", "assessed", ood): 3.0}
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    resent = client.post("/v1/cxr", content=_study(*STUDIES["original"]), headers=headers)
    assert resent.json()["id"] == reports["original"]["id"]
    assert made() == {("cxr", "assessed", ood): 3.0}  # the same report, not a new one
