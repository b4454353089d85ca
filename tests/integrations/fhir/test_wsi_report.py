"""A whole-slide report as FHIR: a surgical-pathology DiagnosticReport with the
suggested regions' summary, no chest body site, for review by a pathologist; a slide
without tissue is "not assessed" (dataAbsentReason), never negative."""

from __future__ import annotations

import json
from typing import Any

from aidx.inference.assessment import NotAssessed, NotAssessedReason
from aidx.inference.reports import Coding, Finding, ModelRef, Region, Report, SourceRef, Timings
from aidx.integrations.fhir.resources import build_bundle, bundle_json

NEOPLASM = Coding(scheme="SCT", code="108369006", meaning="Neoplasm")


def _report(finding: Finding) -> Report:
    return Report(
        id="wsi-fhir",
        pipeline="wsi",
        source=SourceRef(modality="SM", rows=2048, columns=3072),
        model=ModelRef(name="wsi_tiles", version=1, sha256=None, demo_weights=False),
        findings=[finding],
        timings=Timings(),
    )


def _resources(report: Report) -> dict[str, dict[str, Any]]:
    bundle = json.loads(bundle_json(build_bundle(report)))
    return {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}


def _region(rank: int, score: float) -> Region:
    return Region(
        x_min_px=0, y_min_px=0, x_max_px=512, y_max_px=512, peak_x_px=256.4,
        peak_y_px=128.0, peak_heat=0.9, score=score, area_mm2=0.0655, rank=rank,
    )  # fmt: skip


def test_regions_are_summarised_in_a_pathology_report() -> None:
    finding = Finding(
        concept=NEOPLASM, probability=0.93, threshold=0.34, present=True,
        regions=[_region(1, 0.88), _region(2, 0.61)],
    )  # fmt: skip
    found = _resources(_report(finding))
    diagnostic, observation = found["DiagnosticReport"], found["Observation"]
    assert diagnostic["category"][0]["coding"][0]["code"] == "SP"
    assert diagnostic["code"]["coding"][0]["code"] == "11526-1"  # LOINC Pathology study
    conclusion = diagnostic["conclusion"]
    assert "2 suspicious region(s) suggested for review" in conclusion
    assert "#1 score 0.88, 0.0655 mm2, peak at (256, 128) px" in conclusion
    assert "for review by a pathologist" in conclusion and "radiologist" not in conclusion
    assert "bodySite" not in observation
    assert observation["valueQuantity"]["value"] == 0.93
    assert any("suspicious region(s)" in n["text"] for n in observation["note"])


def test_a_slide_without_tissue_is_not_assessed() -> None:
    why = NotAssessed(reason=NotAssessedReason.no_tissue, message="no tissue was found")
    found = _resources(_report(Finding.not_assessed(NEOPLASM, 0.34, why)))
    observation = found["Observation"]
    assert "valueQuantity" not in observation and "interpretation" not in observation
    assert observation["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
    assert observation["dataAbsentReason"]["text"] == "not assessed: no_tissue"
    conclusion = found["DiagnosticReport"]["conclusion"]
    assert "Not assessed: Neoplasm (no_tissue: no tissue was found)" in conclusion
    assert "suspicious region" not in conclusion
