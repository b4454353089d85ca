"""A whole-slide report as ORU^R01 is labelled surgical pathology (OBR-24 SP, HL7
table 0074), as its FHIR DiagnosticReport's category is, not radiology."""

from __future__ import annotations

import pytest

from aidx.inference.reports import Coding, Finding, ModelRef, Region, Report, SourceRef, Timings
from aidx.integrations.hl7.report_oru import build_report_oru

from .test_report_oru import strict

pytestmark = pytest.mark.integration
NEOPLASM = Coding(scheme="SCT", code="108369006", meaning="Neoplasm")


def _report(modality: str, pipeline: str) -> Report:
    region = Region(
        x_min_px=0, y_min_px=0, x_max_px=512, y_max_px=512, peak_x_px=256.0,
        peak_y_px=256.0, peak_heat=0.9, score=0.8, area_mm2=0.0655, rank=1,
    )  # fmt: skip
    finding = Finding(
        concept=NEOPLASM, probability=0.8, threshold=0.34, present=True, regions=[region]
    )
    return Report(
        id=f"{pipeline}-oru",
        pipeline=pipeline,
        source=SourceRef(modality=modality, study_instance_uid="1.2.3"),
        model=ModelRef(name="wsi_tiles", version=1, sha256=None, demo_weights=False),
        findings=[finding],
        timings=Timings(),
    )


def _obr(report: Report) -> list[str]:
    text = build_report_oru(report, control_id="AIDXSLIDE").decode()
    strict(text)
    return next(s.split("|") for s in text.strip("\r").split("\r") if s.startswith("OBR"))


def test_a_slide_report_is_surgical_pathology() -> None:
    obr = _obr(_report("SM", "wsi"))
    assert obr[24] == "SP"
    assert obr[4].startswith("AIDX-WSI^")


def test_imaging_keeps_its_sections() -> None:
    assert _obr(_report("CT", "ct"))[24] == "CT"
    assert _obr(_report("DX", "cxr"))[24] == "RX"
    assert _obr(_report("NM", "cxr"))[24] == "RAD"  # a modality without its own section
