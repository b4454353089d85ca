"""A report's findings as a Comprehensive 3D SR with TID 1500 (Measurement Report).

Per finding and per region, one imaging measurement group (TID 1410) with a tracking
identifier and UID, the finding's coded concept, a qualitative evaluation
present/absent, the probability as a measurement (DCM 122157, unit "1") and the
region as an image-referenced SCOORD POLYLINE (what OHIF renders). A finding without
a region gets an image-level group (TID 1501) that references the source image.
The algorithm's name and version are the observer context (device) and each group's
algorithm identification.

A finding that was not assessed has no probability and no Present/Absent: its group's
qualitative evaluation is SCT 373068000 "Undetermined", with the reason as text. The
report's out-of-distribution verdict and, when no finding was assessed, why, go in
the document's Qualitative Evaluations container (TID 1500 row 12).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from aidx.inference.reports import Finding, Region, Report
from aidx.integrations.dicom.names import with_unambiguous_names
from aidx.integrations.dicom.uids import derived_uid
from aidx.pipelines.ct.report import CtReport, Lesion

MANUFACTURER = "aidx"
SR_SERIES_NUMBER = 9901
SR_SERIES_DESCRIPTION = "aidx AI findings (SR)"
XR_CHEST = hd.sr.CodedConcept("36554-4", "LN", "XR Chest Single view")
CT_CHEST = hd.sr.CodedConcept("24627-2", "LN", "CT Chest")
_SCHEMES = {"SCT": "SCT", "LN": "LN", "DCM": "DCM", "RADLEX": "RADLEX"}
# Not assessed: CID 240 "Present-Absent", the value set of Present and Absent, has a
# third value for "cannot say", SCT 373068000 "Undetermined". It is the standard's own
# answer, so no reader mistakes it for either (DCM 114011 "Value indeterminate" is a
# NUM qualifier, and there is no probability to qualify).
NOT_ASSESSED = codes.SCT.Undetermined
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
# No standard concept names the out-of-distribution gate: a private (99) scheme.
OOD_CHECK = hd.sr.CodedConcept("OOD", "99AIDX", "Out-of-distribution check")
REPORT_NOT_ASSESSED = hd.sr.CodedConcept("NOTASSESSED", "99AIDX", "Findings not assessed")


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


def _evaluations(
    report: Report,
    finding: Finding,
    *,
    probability: float | None = None,
    more: Sequence[hd.sr.Measurement] = (),
) -> dict[str, object]:
    """Finding type, algorithm, the probability (the finding's unless given) and any
    `more` measurements, and the qualitative evaluation present/absent; for a finding
    not assessed, no probability and the evaluation "Undetermined"."""
    name = concept(finding)
    value = finding.probability if probability is None else probability
    if not finding.assessed or value is None or finding.present is None:
        return {
            "finding_type": name,
            "algorithm_id": algorithm(report),
            "measurements": list(more),
            "qualitative_evaluations": [hd.sr.QualitativeEvaluation(name=name, value=NOT_ASSESSED)],
        }
    return {
        "finding_type": name,
        "algorithm_id": algorithm(report),
        "measurements": [
            hd.sr.Measurement(
                name=codes.DCM.Probability,
                value=round(float(value), 6),
                unit=codes.UCUM.NoUnits,
                algorithm_id=algorithm(report),
            ),
            *more,
        ],
        "qualitative_evaluations": [
            hd.sr.QualitativeEvaluation(
                name=name, value=codes.SCT.Present if finding.present else codes.SCT.Absent
            )
        ],
    }


def not_assessed_text(reason: str | None, message: str | None) -> str:
    return f"Not assessed ({reason or 'unknown'}): {message or 'no reason given'}"


def _with_reason(group: hd.sr.MeasurementsAndQualitativeEvaluations, finding: Finding) -> None:
    """A not-assessed finding's reason as a TEXT qualitative evaluation (TID 1501 takes
    CODE and TEXT evaluations), named by the finding like its "Undetermined"."""
    if finding.assessed:
        return
    text = not_assessed_text(finding.not_assessed_reason, finding.not_assessed_message)
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=concept(finding),
            value=text,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )


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
            group = hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    identifier=meaning, uid=derived_uid("tracking", report.id, str(i))
                ),
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
                **_evaluations(report, finding),  # type: ignore[arg-type]
            )
            _with_reason(group, finding)
            groups.append(group)
    return groups


def document_evaluations(report: Report) -> hd.sr.ContainerContentItem | None:
    """TID 1500's Qualitative Evaluations container: the out-of-distribution verdict
    (status, score, threshold, method, policy) and why no finding was assessed."""
    items: list[hd.sr.ContentItem] = []
    if report.ood is not None:
        ood = report.ood
        status = hd.sr.CodedConcept(ood.status.value, "99AIDX", ood.status.value.replace("_", " "))
        items.append(
            hd.sr.CodeContentItem(name=OOD_CHECK, value=status, relationship_type="CONTAINS")
        )
        detail = (
            f"status {ood.status.value}; score {_number(ood.score)}; "
            f"threshold {_number(ood.threshold)}; method {ood.method or 'none'}; "
            f"policy {ood.policy.value}"
        )
        items.append(
            hd.sr.TextContentItem(name=OOD_CHECK, value=detail, relationship_type="CONTAINS")
        )
    if report.not_assessed is not None:
        why = report.not_assessed
        text = not_assessed_text(why.reason.value, why.message)
        items.append(
            hd.sr.TextContentItem(
                name=REPORT_NOT_ASSESSED, value=text, relationship_type="CONTAINS"
            )
        )
    if not items:
        return None
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def build_sr(
    report: Report,
    sources: Sequence[pydicom.Dataset],
    *,
    more_groups: Sequence[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations] = (),
    more_evidence: Sequence[pydicom.Dataset] = (),
) -> hd.sr.Comprehensive3DSR:
    """The SR for `report`, in the study of `sources` (the analysed instances), with
    `more_groups` after the findings' groups (CT lesions) and `more_evidence` (the SEG
    they reference)."""
    sources = [with_unambiguous_names(s) for s in sources]
    source = sources[0]
    content = hd.sr.MeasurementReport(
        observation_context=observation_context(report),
        procedure_reported=CT_CHEST if report.source.modality == "CT" else XR_CHEST,
        imaging_measurements=[*measurement_groups(report, source), *more_groups],
        title=codes.DCM.ImagingMeasurementReport,
    )
    evaluations = document_evaluations(report)
    if evaluations is not None:  # TID 1500 row 12, after the measurements
        content[0].ContentSequence.append(evaluations)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, *more_evidence],
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


# --- CT: one volumetric group (TID 1411) per lesion, its region the lesion's segment ---

LUNG_ZONES = {
    "upper": hd.sr.CodedConcept("281392002", "SCT", "Upper zone of lung"),
    "middle": hd.sr.CodedConcept("281393007", "SCT", "Middle zone of lung"),
    "lower": hd.sr.CodedConcept("281394001", "SCT", "Lower zone of lung"),
}
MILLILITER = hd.sr.CodedConcept("mL", "UCUM", "milliliter")


def _lesion_site(lesion: Lesion) -> list[hd.sr.FindingSite]:
    zone = LUNG_ZONES.get(lesion.zone)
    if zone is None:
        return []
    side = {"right": codes.SCT.Right, "left": codes.SCT.Left}.get(lesion.side)
    return [hd.sr.FindingSite(anatomic_location=zone, laterality=side)]


def lesion_groups(
    report: CtReport, seg: hd.seg.Segmentation, segment_of: dict[int, int]
) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    """Per lesion with a segment: tracking identifier + UID (the segment's), the
    finding, present, its maximum probability, its volume (mL), its finding site and
    the region as a reference to its segment in `seg`."""
    from aidx.adapters.dicom_seg import tracking_uid

    (finding,) = report.findings
    series = hd.sr.SourceSeriesForSegmentation(str(report.source.series_instance_uid))
    groups = []
    for lesion in report.lesions:
        segment = segment_of.get(lesion.number)
        if segment is None:  # too small to survive on the series grid: no region
            continue
        volume = hd.sr.Measurement(
            name=codes.SCT.Volume,
            value=round(float(lesion.volume_ml), 3),
            unit=MILLILITER,
            algorithm_id=algorithm(report),
        )
        evaluations = _evaluations(
            report, finding, probability=lesion.max_probability, more=[volume]
        )
        evaluations["qualitative_evaluations"] = [
            hd.sr.QualitativeEvaluation(name=concept(finding), value=codes.SCT.Present)
        ]
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    identifier=f"Pneumonia-pattern opacity {lesion.number}",
                    uid=tracking_uid(report.id, lesion.number),
                ),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=str(seg.SOPClassUID),
                    sop_instance_uid=str(seg.SOPInstanceUID),
                    segment_number=segment,
                    source_series=series,
                ),
                finding_sites=_lesion_site(lesion),
                **evaluations,  # type: ignore[arg-type]
            )
        )
    return groups


def build_ct_sr(
    report: CtReport,
    sources: Sequence[pydicom.Dataset],
    seg: hd.seg.Segmentation | None,
    segment_of: dict[int, int],
) -> hd.sr.Comprehensive3DSR:
    """The CT SR: the finding's image-level group (present/absent, the peak
    probability) and, when there is a SEG, one group per lesion referencing its
    segment. No lesion: no SEG and no lesion group; the finding group says Absent."""
    if seg is None:
        return build_sr(report, sources)
    return build_sr(
        report, sources, more_groups=lesion_groups(report, seg, segment_of), more_evidence=[seg]
    )
