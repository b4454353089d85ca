"""A CT report's lesion label map as a DICOM Segmentation (BINARY) with highdicom.

One segment per lesion (segment number n = the n-th lesion present in the label map,
label "Pneumonia-pattern opacity, lesion <k>"), every segment with the same coded
property, so the SR can reference each lesion's own segment:

- category SCT 49755003 "Morphologically abnormal structure" (DICOM CID 7150);
- type SCT 1217294009 "Ground glass opacity" (SNOMED CT International, 2025; used
  e.g. by HL7 LT's lung IG ValueSet pulmonary-nodule-type). SNOMED CT has no single
  concept for "ground-glass or consolidation"; the demo model does not tell the two
  apart, and the pattern it was trained on starts at ground glass;
- anatomic region SCT 39607008 "Lung".

Frames reference the source CT instances one by one (single-frame CT) or the frames
of the source instance (enhanced CT); empty frames are left out. UIDs are derived
from the report (source series + model), so a resend is the same instance. An empty
label map gives no SEG (`None`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from aidx.integrations.dicom.names import with_unambiguous_names
from aidx.integrations.dicom.uids import derived_uid
from aidx.pipelines.ct.report import CtReport

MANUFACTURER = "aidx"
SEG_SERIES_NUMBER = 9903
SEG_SERIES_DESCRIPTION = "aidx AI lesion masks (SEG)"
SEGMENT_LABEL = "Pneumonia-pattern opacity"
CATEGORY = hd.sr.CodedConcept("49755003", "SCT", "Morphologically abnormal structure")
PROPERTY_TYPE = hd.sr.CodedConcept("1217294009", "SCT", "Ground glass opacity")
LUNG = hd.sr.CodedConcept("39607008", "SCT", "Lung")


@dataclass(frozen=True)
class LabelMap:
    """The CT pipeline's labelmap.npz: uint8 [k, j, i] on the series grid, slice k
    taken from `sop_instance_uids[k]` (frame `frame_numbers[k]`, 0 = single-frame)."""

    labels: np.ndarray
    sop_instance_uids: list[str]
    frame_numbers: list[int]

    @classmethod
    def from_npz(cls, data: bytes) -> LabelMap:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            json.loads(str(npz["segments"]))  # present and well-formed
            return cls(
                labels=np.asarray(npz["labels"], dtype=np.uint8),
                sop_instance_uids=[str(u) for u in npz["sop_instance_uids"]],
                frame_numbers=[int(f) for f in npz["frame_numbers"]],
            )

    def lesion_numbers(self) -> list[int]:
        """Lesion labels present on the series grid, ascending."""
        return [int(v) for v in np.unique(self.labels) if v != 0]


def tracking_uid(report_id: str, lesion: int) -> str:
    """The lesion's tracking UID, shared by its SEG segment and its SR group."""
    return derived_uid("tracking", report_id, "lesion", str(lesion))


def segment_numbers(label_map: LabelMap) -> dict[int, int]:
    """Lesion number -> segment number (1..N, in lesion order)."""
    return {lesion: n for n, lesion in enumerate(label_map.lesion_numbers(), start=1)}


def _algorithm(report: CtReport) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=report.model.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=str(report.model.version),
    )


def _frames_in_source_order(
    label_map: LabelMap, sources: Sequence[pydicom.Dataset]
) -> tuple[list[pydicom.Dataset], np.ndarray]:
    """The source datasets and the label frames in the order highdicom pairs them:
    one single-frame instance per slice, or one multi-frame instance, frame by frame."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    missing = set(label_map.sop_instance_uids) - set(by_uid)
    if missing:
        raise ValueError(f"{len(missing)} instance(s) of the label map are not among the sources")
    if all(f == 0 for f in label_map.frame_numbers):
        return [by_uid[u] for u in label_map.sop_instance_uids], label_map.labels
    if len(set(label_map.sop_instance_uids)) != 1:
        raise ValueError("a label map over several multi-frame instances is not supported")
    source = by_uid[label_map.sop_instance_uids[0]]
    frames = np.zeros((int(source.NumberOfFrames), *label_map.labels.shape[1:]), np.uint8)
    for k, frame in enumerate(label_map.frame_numbers):
        frames[frame - 1] = label_map.labels[k]
    return [source], frames


TYPE2_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip


def with_type2(sources: Sequence[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """The sources, the first one (where highdicom takes patient and study from) a
    copy with the Type 2 patient/study attributes it lacks present and empty, and its
    person names unambiguous (names.py)."""
    if not sources:
        return []
    first = with_unambiguous_names(sources[0])
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in first:
            setattr(first, keyword, "")
    return [first, *sources[1:]]


def build_seg(
    report: CtReport, sources: Sequence[pydicom.Dataset], label_map: LabelMap
) -> hd.seg.Segmentation | None:
    """The SEG of `report`'s lesions on `sources` (the uploaded instances; pixel data
    not needed), or None when the label map is empty."""
    numbers = segment_numbers(label_map)
    if not numbers:
        return None
    images, labels = _frames_in_source_order(label_map, sources)
    images = with_type2(images)
    segment_of = np.zeros(256, dtype=np.uint8)
    for lesion, segment in numbers.items():
        segment_of[lesion] = segment
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=segment,
            segment_label=f"{SEGMENT_LABEL}, lesion {lesion}",
            segmented_property_category=CATEGORY,
            segmented_property_type=PROPERTY_TYPE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=_algorithm(report),
            tracking_uid=tracking_uid(report.id, lesion),
            tracking_id=f"{SEGMENT_LABEL} {lesion}",
            anatomic_regions=[LUNG],
        )
        for lesion, segment in numbers.items()
    ]
    return hd.seg.Segmentation(
        source_images=images,
        pixel_array=segment_of[labels],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=derived_uid("seg-series", report.id),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=derived_uid("seg", report.id),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=report.model.name,
        software_versions=str(report.model.version),
        device_serial_number=(report.model.sha256 or "unknown")[:16],
        series_description=SEG_SERIES_DESCRIPTION,
        content_label="LESIONS",
        content_description="AI lesion masks (demo weights)"
        if report.model.demo_weights
        else "AI lesion masks",
        content_creator_name="aidx^AI",
    )
