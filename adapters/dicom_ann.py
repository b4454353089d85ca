"""A whole-slide report's suggested regions as a DICOM Microscopy Bulk Simple
Annotations object (ANN) with highdicom, for the slide's own study in the PACS.

One annotation group, "Suspicious region (AI)", one POLYGON per region (the open
ring: the ANN repeats no first point, unlike the SR), with coded property

- category SCT 49755003 "Morphologically abnormal structure" (DICOM CID 7150);
- type: the finding's own concept from the model card (wsi_tiles: SCT 108369006
  "Neoplasm", a member of CID 8135 "Microscopy Annotation Property Types"). The group
  label and description say the regions are suggested for review, not diagnosed;

generated AUTOMATIC by the model (AlgorithmIdentificationSequence: family DCM 123110
"Artificial Intelligence", the model's name and version) and two measurements per
region: DCM 122157 "Probability" (the region's score, the mean tile probability, unit
"1") and SCT 42798000 "Area" (the flagged tiles' area, mm2).

Coordinates are 3D (x, y, z in mm, float64) in the slide's Frame of Reference, the
one the source shares: each region's level-0 outline, OpenSlide's frame ((0, 0) the
top left corner of the top left pixel, as highdicom's image coordinates), is mapped
through the level-0 total pixel matrix's origin, orientation and spacing. A viewer
then draws them on any level of the pyramid; mapping back gives the same level-0
pixels. (2D coordinates would do as well, but dicom3tools' dciodvfy refuses every
2D ANN for lacking Common Z Coordinate Value, a 3D-only attribute.)

Only a slide that is a DICOM WSI gets an ANN: an ANN must reference the image it
annotates, and a TIFF/SVS read from a folder or an upload has no image in the PACS
(study context alone would give a viewer nothing to draw on). Such a slide's report
still goes to the EMR; to get its regions into the PACS, store the slide there as
DICOM WSI first and analyse that. A report with no region (or not assessed) gives no
ANN either. UIDs are derived from the report id, so a resend is the same instance.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.misc import is_dicom
from pydicom.sr.codedict import codes
from pydicom.uid import VLWholeSlideMicroscopyImageStorage

from aidx.adapters.dicom_seg import with_type2
from aidx.adapters.dicom_sr import concept
from aidx.inference.reports import Finding, Region, Report
from aidx.integrations.dicom.uids import derived_uid

MANUFACTURER = "aidx"
ANN_SERIES_NUMBER = 9904
ANN_SERIES_DESCRIPTION = "aidx AI suggested regions (ANN)"
GROUP_LABEL = "Suspicious region (AI)"
GROUP_DESCRIPTION = (
    "Regions suggested by an AI tile model for review by a pathologist; not a diagnosis. "
    "Probability: the mean tile probability over the region."
)
CATEGORY = hd.sr.CodedConcept("49755003", "SCT", "Morphologically abnormal structure")
RED = hd.color.CIELabColor(53.2, 80.1, 67.2)  # sRGB (255, 0, 0)


def slide_source_header(slide_path: Path) -> pydicom.Dataset | None:
    """The level-0 instance's header (no pixel data) of the DICOM WSI that
    `slide_path` opens, or None when the slide is not DICOM. OpenSlide opens a DICOM
    WSI by any of its instances and finds the others in the same folder; level 0 is
    the largest VOLUME image of the same series there."""
    if slide_path.is_dir() or not is_dicom(str(slide_path)):
        return None
    given = pydicom.dcmread(slide_path, stop_before_pixels=True)
    if given.SOPClassUID != VLWholeSlideMicroscopyImageStorage:
        return None
    best = given if _is_volume(given) else None
    for path in sorted(slide_path.parent.iterdir()):
        if path == slide_path or not path.is_file() or not is_dicom(str(path)):
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        same = ds.get("SeriesInstanceUID") == given.SeriesInstanceUID
        if same and _is_volume(ds) and (best is None or _pixels(ds) > _pixels(best)):
            best = ds
    return best


def _is_volume(ds: pydicom.Dataset) -> bool:
    return ds.get("SOPClassUID") == VLWholeSlideMicroscopyImageStorage and "VOLUME" in list(
        ds.get("ImageType", [])
    )


def _pixels(ds: pydicom.Dataset) -> int:
    return int(ds.TotalPixelMatrixColumns) * int(ds.TotalPixelMatrixRows)


def ring(polygon_px: list[list[float]]) -> np.ndarray:
    """A region's closed ring as the ANN's open POLYGON, float64 (column, row)."""
    points = np.asarray(polygon_px, dtype=np.float64)
    if len(points) > 1 and np.array_equal(points[0], points[-1]):
        points = points[:-1]
    return points


def _algorithm(report: Report) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=report.model.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=str(report.model.version),
    )


def _group(report: Report, finding: Finding, source: pydicom.Dataset) -> hd.ann.AnnotationGroup:
    regions = finding.regions
    to_slide = hd.spatial.ImageToReferenceTransformer.for_image(source, for_total_pixel_matrix=True)
    scores = np.array([r.score if r.score is not None else np.nan for r in regions])
    areas = np.array([r.area_mm2 if r.area_mm2 is not None else np.nan for r in regions])
    return hd.ann.AnnotationGroup(
        number=1,
        uid=derived_uid("ann-group", report.id, "1"),
        label=GROUP_LABEL,
        annotated_property_category=CATEGORY,
        annotated_property_type=concept(finding),
        graphic_type=hd.ann.GraphicTypeValues.POLYGON,
        graphic_data=[to_slide(ring(r.polygon_px or _box(r))) for r in regions],
        algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(report),
        measurements=[
            hd.ann.Measurements(codes.DCM.Probability, scores, codes.UCUM.NoUnits),
            hd.ann.Measurements(codes.SCT.Area, areas, codes.UCUM.SquareMillimeter),
        ],
        description=GROUP_DESCRIPTION,
        display_color=RED,
    )


def _box(region: Region) -> list[list[float]]:
    """A region without an outline: its bounding box."""
    x0, y0, x1, y1 = region.x_min_px, region.y_min_px, region.x_max_px, region.y_max_px
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def regions_finding(report: Report) -> Finding | None:
    """The finding whose regions the ANN carries: the first assessed one with regions."""
    for finding in report.findings:
        if finding.assessed and finding.regions:
            return finding
    return None


def build_ann(
    report: Report, source: pydicom.Dataset
) -> hd.ann.MicroscopyBulkSimpleAnnotations | None:
    """The ANN of `report`'s regions on `source` (the slide's level-0 VOLUME
    instance; pixel data not needed), or None when there is no region to send."""
    finding = regions_finding(report)
    if finding is None:
        return None
    (image,) = with_type2([source])
    demo = " (demo weights)" if report.model.demo_weights else ""
    return hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[image],
        annotation_coordinate_type=hd.ann.AnnotationCoordinateTypeValues.SCOORD3D,
        annotation_groups=[_group(report, finding, image)],
        series_instance_uid=derived_uid("ann-series", report.id),
        series_number=ANN_SERIES_NUMBER,
        sop_instance_uid=derived_uid("ann", report.id),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=report.model.name,
        software_versions=str(report.model.version),
        device_serial_number=(report.model.sha256 or "unknown")[:16],
        content_label="AI_REGIONS",
        content_description=f"AI suggested regions{demo}",
        content_creator_name="aidx^AI",
        series_description=ANN_SERIES_DESCRIPTION,
    )


def with_slide_source(report: Report, source: pydicom.Dataset) -> Report:
    """`report` with its source naming the slide's patient, study, series and
    level-0 instance (the pipeline knows only the file), for the EMR's links."""
    found = report.source.model_copy(
        update={
            "patient_id": str(source.get("PatientID") or "") or None,
            "study_instance_uid": str(source.StudyInstanceUID),
            "series_instance_uid": str(source.SeriesInstanceUID),
            "sop_instance_uid": str(source.SOPInstanceUID),
        }
    )
    return report.model_copy(update={"source": found})
