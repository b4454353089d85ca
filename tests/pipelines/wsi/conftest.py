"""Real slides for the whole-slide tests: pyramidal JPEG tiled TIFFs written with
tifffile and read back only through OpenSlide. Small, written once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from aidx.pipelines.wsi.phantom import SlideLayout, make_layout, write_slide


@dataclass(frozen=True)
class Slides:
    root: Path
    tumour: Path  # 4096 x 3072 at 0.5 um/px, two planted suspicious areas
    tumour_layout: SlideLayout
    blank: Path  # bare glass, no tissue
    no_mpp: Path  # a generic tiled TIFF that does not record its resolution
    fine: Path  # 0.25 um/px (a "40x" scan): tiles come from level 1
    truncated: Path
    text: Path


@pytest.fixture(scope="session")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Slides:
    root = tmp_path_factory.mktemp("slides")
    layout = make_layout(1, 4096, 3072, mpp=0.5, n_suspicious=2, n_lymphoid=1)
    tumour = write_slide(root / "tumour.svs", layout)
    blank = SlideLayout(2048, 1536, 0.5, tissue=())
    write_slide(root / "blank.tiff", blank)
    no_mpp = make_layout(2, 1024, 1024, mpp=None, n_suspicious=0, n_lymphoid=0)
    write_slide(root / "no_mpp.tiff", no_mpp)
    fine = make_layout(3, 2048, 2048, mpp=0.25, n_suspicious=0, n_lymphoid=0)
    write_slide(root / "fine.svs", fine)
    data = tumour.read_bytes()
    (root / "truncated.svs").write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("not a slide\n" * 100)
    return Slides(
        root,
        tumour,
        layout,
        root / "blank.tiff",
        root / "no_mpp.tiff",
        root / "fine.svs",
        root / "truncated.svs",
        root / "notes.txt",
    )


@pytest.fixture(scope="session")
def big_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16384 x 16384 px (about two thousand tissue tiles), tiled from a bank of
    rendered tiles: long enough to cancel or interrupt mid-way."""
    root = tmp_path_factory.mktemp("big")
    layout = make_layout(5, 16384, 16384, mpp=0.5, n_suspicious=2, n_lymphoid=1)
    return write_slide(root / "big.svs", layout, source="bank")
