"""Issue 16 made the CXR decode faster; these pin what it gives, pixel for pixel, to
what it gave before (sha256 prefixes recorded on the code before the change, commit
8fd9075): the display image, the model input, the workspace viewer's full-resolution
pixels and their meta, and the stored spread, on pydicom-data's real CRs (the chest,
and the extremity with its body part edited to the chest) with the header's window,
without it, rescaled, and as MONOCHROME2."""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest

from aidx.inference.reports import ReportStore
from aidx.pipelines.cxr.content import SPREAD_SAMPLE_PX, code_counts, robust_spread
from aidx.pipelines.cxr.decode import decode_radiograph, stored_values
from aidx.pipelines.cxr.full_image import (
    FULL_META_FILE,
    FULL_PIXELS_FILE,
    full_image_file,
    save_full_image,
)
from aidx.pipelines.cxr.preprocess import to_model_input
from tests.pipelines.cxr.dicom_copies import edited

NO_WINDOW: dict[str, object] = {"WindowCenter": None, "WindowWidth": None}
RESCALED: dict[str, object] = {"RescaleSlope": "0.37", "RescaleIntercept": "-1024.5"}
VARIANTS: dict[str, dict[str, object]] = {
    "as_is": {},
    "nowindow": NO_WINDOW,
    "rescale": RESCALED,
    "rescale_nowindow": {**RESCALED, **NO_WINDOW},
    "mono2": {"PhotometricInterpretation": "MONOCHROME2"},
}
# file, variant, then sha256[:16] of: display image, model input, viewer pixels, viewer meta
PINNED_TABLE = """
RG1_UNCR.dcm as_is 50e43fc3ddadc485 8bad33cc6fdff396 15a6903b5980f2ac 55289acd0109641b
RG1_UNCR.dcm nowindow e9d0a90b5a656fd5 e139cc79571f5d01 15a6903b5980f2ac 5078b2c135b5ad0d
RG1_UNCR.dcm rescale 092c961ff8d1a5f3 935a512cd580a747 15a6903b5980f2ac 00c222b3db780968
RG1_UNCR.dcm rescale_nowindow e9d0a90b5a656fd5 e139cc79571f5d01 15a6903b5980f2ac 77d153af45de4092
RG1_UNCR.dcm mono2 cf4d0d63965f62b4 a4ef4f0191041b15 15a6903b5980f2ac 1e3e68456bc4b5eb
RG1_UNCI.dcm nowindow 3a88b179009deede ca273d6e2c5aa59e 88a9bcc4f942ad9f f6d3c0d3068fa234
RG1_J2KR.dcm as_is 50e43fc3ddadc485 8bad33cc6fdff396 15a6903b5980f2ac 55289acd0109641b
RG3_UNCR.dcm as_is d6121d7867fc37e9 416eaba3d88c7807 0f540c7cb38f8215 2e0094ea12c03ea2
RG3_UNCR.dcm nowindow 317b5987ed88f598 e887002fc8195b1e 0f540c7cb38f8215 02ee697fa0b96627
RG3_UNCR.dcm rescale 3644053a01ab7ca4 5aa88d732a425237 0f540c7cb38f8215 0db8fbe87e27e359
RG3_UNCR.dcm rescale_nowindow 317b5987ed88f598 e887002fc8195b1e 0f540c7cb38f8215 e76bb3f5a551d798
RG3_UNCR.dcm mono2 59d7145b9ee2d0db 27b8aacb2241fa1b 0f540c7cb38f8215 a990e7b6779bb626
"""
PINNED = {
    (row[0], row[1]): tuple(row[2:]) for row in map(str.split, PINNED_TABLE.strip().splitlines())
}
STORED_SPREAD = {"RG1": 0.629710684530167, "RG3": 0.9921798631476051}
STORED_SPREAD_UNCI = 0.6299465926084165  # RG1's lossy-compressed twin


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.parametrize(("name", "variant"), sorted(PINNED))
def test_decode_gives_the_pixels_it_gave_before(name: str, variant: str, tmp_path: Path) -> None:
    data = edited(name, BodyPartExamined="CHEST", **VARIANTS[variant])
    radiograph = decode_radiograph(data)
    tensor, _ = to_model_input(radiograph.image01)
    assert radiograph.full is not None
    store, rid = ReportStore(tmp_path), str(uuid.uuid4())
    save_full_image(store, rid, radiograph.full)
    viewer = [
        full_image_file(store, rid, f).read_bytes() for f in (FULL_PIXELS_FILE, FULL_META_FILE)
    ]
    digests = tuple(_digest(b) for b in (radiograph.image01.tobytes(), tensor.tobytes(), *viewer))
    assert digests == PINNED[name, variant]
    spread = STORED_SPREAD_UNCI if "UNCI" in name else STORED_SPREAD[name[:3]]
    assert radiograph.stored_spread == spread


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_the_counted_spread_of_integers_is_numpys_percentile(dtype: type) -> None:
    """The histogram path of robust_spread against np.percentile on the same subsample:
    random, constant, two-valued and skewed images of every size class."""
    rng, info = np.random.default_rng(16), np.iinfo(dtype)
    for i in range(120):
        shape = (int(rng.integers(1, 1200)), int(rng.integers(1, 1200)))
        image: np.ndarray = [
            rng.integers(info.min, info.max, shape, endpoint=True),
            np.full(shape, rng.integers(info.min, info.max)),
            rng.integers(info.min, info.min + 2, shape, endpoint=True),
            np.clip(rng.normal(0, 40, shape), info.min, info.max),
        ][i % 4].astype(dtype)
        step = max(1, int(np.sqrt(image.size / SPREAD_SAMPLE_PX)))
        lo, hi = np.percentile(image[::step, ::step], (1.0, 99.0))
        assert robust_spread(image) == float(hi - lo), (shape, i % 4)


