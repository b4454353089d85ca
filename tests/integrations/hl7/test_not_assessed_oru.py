"""Findings not assessed in the ORU^R01, on hand-built reports: OBX-11 X (results
cannot be obtained), no OBX-5 value, no OBX-8 flag, an NTE with the reason; the
out-of-distribution verdict as an NTE under the OBR. Valid for hl7apy's strict level."""

from __future__ import annotations

from pathlib import Path

import pytest

from aidx.inference.reports import Report
from aidx.integrations.hl7.report_oru import build_report_oru

from ..dicom.not_assessed_reports import (
    chest_cr,
    ct_not_assessed,
    ct_series,
    cxr_none_assessed,
    cxr_partly_assessed,
)
from .test_report_oru import strict

pytestmark = pytest.mark.integration


def segments(report: Report) -> list[list[str]]:
    text = build_report_oru(report, control_id="AIDXTEST").decode()
    strict(text)
    return [s.split("|") for s in text.strip("\r").split("\r")]


def finding_obx(rows: list[list[str]]) -> list[tuple[list[str], list[str]]]:
    """Each finding's OBX and the NTE after it (the first OBX is the study UID)."""
    at = [i for i, s in enumerate(rows) if s[0] == "OBX"][1:]
    return [(rows[i], rows[i + 1]) for i in at]


def assert_no_result(obx: list[str], nte: list[str], reason: str) -> None:
    assert obx[11] == "X"
    assert obx[2] == obx[5] == obx[6] == obx[8] == ""
    assert nte[0] == "NTE" and nte[3].startswith(f"not assessed ({reason}): ")


def test_one_not_assessed_one_assessed() -> None:
    rows = segments(cxr_partly_assessed(chest_cr()))
    (pneumonia, note), (cardiomegaly, _) = finding_obx(rows)
    assert pneumonia[3].startswith("233604007^Pneumonia^")
    assert_no_result(pneumonia, note, "out_of_distribution")
    assert cardiomegaly[2] == "NM" and cardiomegaly[5] == "0.8125"
    assert cardiomegaly[8] == "A" and cardiomegaly[11] == "P"
    obr_notes = [s[3] for s in rows[rows.index(next(s for s in rows if s[0] == "OBR")) :]
                 if s[0] == "NTE"]  # fmt: skip
    assert (
        "out-of-distribution check: out_of_distribution; score 41.7; threshold 30.2; "
        "method mahalanobis; policy not_assessed" in obr_notes
    )


def test_none_assessed_and_ct_without_lungs(tmp_path: Path) -> None:
    none = segments(cxr_none_assessed(chest_cr()))
    for obx, nte in finding_obx(none):
        assert_no_result(obx, nte, "blank_image")
    assert not [s for s in none if s[0] == "OBX" and s[11] == "P" and s[2] == "NM"]
    ct = segments(ct_not_assessed(ct_series(tmp_path)))
    ((obx, nte),) = finding_obx(ct)
    assert_no_result(obx, nte, "no_lungs")
    assert next(s for s in ct if s[0] == "OBR")[24] == "CT"
    assert any(s[0] == "NTE" and s[3].startswith("findings not assessed (no_lungs)") for s in ct)
