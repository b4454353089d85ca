"""Batch mode agrees with the live path; the HTTP route refuses bad input clearly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from aidx.inference.settings import Role
from aidx.pipelines.labs.batch import (
    NOT_NUMERIC,
    SCREENED,
    UNIT_NOT_CONVERTIBLE,
    UNKNOWN_CODE,
    BatchScreener,
    ResultTable,
)
from aidx.pipelines.labs.rules import Rule
from aidx.pipelines.labs.screening import LabScreener

from ...conftest import auth
from ...integrations.hl7.messages import oru
from .helpers import CODES, NORMAL, specimen, with_screener


def test_batch_mode_gives_the_live_answers(tmp_path: Path) -> None:
    edta = {**NORMAL, "potassium": 7.9, "calcium": 5.9, "magnesium": 1.3, "alp": 21}
    panels = [NORMAL, {**NORMAL, "potassium": 6.9}, edta]

    async def work(screener: LabScreener) -> tuple[object, list[object]]:
        live = [(await screener.analyze([specimen(f"S{i}", p, patient_id=f"P{i}")]))[0]
                for i, p in enumerate(panels)]  # fmt: skip
        batch = BatchScreener(screener.catalogue, screener.anomaly)
        rows = [(i, k, v) for i, p in enumerate(panels) for k, v in p.items()]
        rows += [(0, "glucose", float("nan"))]  # duplicates are not the point here
        table = ResultTable(
            specimen=np.array([i for i, _, _ in rows] + [1, 1]),
            code=np.array([CODES[k][0] for _, k, _ in rows] + ["99999-9", "2345-7"]),
            value=np.array([float(v) for _, _, v in rows] + [1.0, 5.0]),
            unit=np.array([CODES[k][1] for _, k, _ in rows] + ["mmol/L", "g/L"]),
            prev_value=np.full(len(rows) + 2, np.nan),
            prev_age_h=np.full(len(rows) + 2, np.nan),
            sex=np.zeros(3, dtype=np.int64),
            age_y=np.full(3, 50.0),
        )
        return await batch.screen(table), live

    out, live = asyncio.run(with_screener(tmp_path, work))
    assert list(out.status[-3:]) == [NOT_NUMERIC, UNKNOWN_CODE, UNIT_NOT_CONVERTIBLE]
    assert (out.status[:-3] == SCREENED).all()
    assert list(out.verdict) == [1, 2, 1]  # invalid results hold S0; S1 critical; S2 EDTA
    assert out.specimen_flags[2] & Rule.edta_contamination
    assert [o.verdict.value for o in live] == ["release", "critical", "review"]  # type: ignore[attr-defined]


def test_bad_requests_get_clear_errors(client: TestClient) -> None:
    lab = auth(Role.lab)
    r = client.post(
        "/v1/labs/screen", content=b"{", headers={**lab, "Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_json"
    r = client.post("/v1/labs/screen", json={"specimens": []}, headers=lab)
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    r = client.post(
        "/v1/labs/screen",
        content=oru(version="2.1"),
        headers={**lab, "Content-Type": "x-application/hl7-v2+er7"},
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_hl7"
    assert "version" in r.json()["message"]
    r = client.post("/v1/labs/screen", content=b"x", headers={**lab, "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = client.post("/v1/labs/screen", json={"specimens": []}, headers=auth(Role.radiologist))
    assert r.status_code == 403
    r = client.post("/v1/labs/alerts/nope/ack", json={"reason": "checked"}, headers=lab)
    assert r.status_code == 404 and r.json()["code"] == "alert_not_found"


def test_hl7_over_http_and_the_result_message_back(client: TestClient) -> None:
    r = client.post(
        "/v1/labs/screen",
        content=oru("HTTP-1"),
        headers={
            **auth(Role.lab),
            "Content-Type": "x-application/hl7-v2+er7",
            "Accept": "x-application/hl7-v2+er7",
        },
    )
    assert r.status_code == 200
    assert r.text.startswith("MSH|") and "|ORU^R01^ORU_R01|" in r.text
    obx = [s for s in r.text.split("\r") if s.startswith("OBX|")]
    assert len(obx) == 2 and all(s.split("|")[8] == "N" for s in obx)
