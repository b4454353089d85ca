"""Findings not assessed in the SR (TID 1500), on hand-built reports: no Present or
Absent and no probability, but SCT "Undetermined" with the reason as text, and the
out-of-distribution verdict in the document's Qualitative Evaluations; still valid
for dciodvfy (dicom3tools), dsrdump (dcmtk) and tid1500reader (dcmqi)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest

from aidx.adapters.dicom_seg import with_type2
from aidx.adapters.dicom_sr import build_ct_sr, build_sr
from aidx.adapters.writeback import dicom_bytes
from aidx.inference.reports import Report

from .not_assessed_reports import (
    chest_cr,
    ct_not_assessed,
    ct_series,
    cxr_none_assessed,
    cxr_partly_assessed,
)
from .test_writers import TID1500READER, dciodvfy

pytestmark = pytest.mark.integration
UNDETERMINED = "373068000"


def validated(sr: pydicom.Dataset, tmp_path: Path) -> tuple[list[dict[str, Any]], str]:
    """dciodvfy passes; the groups as tid1500reader reads them and dsrdump's tree."""
    path = tmp_path / "sr.dcm"
    path.write_bytes(dicom_bytes(sr))
    dciodvfy(path)
    out = tmp_path / "sr.json"
    subprocess.run(
        [TID1500READER, "--inputDICOM", str(path), "--outputMetadata", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    tree = subprocess.run(["dsrdump", "+Pl", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.read_text())["Measurements"], tree.stdout


def assert_not_assessed(group: dict[str, Any], reason: str) -> None:
    assert group["measurementItems"] == []  # no probability
    coded, text = group["qualitativeEvaluations"]
    assert coded["conceptValue"]["CodeValue"] == UNDETERMINED
    assert coded["conceptValue"]["CodingSchemeDesignator"] == "SCT"
    assert text["conceptValue"].startswith(f"Not assessed ({reason}): ")


def by_finding(groups: list[dict[str, Any]], report: Report) -> dict[str, dict[str, Any]]:
    meanings = {g["Finding"]["CodeMeaning"]: g for g in groups}
    assert len(meanings) == len(groups) == len(report.findings)
    return meanings


def test_cxr_one_not_assessed_one_assessed(tmp_path: Path) -> None:
    source = chest_cr()
    report = cxr_partly_assessed(source)
    groups, tree = validated(build_sr(report, [source]), tmp_path)
    mine = by_finding(groups, report)
    assert_not_assessed(mine["Pneumonia"], "out_of_distribution")
    (probability,) = mine["Cardiomegaly"]["measurementItems"]
    assert float(probability["value"]) == pytest.approx(0.8125)
    (verdict,) = mine["Cardiomegaly"]["qualitativeEvaluations"]
    assert verdict["conceptValue"]["CodeMeaning"] == "Present"
    assert '"Qualitative Evaluations"' in tree
    assert "status out_of_distribution; score 41.7; threshold 30.2; method mahalanobis" in tree
    assert '(out_of_distribution,99AIDX,"out of distribution")' in tree


def test_cxr_none_assessed(tmp_path: Path) -> None:
    source = chest_cr()
    report = cxr_none_assessed(source)
    groups, tree = validated(build_sr(report, [source]), tmp_path)
    for group in by_finding(groups, report).values():
        assert_not_assessed(group, "blank_image")
    assert '"Present")' not in tree and '"Absent")' not in tree and "Probability" not in tree
    assert "Not assessed (blank_image): The image is near-constant." in tree
    assert "status uncalibrated; score none; threshold none" in tree


def test_ct_no_lesions_not_assessed(tmp_path: Path) -> None:
    sources = with_type2(ct_series(tmp_path / "series"))
    report = ct_not_assessed(sources)
    sr = build_ct_sr(report, sources, None, {})  # no lesion: no SEG
    assert sr.StudyInstanceUID == sources[0].StudyInstanceUID
    groups, tree = validated(sr, tmp_path)
    (group,) = by_finding(groups, report).values()
    assert_not_assessed(group, "no_lungs")
    assert '"CT Chest"' in tree and "Referenced Segment" not in tree
    assert '"Absent")' not in tree and '"Present")' not in tree
    assert "Not assessed (no_lungs): No aerated lung in the volume (0.0 mL)." in tree
