"""Real slides for the whole-slide tests: pyramidal JPEG tiled TIFFs written with
tifffile and read back only through OpenSlide. Small, written once per session."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from aidx.inference.serving import ModelService
from aidx.pipelines.wsi.phantom import Blob, InkMark, SlideLayout, make_layout, write_slide
from tests.conftest import make_settings


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


@dataclass(frozen=True)
class MarkedSlides:
    """Marker ink on the glass (issue 13), written under the slide root."""

    ink_only: Path  # blue, green and black marks, no tissue
    ink_only_layout: SlideLayout
    tissue: Path  # tissue without ink
    tissue_inked: Path  # the same tissue with ink marks next to it
    tissue_inked_layout: SlideLayout


INK_ONLY_MARKS = (
    InkMark("blue", Blob(400, 400, 260, 180)),  # a dot
    InkMark("green", Blob(1500, 500, 320, 240), stroke_px=40),  # a circle drawn round
    InkMark("black", Blob(1000, 1150, 420, 120)),  # a label smudge
)


@pytest.fixture(scope="session")
def marked_slides(slides: Slides) -> MarkedSlides:
    ink_only = SlideLayout(2048, 1536, 0.5, tissue=(), ink=INK_ONLY_MARKS)
    tissue = make_layout(4, 3072, 2048, mpp=0.5, n_suspicious=1, n_lymphoid=0)
    # ink in three corners of the glass, beside the tissue (which spans about
    # x 280..2830, y 320..1840) and not on it, each big enough to fill whole tiles
    marks = (
        InkMark("blue", Blob(330, 280, 230, 230)),
        InkMark("green", Blob(2740, 280, 230, 230), stroke_px=90),
        InkMark("black", Blob(330, 1770, 230, 230)),
    )
    inked = replace(tissue, ink=marks)
    return MarkedSlides(
        write_slide(slides.root / "ink_only.svs", ink_only),
        ink_only,
        write_slide(slides.root / "tissue.svs", tissue),
        write_slide(slides.root / "tissue_inked.svs", inked),
        inked,
    )


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def service(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The tile model served in-process, one per test module."""
    settings = make_settings(tmp_path_factory.mktemp("var"), enabled_models=["wsi_tiles"])
    svc = ModelService(settings)
    loop.run_until_complete(svc.start())
    yield svc
    loop.run_until_complete(svc.stop())
