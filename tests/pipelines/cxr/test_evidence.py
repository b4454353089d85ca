"""The overlay's saved inputs on a real radiograph (RG1_UNCR): what they hold, that
rendering from them is rendering from the analysis, and the PNG cache."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aidx.inference.errors import NotFound
from aidx.inference.reports import Region, ReportStore
from aidx.pipelines.cxr.decode import decode_radiograph
from aidx.pipelines.cxr.evidence import (
    OVERLAY_FILE,
    OVERLAY_INPUTS_FILE,
    OverlayInputs,
    overlay_png,
    overlay_rgb,
    save_overlay_inputs,
)
from aidx.pipelines.cxr.postprocess import overlay_grey, overlay_scale, render_overlay_rgb
from aidx.pipelines.cxr.preprocess import centre_square
from tests.conftest import dicom_bytes

RID = "2b0f4a52-3c1d-4e7f-8a9b-0c1d2e3f4a5b"
REGION = Region(
    x_min_px=300.4, y_min_px=500.2, x_max_px=900.8, y_max_px=1100.6,
    peak_x_px=600.0, peak_y_px=800.0, peak_heat=1.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def image01() -> np.ndarray:
    return decode_radiograph(dicom_bytes("RG1_UNCR.dcm")).image01


def inputs_for(image01: np.ndarray, cam: np.ndarray | None) -> OverlayInputs:
    return OverlayInputs.from_analysis(image01, cam, 0.83, centre_square(image01.shape), [REGION])


@pytest.mark.parametrize("with_cam", [True, False], ids=["cam", "no-cam (torchxrayvision)"])
def test_inputs_round_trip_and_render_what_the_analysis_would(
    image01: np.ndarray, with_cam: bool
) -> None:
    cam = np.random.default_rng(2).normal(size=(7, 7)).astype(np.float32) if with_cam else None
    inputs = inputs_for(image01, cam)
    back = OverlayInputs.from_npz(inputs.to_npz())
    assert back.grey.dtype == np.uint8 and max(back.grey.shape) == 1024
    assert (back.cam is None) == (cam is None) and back.probability == 0.83
    assert back.geometry == centre_square(image01.shape)
    assert back.boxes_px.tolist() == [[300.4, 500.2, 900.8, 1100.6]]
    direct = render_overlay_rgb(
        overlay_grey(image01), cam, 0.83, centre_square(image01.shape),
        overlay_scale(image01.shape), np.array([[300.4, 500.2, 900.8, 1100.6]]),
    )  # fmt: skip
    assert (back.render() == direct).all()


def test_saving_writes_the_inputs_uncompressed_and_renders_nothing(
    image01: np.ndarray, tmp_path: Path
) -> None:
    """Saving is on the analysis path: no deflate (~1 MB stored, ~2 ms) and no PNG."""
    save_overlay_inputs(ReportStore(tmp_path), RID, inputs_for(image01, np.ones((7, 7))))
    assert {p.name for p in (tmp_path / RID).iterdir()} == {OVERLAY_INPUTS_FILE}
    with zipfile.ZipFile(tmp_path / RID / OVERLAY_INPUTS_FILE) as npz:
        assert {i.compress_type for i in npz.infolist()} == {zipfile.ZIP_STORED}
        assert {i.filename for i in npz.infolist()} >= {"grey.npy", "cam.npy", "boxes_px.npy"}


def test_the_png_is_rendered_once_then_served_from_its_cache(
    image01: np.ndarray, tmp_path: Path
) -> None:
    store = ReportStore(tmp_path)
    save_overlay_inputs(store, RID, inputs_for(image01, np.ones((7, 7), np.float32)))
    path = overlay_png(store, RID)
    with Image.open(path) as png:
        assert (np.asarray(png) == overlay_rgb(store, RID)).all()
    first = path.stat()
    assert overlay_png(store, RID).stat().st_ino == first.st_ino  # not rewritten
    # a re-analysis replaces the inputs, so the cached rendering of the old ones goes
    save_overlay_inputs(store, RID, inputs_for(image01, None))
    assert not path.exists()
    assert overlay_png(store, RID).is_file()


def test_a_report_without_inputs_has_no_overlay(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    store.put(RID, "report.json", b"{}")
    for render in (overlay_rgb, overlay_png):
        with pytest.raises(NotFound) as caught:
            render(store, RID)
        assert caught.value.code == "evidence_not_found"
    assert not (tmp_path / RID / OVERLAY_INPUTS_FILE).exists()


def test_an_overlay_rendered_before_this_change_is_still_served(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    old = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(old, format="PNG")
    store.put(RID, OVERLAY_FILE, old.getvalue())  # an older report: PNG, no inputs
    assert overlay_png(store, RID).read_bytes() == old.getvalue()
