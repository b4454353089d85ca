"""The workspace viewer's full-resolution radiograph: the analysis saves what it is
made from (no pass over the pixels at decode), the first GET makes and caches it."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest

from aidx.inference.dicom_input import decode_pixels
from aidx.inference.errors import NotFound
from aidx.inference.reports import ReportStore
from aidx.pipelines.cxr.decode import decode_radiograph
from aidx.pipelines.cxr.full_image import (
    FULL_META_FILE,
    FULL_PIXELS_FILE,
    SOURCE_FILES,
    FullImage,
    FullSource,
    full_image,
    full_image_file,
    save_full_image,
)
from tests.conftest import dicom_bytes


def _files(store: ReportStore, rid: str) -> set[str]:
    return {p.name for p in (store.root / rid).iterdir()}


def test_the_decode_keeps_the_stored_codes_without_a_copy() -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes("RG1_UNCR.dcm")))
    stored = decode_pixels(ds)
    source = full_image(ds, stored)
    assert isinstance(source, FullSource)
    assert np.shares_memory(source.codes, stored) and source.table.shape == (65536,)
    assert source.window == (15000.0, 30000.0) and source.invert  # MONOCHROME1


def test_the_first_get_makes_the_viewer_files_and_the_next_reads_them(tmp_path: Path) -> None:
    radiograph = decode_radiograph(dicom_bytes("RG1_UNCR.dcm"))
    assert isinstance(radiograph.full, FullSource)
    store, rid = ReportStore(tmp_path), str(uuid.uuid4())
    save_full_image(store, rid, radiograph.full)
    assert _files(store, rid) == set(SOURCE_FILES)  # nothing made at analysis
    meta = json.loads(full_image_file(store, rid, FULL_META_FILE).read_bytes())
    assert _files(store, rid) == {FULL_PIXELS_FILE, FULL_META_FILE}  # the source removed
    made = full_image_file(store, rid, FULL_PIXELS_FILE)
    stamp = made.stat().st_mtime_ns
    assert full_image_file(store, rid, FULL_PIXELS_FILE).stat().st_mtime_ns == stamp  # cached
    pixels = np.frombuffer(made.read_bytes(), "<u2").reshape(meta["rows"], meta["columns"])
    expected = radiograph.full.image()
    np.testing.assert_array_equal(pixels, expected.pixels)
    assert meta == json.loads(json.dumps(expected.meta()))


def test_the_saved_source_is_the_decoded_one(tmp_path: Path) -> None:
    radiograph = decode_radiograph(dicom_bytes("RG1_UNCR.dcm"))
    assert isinstance(radiograph.full, FullSource)
    store, rid = ReportStore(tmp_path), str(uuid.uuid4())
    save_full_image(store, rid, radiograph.full)
    data, meta = (store.file(rid, name).read_bytes() for name in SOURCE_FILES)
    again = FullSource.from_files(data, meta)
    np.testing.assert_array_equal(again.codes, radiograph.full.codes)
    np.testing.assert_array_equal(again.table, radiograph.full.table)
    assert (again.window, again.invert) == (radiograph.full.window, radiograph.full.invert)


@pytest.mark.parametrize("name", ["OBXXXX1A.dcm", "rtdose.dcm"])  # 8 bits; 32 bits
def test_other_pixels_keep_their_chain(name: str, tmp_path: Path) -> None:
    """8-bit codes take the table too; 32-bit pixels are quantised at once, as before."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(name)))
    stored = decode_pixels(ds)
    stored = stored if stored.ndim == 2 else stored[0]
    made = full_image(ds, stored)
    assert isinstance(made, FullImage if stored.dtype.itemsize > 2 else FullSource)
    store, rid = ReportStore(tmp_path), str(uuid.uuid4())
    save_full_image(store, rid, made)
    pixels = np.frombuffer(full_image_file(store, rid, FULL_PIXELS_FILE).read_bytes(), "<u2")
    image = made.image() if isinstance(made, FullSource) else made
    np.testing.assert_array_equal(pixels.reshape(stored.shape), image.pixels)
    assert int(pixels.min()) == 0 and int(pixels.max()) == 65535


def test_a_report_without_the_full_image_is_not_found(tmp_path: Path) -> None:
    store, rid = ReportStore(tmp_path), str(uuid.uuid4())
    with pytest.raises(NotFound, match=FULL_PIXELS_FILE) as raised:
        full_image_file(store, rid, FULL_PIXELS_FILE)
    assert raised.value.code == "evidence_not_found"


class _LateStore(ReportStore):
    """A store in which another first use makes the viewer's files and removes the
    source between this use's first look and its read of the source."""

    def __init__(self, root: Path, made: dict[str, bytes]) -> None:
        super().__init__(root)
        self.made = made

    def file(self, rid: str, name: str) -> Path:
        if name in SOURCE_FILES and self.made:
            for written, content in self.made.items():
                self.put(rid, written, content)
            for part in SOURCE_FILES:
                self.discard(rid, part)
            self.made = {}
        return super().file(rid, name)


def test_a_first_use_that_finds_the_source_gone_answers_the_files_made_of_it(
    tmp_path: Path,
) -> None:
    radiograph = decode_radiograph(dicom_bytes("RG1_UNCR.dcm"))
    assert isinstance(radiograph.full, FullSource)
    reference, first = ReportStore(tmp_path / "reference"), str(uuid.uuid4())
    save_full_image(reference, first, radiograph.full)
    made = {name: full_image_file(reference, first, name).read_bytes()
            for name in (FULL_PIXELS_FILE, FULL_META_FILE)}  # fmt: skip
    store, rid = _LateStore(tmp_path / "store", made), str(uuid.uuid4())
    save_full_image(store, rid, radiograph.full)
    assert full_image_file(store, rid, FULL_PIXELS_FILE).read_bytes() == made[FULL_PIXELS_FILE]
    assert _files(store, rid) == {FULL_PIXELS_FILE, FULL_META_FILE}
