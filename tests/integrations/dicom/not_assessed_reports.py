"""Hand-built reports with findings not assessed, on real sources (pydicom-data's
chest CR and a synthetic CT series written as real DICOM files), for the write-back
tests of every format: no model has to produce them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from aidx.inference.assessment import NotAssessed, NotAssessedReason, OodStatus, OodVerdict
from aidx.inference.reports import (
    DEMO_DISCLAIMER,
    Coding,
    Finding,
    ModelRef,
    Report,
    SourceRef,
    Timings,
    report_id,
)
from aidx.pipelines.ct import synthetic
from aidx.pipelines.ct.report import CtReport

from ...conftest import dicom_bytes

PNEUMONIA = Coding(scheme="SCT", code="233604007", meaning="Pneumonia")
CARDIOMEGALY = Coding(scheme="SCT", code="8186001", meaning="Cardiomegaly")
CT_OPACITY = Coding(scheme="SCT", code="233604007", meaning="Pneumonia")
OOD = NotAssessed(
    reason=NotAssessedReason.out_of_distribution,
    message="The image is unlike the model's training data (score 41.7 > 30.2).",
)
BLANK = NotAssessed(reason=NotAssessedReason.blank_image, message="The image is near-constant.")
NO_LUNGS = NotAssessed(
    reason=NotAssessedReason.no_lungs, message="No aerated lung in the volume (0.0 mL)."
)


def chest_cr() -> pydicom.Dataset:
    from io import BytesIO

    return pydicom.dcmread(BytesIO(dicom_bytes("RG1_UNCR.dcm")), stop_before_pixels=True)


def _source(ds: pydicom.Dataset) -> SourceRef:
    return SourceRef(
        patient_id=str(ds.PatientID) or None,
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        modality=str(ds.Modality),
    )


def _report(
    kind: type[Report], pipeline: str, ds: pydicom.Dataset, case: str, **fields: object
) -> Report:
    model = ModelRef(name=f"{pipeline}_pneumonia", version=1, sha256="ab" * 32, demo_weights=True)
    return kind(
        id=report_id(pipeline, f"{ds.SOPInstanceUID}|{case}", model),  # one id per case
        pipeline=pipeline,
        source=_source(ds),
        model=model,
        timings=Timings(),
        disclaimer=DEMO_DISCLAIMER,
        **fields,  # type: ignore[arg-type]
    )


def cxr_partly_assessed(ds: pydicom.Dataset) -> Report:
    """Pneumonia not assessed (out of distribution, the site's policy per finding),
    Cardiomegaly assessed and present."""
    return _report(
        Report,
        "cxr",
        ds,
        "partly",
        findings=[
            Finding.not_assessed(PNEUMONIA, 0.5, OOD),
            Finding(concept=CARDIOMEGALY, probability=0.8125, threshold=0.4, present=True),
        ],
        ood=OodVerdict(
            status=OodStatus.out_of_distribution, score=41.7, threshold=30.2, method="mahalanobis"
        ),
    )


def cxr_none_assessed(ds: pydicom.Dataset) -> Report:
    return _report(
        Report,
        "cxr",
        ds,
        "none",
        findings=[
            Finding.not_assessed(PNEUMONIA, 0.5, BLANK),
            Finding.not_assessed(CARDIOMEGALY, 0.4, BLANK),
        ],
        ood=OodVerdict(status=OodStatus.uncalibrated),
        not_assessed=BLANK,
    )


def ct_series(directory: Path) -> list[pydicom.Dataset]:
    """A small synthetic CT series, as headers (what the write-back builds from)."""
    phantom = synthetic.generate(
        np.random.default_rng(3), shape_kji=(40, 80, 96), spacing_mm=(3.5, 3.5, 5.0), n_lesions=0
    )
    paths = synthetic.write_series(phantom, directory)
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def ct_not_assessed(sources: list[pydicom.Dataset]) -> CtReport:
    """A CT without lungs: no lesions, the finding not assessed (no_lungs)."""
    report = _report(
        CtReport,
        "ct",
        sources[0],
        "no-lungs",
        findings=[Finding.not_assessed(CT_OPACITY, 0.5, NO_LUNGS)],
        ood=OodVerdict(status=OodStatus.in_distribution, score=3.5, threshold=30.0),
        not_assessed=NO_LUNGS,
    )
    assert isinstance(report, CtReport)
    return report
