"""A report's findings as a Comprehensive 3D SR with TID 1500 (Measurement Report).

Per finding and per region, one imaging measurement group (TID 1410) with a tracking
identifier and UID, the finding's coded concept, a qualitative evaluation
present/absent, the probability as a measurement (DCM 122157, unit "1") and the
region as an image-referenced SCOORD POLYLINE (what OHIF renders). A finding without
a region gets an image-level group (TID 1501) that references the source image.
The algorithm's name and version are the observer context (device) and each group's
algorithm identification.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from aidx.inference.reports import Finding, Region, Report
from aidx.integrations.dicom.uids import derived_uid

MANUFACTURER = "aidx"
SR_SERIES_NUMBER = 9901
SR_SERIES_DESCRIPTION = "aidx AI findings (SR)"
XR_CHEST = hd.sr.CodedConcept("36554-4", "LN", "XR Chest Single view")
CT_CHEST = hd.sr.CodedConcept("24627-2", "LN", "CT Chest")
_SCHEMES = {"SCT": "SCT", "LN": "LN", "DCM": "DCM", "RADLEX": "RADLEX"}


def concept(finding: Finding) -> hd.sr.CodedConcept:
    c = finding.concept
    return hd.sr.CodedConcept(
        value=c.code, scheme_designator=_SCHEMES.get(c.scheme, c.scheme), meaning=c.meaning
    )


def algorithm(report: Report) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=report.model.name, version=str(report.model.version))


def observation_context(report: Report) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid("device", report.model.name, str(report.model.version)),
        name=f"{report.model.name} v{report.model.version}",
        manufacturer_name=MANUFACTURER,
        model_name=report.model.name,
    )
    return hd.sr.ObservationContext(
        observer_person_context=None,
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        ),
    )


def _box(region: Region) -> np.ndarray:
    """A closed POLYLINE around the region, in image pixel coordinates (column, row)."""
    x0, y0, x1, y1 = region.x_min_px, region.y_min_px, region.x_max_px, region.y_max_px
    if region.polygon_px:
        points = np.asarray(region.polygon_px, dtype=np.float32)
        if not np.array_equal(points[0], points[-1]):
            points = np.vstack([points, points[:1]])
        return points
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)


def _evaluations(report: Report, finding: Finding) -> dict[str, object]:
    name = concept(finding)
    return {
        "finding_type": name,
        "algorithm_id": algorithm(report),
        "measurements": [
            hd.sr.Measurement(
                name=codes.DCM.Probability,
                value=round(float(finding.probability), 6),
                unit=codes.UCUM.NoUnits,
                algorithm_id=algorithm(report),
            )
        ],
        "qualitative_evaluations": [
            hd.sr.QualitativeEvaluation(
                name=name, value=codes.SCT.Present if finding.present else codes.SCT.Absent
            )
        ],
    }


def measurement_groups(
    report: Report, source: pydicom.Dataset
) -> list[
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
]:
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for i, finding in enumerate(report.findings, start=1):
        meaning = finding.concept.meaning
        for k, region in enumerate(finding.regions, start=1):
            tracking = hd.sr.TrackingIdentifier(
                identifier=f"{meaning} region {k}",
                uid=derived_uid("tracking", report.id, str(i), str(k)),
            )
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking,
                    referenced_region=hd.sr.ImageRegion(
                        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                        graphic_data=_box(region),
                        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
                    ),
                    **_evaluations(report, finding),  # type: ignore[arg-type]
                )
            )
        if not finding.regions:
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        identifier=meaning, uid=derived_uid("tracking", report.id, str(i))
                    ),
                    source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
                    **_evaluations(report, finding),  # type: ignore[arg-type]
                )
            )
    return groups


def build_sr(report: Report, sources: Sequence[pydicom.Dataset]) -> hd.sr.Comprehensive3DSR:
    """The SR for `report`, in the study of `sources` (the analysed instances)."""
    source = sources[0]
    content = hd.sr.MeasurementReport(
        observation_context=observation_context(report),
        procedure_reported=CT_CHEST if report.source.modality == "CT" else XR_CHEST,
        imaging_measurements=measurement_groups(report, source),
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(sources),
        content=content,
        series_instance_uid=derived_uid("sr-series", report.id),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=derived_uid("sr", report.id),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=SR_SERIES_DESCRIPTION,
        is_complete=True,
        is_final=False,  # preliminary: an AI suggestion, not a verified report
        is_verified=False,
    )
    sr.ContentDate = report.created_at.strftime("%Y%m%d")
    sr.ContentTime = report.created_at.strftime("%H%M%S")
    return sr
