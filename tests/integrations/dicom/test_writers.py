"""SR (TID 1500) and overlay secondary capture from a real report on a real chest CR,
checked by independent validators: dciodvfy (dicom3tools), dsrdump (dcmtk) and
tid1500reader (dcmqi)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pydicom
import pytest

from aidx.adapters.dicom_sr import build_sr
from aidx.adapters.writeback import dicom_bytes
from aidx.integrations.dicom.sc import build_overlay_sc

from ..conftest import AnalysedCxr

pytestmark = pytest.mark.integration
TID1500READER = str(Path(sys.executable).parent / "tid1500reader")  # PyPI dcmqi


def dciodvfy(path: Path) -> str:
    """dciodvfy's report; fails the test on any error (warnings are allowed)."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "Error" not in out, out
    return out


@pytest.fixture(scope="module")
def source(analysed_cxr: AnalysedCxr) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(analysed_cxr.source))


def test_sr_is_valid_tid1500_with_every_finding(
    analysed_cxr: AnalysedCxr, source: pydicom.Dataset, tmp_path: Path
) -> None:
    report = analysed_cxr.report
    sr = build_sr(report, [source])
    path = tmp_path / "sr.dcm"
    path.write_bytes(dicom_bytes(sr))
    dciodvfy(path)
    assert sr.StudyInstanceUID == source.StudyInstanceUID  # results land in the same study
    assert sr.PatientID == source.PatientID
    assert sr.PreliminaryFlag == "PRELIMINARY"

    tree = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, check=True)
    assert "Imaging Measurement Report" in tree.stdout
    assert "SCOORD" in tree.stdout and "Tracking Unique Identifier" in tree.stdout
    assert f'"{report.model.name} v{report.model.version}"' in tree.stdout  # observer device

    out = tmp_path / "sr.json"
    subprocess.run(
        [TID1500READER, "--inputDICOM", str(path), "--outputMetadata", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    groups = json.loads(out.read_text())["Measurements"]
    expected_groups = sum(max(1, len(f.regions)) for f in report.findings)
    assert len(groups) == expected_groups
    for finding in report.findings:
        mine = [g for g in groups if g["Finding"]["CodeValue"] == finding.concept.code]
        assert mine, finding.concept
        for group in mine:
            item = group["measurementItems"][0]
            assert item["quantity"]["CodeValue"] == "122157"  # DCM Probability
            assert float(item["value"]) == pytest.approx(finding.probability, abs=1e-6)
            verdict = group["qualitativeEvaluations"][0]["conceptValue"]["CodeMeaning"]
            assert verdict == ("Present" if finding.present else "Absent")
            assert group["measurementAlgorithmIdentification"]["AlgorithmName"] == report.model.name


def test_sr_regions_are_in_source_pixels(
    analysed_cxr: AnalysedCxr, source: pydicom.Dataset
) -> None:
    sr = build_sr(analysed_cxr.report, [source])
    coords = [item for item in _walk(sr.ContentSequence) if item.ValueType == "SCOORD"]
    regions = [r for f in analysed_cxr.report.findings for r in f.regions]
    assert len(coords) == len(regions) > 0
    for item, region in zip(coords, regions, strict=True):
        xs, ys = item.GraphicData[0::2], item.GraphicData[1::2]
        assert min(xs) == pytest.approx(region.x_min_px, abs=0.01)
        assert max(ys) == pytest.approx(region.y_max_px, abs=0.01)
        assert max(xs) <= source.Columns and max(ys) <= source.Rows
        ref = item.ContentSequence[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID


def _walk(items):  # type: ignore[no-untyped-def]
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def test_overlay_sc_is_valid_and_in_the_study(
    analysed_cxr: AnalysedCxr, source: pydicom.Dataset, tmp_path: Path
) -> None:
    rgb = analysed_cxr.overlay_rgb
    sc = build_overlay_sc(analysed_cxr.report, source, rgb)
    path = tmp_path / "sc.dcm"
    path.write_bytes(dicom_bytes(sc))
    dciodvfy(path)
    back = pydicom.dcmread(path)
    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert back.SeriesInstanceUID != source.SeriesInstanceUID
    assert back.PhotometricInterpretation == "RGB"
    assert (back.pixel_array == rgb).all()
    assert back.BurnedInAnnotation == "YES"


def test_uids_are_deterministic(analysed_cxr: AnalysedCxr, source: pydicom.Dataset) -> None:
    """The same report gives the same SOP/series UIDs: a resend is the same instance."""
    first = build_sr(analysed_cxr.report, [source])
    again = build_sr(analysed_cxr.report, [source])
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.SeriesInstanceUID == again.SeriesInstanceUID
    rgb = analysed_cxr.overlay_rgb
    sc1 = build_overlay_sc(analysed_cxr.report, source, rgb)
    sc2 = build_overlay_sc(analysed_cxr.report, source, rgb)
    assert sc1.SOPInstanceUID == sc2.SOPInstanceUID != first.SOPInstanceUID
    assert len(first.SOPInstanceUID) <= 64


def test_writing_objects_warns_with_no_names(
    analysed_cxr: AnalysedCxr, source: pydicom.Dataset
) -> None:
    """Warnings reach the logs: none may carry the source's person names (PHI)."""
    names = {str(source.get(k, "")) for k in ("ReferringPhysicianName", "PatientName")} - {""}
    assert names  # the chest CR names a referring physician ("ward") and a patient
    with warnings.catch_warnings(record=True) as caught:
        build_sr(analysed_cxr.report, [source])
        build_overlay_sc(analysed_cxr.report, source, analysed_cxr.overlay_rgb)
    leaked = [str(w.message) for w in caught if any(n in str(w.message) for n in names)]
    assert leaked == []
