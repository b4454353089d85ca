"""A synthetic slide with one planted suspicious area, written as SVS and dicomized
(wsidicomizer) to DICOM WSI, with a patient; shared by the ANN and the pull tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from aidx.pipelines.wsi.phantom import make_layout, write_slide

from ...peers import wsidicomizer

PATIENT_ID = "WSI-0001"


@dataclass(frozen=True)
class DicomSlide:
    root: Path  # the slide root: the slide as SVS and, under dicom/, as DICOM WSI
    svs: Path
    instances: list[Path]  # level 0 first

    @property
    def level0(self) -> pydicom.Dataset:
        return pydicom.dcmread(self.instances[0], stop_before_pixels=True)


def make_dicom_slide(root: Path, levels: int = 0, patient_id: str = PATIENT_ID) -> DicomSlide:
    """`levels`: the DICOM pyramid's (tests/peers/wsidicomizer.py; 0: level 0 only).
    Tests that count a patient's reports in the session's FHIR server each give their
    own `patient_id`."""
    missing = wsidicomizer.missing()
    if missing:
        pytest.fail(f"wsidicomizer is not installed: {missing}")
    layout = make_layout(4, 3072, 2048, mpp=0.5, n_suspicious=1, n_lymphoid=0)
    svs = write_slide(root / "tissue.svs", layout)
    instances = wsidicomizer.dicomize(svs, root / "dicom", levels)
    for path in instances:  # a patient, as a slide scanned for a case has
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName = patient_id, "Slide^Test"
        ds.save_as(path)
    return DicomSlide(root, svs, instances)