def test_codes_counted_in_blocks_are_bincounts() -> None:
    rng = np.random.default_rng(7)
    for shape in [(1955, 1841), (1, 300_000), (300_000, 1), (3, 5)]:
        codes = rng.integers(0, 1 << 15, shape).astype(np.uint16)
        expected = np.bincount(codes.ravel(), minlength=1 << 16)
        np.testing.assert_array_equal(code_counts(codes, 1 << 16), expected)


def _with_unused_bits_set(name: str, **changes: object) -> bytes:
    """pydicom-data's `name` with the bits above Bits Stored set in every 7th pixel."""
    ds = pydicom.dcmread(io.BytesIO(edited(name, **changes)))
    raw = np.frombuffer(ds.PixelData, dtype=f"<u{ds.BitsAllocated // 8}").copy()
    unused = ~((1 << int(ds.BitsStored)) - 1) & ((1 << int(ds.BitsAllocated)) - 1)
    raw[::7] |= raw.dtype.type(unused)
    ds.PixelData = raw.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("RG1_UNCR.dcm", {}),  # unsigned, 15 of 16 bits
        ("CT_small.dcm", {"BitsStored": 12, "HighBit": 11}),  # signed, 12 of 16 bits
        ("RG1_J2KR.dcm", {}),  # compressed: pydicom's own path
    ],
)
@pytest.mark.parametrize("unused_bits_set", [False, True])
def test_stored_values_are_pydicoms(
    name: str, changes: dict[str, object], unused_bits_set: bool
) -> None:
    """The stored values the decode works on are pydicom's, unused high bits cleared
    (or the sign extended), whether those bits were clear in the file or not."""
    compressed = "J2K" in name
    data = (
        _with_unused_bits_set(name, **changes)
        if unused_bits_set and not compressed
        else edited(name, **changes)
    )
    expected = pydicom.dcmread(io.BytesIO(data)).pixel_array
    stored = stored_values(pydicom.dcmread(io.BytesIO(data)))
    assert stored.dtype == expected.dtype
    np.testing.assert_array_equal(stored, expected)
    if unused_bits_set and not compressed:
        assert not np.array_equal(
            np.frombuffer(pydicom.dcmread(io.BytesIO(data)).PixelData, expected.dtype),
            expected.ravel(),
        )


def test_a_radiograph_with_unused_bits_set_decodes_as_if_they_were_clear() -> None:
    clean = decode_radiograph(edited("RG1_UNCR.dcm"))
    dirty = decode_radiograph(_with_unused_bits_set("RG1_UNCR.dcm"))
    np.testing.assert_array_equal(dirty.image01, clean.image01)
    assert dirty.stored_spread == clean.stored_spread
