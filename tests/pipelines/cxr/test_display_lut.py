"""The lookup-table display chain gives the very pixels of the float64 chain it
replaced (legacy_display.py) on pydicom-data's real files: the chest CRs in all four
codecs, with their window and without (the robust percentile window), and files that
exercise a VOI LUT sequence, signed and rescaled pixels, 8 bits and 32 bits."""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
import pydicom
import pytest

from aidx.inference.dicom_input import decode_pixels
from aidx.pipelines.cxr.decode import decode_radiograph, to_display
from tests.conftest import dicom_bytes
from tests.pipelines.cxr import legacy_display

REAL_CRS = [f"{image}_{codec}.dcm" for image in ("RG1", "RG3")
            for codec in ("UNCR", "UNCI", "J2KR", "J2KI")]  # fmt: skip
OTHER_CHAINS = [
    "vlut_04.dcm",  # VOI LUT sequence, 8-bit
    "CT_small.dcm",  # signed, rescale slope and intercept
    "MR_small.dcm",  # signed, window
    "MR2_UNCR.dcm",  # unsigned 16-bit, window
    "OBXXXX1A.dcm",  # 8-bit, no VOI
    "rtdose.dcm",  # 32-bit: no table, the element-wise chain
]
# sha256 of the old chain's display image of RG1_UNCR (1955 x 1841, float32)
RG1_UNCR_DISPLAY_SHA256 = "50e43fc3ddadc485f96d4540833ef5587327edca1dea1e3f3d5f56e42d5f8d81"


def _pair(name: str, drop_window: bool) -> tuple[np.ndarray, np.ndarray]:
    images = []
    for chain in (legacy_display.to_display, to_display):
        ds = pydicom.dcmread(io.BytesIO(dicom_bytes(name)))
        if drop_window:
            for keyword in ("WindowCenter", "WindowWidth"):
                if keyword in ds:
                    delattr(ds, keyword)
        stored = decode_pixels(ds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's note on a VOI LUT of floats
            images.append(chain(ds, stored if stored.ndim == 2 else stored[0]))
    return images[0], images[1]


@pytest.mark.parametrize("drop_window", [False, True])
@pytest.mark.parametrize("name", REAL_CRS)
def test_real_crs_identical_pixels(name: str, drop_window: bool) -> None:
    old, new = _pair(name, drop_window)
    assert new.dtype == np.float32 and new.shape == old.shape
    np.testing.assert_array_equal(new, old)


@pytest.mark.parametrize("name", OTHER_CHAINS)
def test_other_display_chains_identical_pixels(name: str) -> None:
    old, new = _pair(name, drop_window=False)
    np.testing.assert_array_equal(new, old)


def test_the_benchmark_cr_matches_the_recorded_output() -> None:
    image = decode_radiograph(dicom_bytes("RG1_UNCR.dcm")).image01
    assert hashlib.sha256(image.tobytes()).hexdigest() == RG1_UNCR_DISPLAY_SHA256
