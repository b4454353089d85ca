"""Is a series a whole slide aidx can read? Checked on the instances' headers (WADO-RS
metadata or the files' headers, no pixel data) before anything large is moved, so a
pulled or C-STORED series is refused with the same codes as any other slide:

  not_a_wsi                an instance that is not VL Whole Slide Microscopy Image
                           (SOP class) or not of modality SM (422)
  no_pyramid               no VOLUME image: nothing to tile (422)
  dicom_wsi_no_image_type  an instance without ImageType: OpenSlide cannot tell the
                           pyramid from the label and overview ("Couldn't get image
                           flavor"; e.g. orthanc-wsi 1.1's OrthancWSIDicomizer) (422)
  missing_mpp              the level-0 image has no Pixel Spacing (422)
  too_many_instances       more instances than AIDX_WSI_DICOM_MAX_INSTANCES (413)
"""

from __future__ import annotations

from collections.abc import Sequence

import pydicom
from pydicom.uid import VLWholeSlideMicroscopyImageStorage

from aidx.inference.errors import PayloadTooLarge, Unprocessable


def is_volume(ds: pydicom.Dataset) -> bool:
    return "VOLUME" in [str(v).upper() for v in ds.get("ImageType", [])]


def total_pixels(ds: pydicom.Dataset) -> int:
    return int(ds.get("TotalPixelMatrixColumns", 0)) * int(ds.get("TotalPixelMatrixRows", 0))


def pixel_spacing_mm(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """The image's (row, column) spacing from its shared functional groups."""
    try:
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        row, column = (float(v) for v in measures.PixelSpacing)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    return (row, column) if row > 0 and column > 0 else None


def _refuse_non_wsi(headers: Sequence[pydicom.Dataset]) -> None:
    for ds in headers:
        if ds.get("SOPClassUID") != VLWholeSlideMicroscopyImageStorage or (
            str(ds.get("Modality", "")).upper() != "SM"
        ):
            raise Unprocessable(
                "the series is not a whole slide: every instance must be a VL Whole Slide "
                f"Microscopy Image of modality SM (found {ds.get('SOPClassUID', 'no class')}, "
                f"modality {ds.get('Modality', 'none')})",
                code="not_a_wsi",
            )
        if "ImageType" not in ds:
            raise Unprocessable(
                "an instance of the slide has no ImageType, so its pyramid cannot be told "
                "from its label and overview (e.g. orthanc-wsi 1.1's dicomizer writes none); "
                "convert the slide with a tool that writes ImageType (e.g. wsidicomizer)",
                code="dicom_wsi_no_image_type",
            )


def check_wsi_series(headers: Sequence[pydicom.Dataset], *, max_instances: int) -> pydicom.Dataset:
    """The level-0 header (the largest VOLUME image) of a series that is a whole slide
    aidx can read; an AidxError with one of the codes above otherwise."""
    if len(headers) > max_instances:
        raise PayloadTooLarge(
            f"the slide has {len(headers)} instances, more than the limit of {max_instances} "
            "(AIDX_WSI_DICOM_MAX_INSTANCES)",
            code="too_many_instances",
        )
    _refuse_non_wsi(headers)
    volumes = [ds for ds in headers if is_volume(ds)]
    if not volumes:
        raise Unprocessable(
            "the slide has no VOLUME image (only a label, overview or thumbnail)",
            code="no_pyramid",
        )
    level0 = max(volumes, key=total_pixels)
    if pixel_spacing_mm(level0) is None:
        raise Unprocessable(
            "the slide's level-0 image does not record its Pixel Spacing (MPP)",
            code="missing_mpp",
        )
    return level0
