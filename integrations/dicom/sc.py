"""The CXR overlay (the radiograph with the heatmap and hot regions drawn on it) as a
DICOM secondary-capture image in the source study, so any PACS viewer shows it."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom

from aidx.inference.reports import Report
from aidx.integrations.dicom.names import with_unambiguous_names
from aidx.integrations.dicom.uids import derived_uid

MANUFACTURER = "aidx"
SC_SERIES_NUMBER = 9902
SC_SERIES_DESCRIPTION = "aidx AI heatmap overlay (not for diagnosis)"


def _orientation(source: pydicom.Dataset) -> tuple[str, str] | None:
    value = source.get("PatientOrientation")
    if value is not None and len(value) == 2 and all(str(v) for v in value):
        return (str(value[0]), str(value[1]))
    return None


def build_overlay_sc(report: Report, source: pydicom.Dataset, rgb: np.ndarray) -> hd.sc.SCImage:
    """A secondary capture of `rgb` in `source`'s study, patient and orientation.

    The pixels are a display rendering (downsampled), so no pixel spacing is claimed.
    Laterality (Type 2C) is copied from the source when it has one; a chest is unpaired.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("the overlay must be RGB uint8 [rows, columns, 3]")
    laterality = source.get("Laterality") or source.get("ImageLaterality") or None
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=with_unambiguous_names(source),
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=derived_uid("sc-series", report.id),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=derived_uid("sc", report.id),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=_orientation(source) or ("", ""),
        laterality=str(laterality) if laterality else None,
    )
    if laterality is None:
        # Type 2C: dciodvfy cannot tell a chest is unpaired; present and empty is right.
        sc.Laterality = ""
    sc.SeriesDescription = SC_SERIES_DESCRIPTION
    sc.ImageComments = report.disclaimer or "AI heatmap overlay"
    sc.BurnedInAnnotation = "YES"
    sc.ConversionType = "WSD"
    sc.ContentDate = report.created_at.strftime("%Y%m%d")
    sc.ContentTime = report.created_at.strftime("%H%M%S")
    return sc
