"""CT lesion SEG and the CT SR from a real CT report (the demo model on a synthetic
series written as real DICOM files), checked by dciodvfy (dicom3tools), dsrdump
(dcmtk) and read back with highdicom."""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from aidx.adapters.dicom_seg import LabelMap, build_seg, segment_numbers, with_type2
from aidx.adapters.dicom_sr import build_ct_sr
from aidx.adapters.writeback import dicom_bytes
from aidx.inference.settings import Role
from aidx.pipelines.ct import synthetic
from aidx.pipelines.ct.report import CtReport
from aidx.service.app import create_app

from ...conftest import auth, make_settings
from .test_writers import dciodvfy

pytestmark = pytest.mark.integration
SHAPE = (40, 80, 96)  # slices, rows, columns: small, but the demo model finds lesions
SPACING = (3.5, 3.5, 5.0)


@dataclass(frozen=True)
class AnalysedCt:
    report: CtReport
    sources: list[pydicom.Dataset]  # as uploaded, without pixels
    label_map: LabelMap
    label_map_npz: bytes


def ct_series(directory: Path, seed: int = 5) -> list[bytes]:
    rng = np.random.default_rng(seed)
    phantom = synthetic.generate(rng, shape_kji=SHAPE, spacing_mm=SPACING, n_lesions=2)
    return [p.read_bytes() for p in synthetic.write_series(phantom, directory)]


def post_series(client: TestClient, blobs: list[bytes]):  # type: ignore[no-untyped-def]
    files = [("files", (f"{n}.dcm", b, "application/dicom")) for n, b in enumerate(blobs)]
    return client.post("/v1/ct", files=files, headers=auth(Role.radiologist))


@pytest.fixture(scope="module")
def analysed_ct(tmp_path_factory: pytest.TempPathFactory) -> AnalysedCt:
    blobs = ct_series(tmp_path_factory.mktemp("ct-series"))
    var_dir = tmp_path_factory.mktemp("ct-var")
    settings = make_settings(var_dir, enabled_models=["ct_pneumonia"], writeback=False)
    with TestClient(create_app(settings)) as client:
        answer = post_series(client, blobs)
        assert answer.status_code == 200, answer.text
    report = CtReport.model_validate(answer.json())
    assert report.lesions, "the demo model should find the phantom's lesions"
    npz = (var_dir / "reports" / report.id / "labelmap.npz").read_bytes()
    sources = [pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True) for b in blobs]
    return AnalysedCt(report, sources, LabelMap.from_npz(npz), npz)


def test_seg_is_valid_and_reads_back_as_the_label_map(
    analysed_ct: AnalysedCt, tmp_path: Path
) -> None:
    report, label_map = analysed_ct.report, analysed_ct.label_map
    seg = build_seg(report, analysed_ct.sources, label_map)
    assert seg is not None
    path = tmp_path / "seg.dcm"
    path.write_bytes(dicom_bytes(seg))
    dciodvfy(path)

    back = hd.seg.segread(path)
    source = analysed_ct.sources[0]
    assert back.SegmentationType == "BINARY"
    assert back.StudyInstanceUID == source.StudyInstanceUID  # same study
    assert back.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert back.SeriesInstanceUID != source.SeriesInstanceUID
    numbers = segment_numbers(label_map)
    assert back.number_of_segments == len(numbers) == len(report.lesions)
    for lesion, segment in numbers.items():
        description = back.get_segment_description(segment)
        assert description.segment_label.endswith(f"lesion {lesion}")
        assert description.segmented_property_category.value == "49755003"
        assert description.segmented_property_type.value == "1217294009"
        assert description.algorithm_identification[0].AlgorithmName == report.model.name

    # Frame by frame: only slices with a lesion are referenced, and each frame's mask
    # is exactly the label map's slice (segment n = lesion n here: all lesions present).
    with_lesion = {
        uid for uid, k in zip(label_map.sop_instance_uids, label_map.labels, strict=True) if k.any()
    }
    referenced = {
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for frame in back.PerFrameFunctionalGroupsSequence
    }
    assert referenced == with_lesion
    pixels = back.get_pixels_by_source_instance(
        label_map.sop_instance_uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    assert pixels.shape == label_map.labels.shape
    assert np.array_equal(pixels, label_map.labels)


def test_seg_uids_are_deterministic(analysed_ct: AnalysedCt) -> None:
    first = build_seg(analysed_ct.report, analysed_ct.sources, analysed_ct.label_map)
    again = build_seg(analysed_ct.report, analysed_ct.sources[::-1], analysed_ct.label_map)
    assert first is not None and again is not None
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.SeriesInstanceUID == again.SeriesInstanceUID
    assert len(first.SOPInstanceUID) <= 64


def test_ct_sr_references_each_lesion_segment(analysed_ct: AnalysedCt, tmp_path: Path) -> None:
    report, label_map = analysed_ct.report, analysed_ct.label_map
    sources = with_type2(analysed_ct.sources)
    seg = build_seg(report, sources, label_map)
    sr = build_ct_sr(report, sources, seg, segment_numbers(label_map))
    path = tmp_path / "sr.dcm"
    path.write_bytes(dicom_bytes(sr))
    dciodvfy(path)
    assert sr.StudyInstanceUID == sources[0].StudyInstanceUID

    tree = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, check=True)
    out = tree.stdout
    assert "Imaging Measurement Report" in out and '"CT Chest"' in out
    assert out.count('"Measurement Group"') == 1 + len(report.lesions)
    assert out.count("Referenced Segment") == len(report.lesions)
    assert out.count('(mL,UCUM,"milliliter")') == len(report.lesions)
    for lesion in report.lesions:
        assert f'"Pneumonia-pattern opacity {lesion.number}"' in out
        assert f'NUM:(,,"Volume")="{lesion.volume_ml:g}"' in out.replace('.0"', '"')
    # The SR's lesion tracking UIDs are the SEG segments' tracking UIDs.
    assert seg is not None
    segment_uids = {d.tracking_uid for d in seg.SegmentSequence}  # type: ignore[attr-defined]
    for uid in segment_uids:
        assert f'"{uid}"' in out
    references = [
        item
        for item in _walk(sr.ContentSequence)
        if item.ValueType == "IMAGE" and "ReferencedSegmentNumber" in item.ReferencedSOPSequence[0]
    ]
    assert {r.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in references} == {
        seg.SOPInstanceUID
    }


def test_no_lesion_no_seg_and_the_sr_says_absent(analysed_ct: AnalysedCt, tmp_path: Path) -> None:
    report = analysed_ct.report.model_copy(deep=True)
    report.lesions = []
    report.findings[0].present = False
    empty = LabelMap(
        np.zeros_like(analysed_ct.label_map.labels),
        analysed_ct.label_map.sop_instance_uids,
        analysed_ct.label_map.frame_numbers,
    )
    sources = with_type2(analysed_ct.sources)
    assert build_seg(report, sources, empty) is None
    sr = build_ct_sr(report, sources, None, segment_numbers(empty))
    path = tmp_path / "sr.dcm"
    path.write_bytes(dicom_bytes(sr))
    dciodvfy(path)
    out = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, check=True).stdout
    assert out.count('"Measurement Group"') == 1
    assert '"Absent")' in out and "Referenced Segment" not in out


def _walk(items):  # type: ignore[no-untyped-def]
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))
