"""A synthetic chest phantom (`synthetic.SyntheticCxr`) written as a CR Image
Storage file, as a modality would send it."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from aidx.pipelines.cxr.synthetic import SyntheticCxr

CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")

Photometric = Literal["MONOCHROME1", "MONOCHROME2"]


def write_dicom(
    sample: SyntheticCxr,
    path: str | Path,
    *,
    photometric: Photometric = "MONOCHROME2",
    bits_stored: int = 12,
    window: bool = True,
    patient_id: str | None = None,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> Dataset:
    """Write `sample` as a CR Image Storage file (explicit VR little endian) and
    return the dataset written. MONOCHROME1 stores inverted values (bright = low);
    the window, when present, spans the 0.5-99.5th percentile of stored values."""
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, not {photometric!r}")
    if not 8 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be in 8..16, got {bits_stored}")
    max_value = (1 << bits_stored) - 1
    stored = np.rint(sample.image01.astype(np.float64) * max_value).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = (max_value - stored).astype(np.uint16)

    sop_uid = generate_uid()
    now = _dt.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = "SYNTHETIC^PHANTOM"
    ds.PatientID = patient_id or f"SYN{int(sop_uid.rsplit('.', 1)[-1]) % 10**8:08d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.StudyDescription = "XR CHEST PA (synthetic phantom)"
    ds.Modality = "CR"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "aidx synthetic"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.Laterality = ""
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = "Synthetic phantom, not a patient image; not for clinical use"
    ds.PixelSpacing = [f"{s:.4f}" for s in sample.pixel_spacing_mm]
    ds.ImagerPixelSpacing = ds.PixelSpacing
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if window:
        lo, hi = np.percentile(stored, [0.5, 99.5])
        ds.WindowCenter = f"{(lo + hi) / 2:.1f}"
        ds.WindowWidth = f"{max(hi - lo, 1.0):.1f}"
        ds.VOILUTFunction = "LINEAR"
    ds.PixelData = stored.tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.save_as(Path(path), enforce_file_format=True)
    return ds
