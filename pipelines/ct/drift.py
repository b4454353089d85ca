"""What the CT pipeline observes of each series for drift monitoring
(aidx.inference.drift): the acquisition (manufacturer, station, kVp, slice thickness
as the first instance's header states them; pixel and slice spacing of the assembled
volume), and the model input's intensity summary on its grid (every other voxel per
axis: the summary of a smooth volume, at an eighth of the cost)."""

from __future__ import annotations

from aidx.inference.dicom_input import read_dicom
from aidx.inference.drift import Value
from aidx.inference.drift_inputs import header_number, header_text, input_summary
from aidx.pipelines.ct.preprocess import ModelGrid
from aidx.pipelines.ct.series import CtVolume


def observed(first_instance: bytes, volume: CtVolume, grid: ModelGrid) -> dict[str, Value]:
    ds = read_dicom(first_instance, stop_before_pixels=True)
    column_mm, row_mm, slice_mm = volume.spacing_mm
    return {
        "manufacturer": header_text(ds, "Manufacturer"),
        "station_name": header_text(ds, "StationName"),
        "kvp": header_number(ds, "KVP"),
        "slice_thickness_mm": header_number(ds, "SliceThickness"),
        "pixel_spacing_mm": round(float(row_mm), 4),
        "slice_spacing_mm": round(float(slice_mm), 4),
        **input_summary(grid.image[..., ::2, ::2, ::2]),
    }
