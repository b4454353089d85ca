"""DeepZoom tiles of an analysed slide, for the review workspace's slide viewer
(OpenSeadragon): openslide-python's `DeepZoomGenerator` over the slide's own pyramid.

The DeepZoom image is the whole of level 0 (`limit_bounds=False`), so the viewer's
image coordinates are level-0 pixels: the regions of a report are drawn as they are.
Tiles are 254 px with a 1-px overlap (256 px on the wire), JPEG.

Opening a slide costs tens of milliseconds, reading a tile a few: `DeepZoomSlides`
keeps the last `capacity` slides open in an LRU (by report id), shared by every request (one
OpenSlide handle per slide: libopenslide handles are thread-safe). Every call here
blocks (file reads, JPEG encoding): callers run them off the event loop. An evicted
slide is not closed here: a read in another thread may still hold it, and its handle
closes when the last reference goes.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import openslide
from openslide.deepzoom import DeepZoomGenerator

from aidx.inference.errors import NotFound
from aidx.pipelines.wsi.slide import SlideReadError, open_slide

TILE_PX = 254
OVERLAP_PX = 1
FORMAT = "jpeg"
JPEG_QUALITY = 75
MAX_OPEN_SLIDES = 16
MAX_INDEX_DIGITS = 7  # no DeepZoom level has 10 million tiles along a side


def tile_index(value: str) -> int:
    """A level, column or row from the URL: digits only, else 404 `tile_not_found`."""
    if not value.isdigit() or len(value) > MAX_INDEX_DIGITS:
        raise NotFound("no such tile", code="tile_not_found")
    return int(value)


@dataclass
class OpenedSlide:
    """One open slide and its DeepZoom geometry; `viewers`: who has been recorded
    opening it since it entered the cache (see `DeepZoomSlides.first_view`)."""

    generator: DeepZoomGenerator
    dzi: str  # the DeepZoom descriptor (XML)
    width_px: int
    height_px: int
    viewers: set[str] = field(default_factory=set)

    def tile_jpeg(self, level: int, col: int, row: int) -> bytes:
        """One tile, JPEG; 404 `tile_not_found` outside the pyramid."""
        gen = self.generator
        if level >= gen.level_count:
            raise NotFound(f"no DeepZoom level {level}", code="tile_not_found")
        cols, rows = gen.level_tiles[level]
        if col >= cols or row >= rows:
            raise NotFound(f"no tile {col}_{row} at level {level}", code="tile_not_found")
        try:
            image = gen.get_tile(level, (col, row))
        except openslide.OpenSlideError as exc:
            raise SlideReadError(f"a tile of the slide could not be read: {exc}") from None
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue()


def _opened(path: Path) -> OpenedSlide:
    slide = open_slide(path)  # 404 / 422 with a stable code, as for analysis
    generator = DeepZoomGenerator(slide, TILE_PX, OVERLAP_PX, limit_bounds=False)
    width, height = generator.level_dimensions[-1]
    return OpenedSlide(generator, generator.get_dzi(FORMAT), width, height)


class DeepZoomSlides:
    """The most recently used slides, open, by key (the report id); safe to use from
    many threads."""

    def __init__(self, capacity: int = MAX_OPEN_SLIDES) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._open: OrderedDict[str, OpenedSlide] = OrderedDict()

    def get(self, key: str) -> OpenedSlide | None:
        with self._lock:
            found = self._open.get(key)
            if found is not None:
                self._open.move_to_end(key)
            return found

    def open(self, key: str, path: Path) -> OpenedSlide:
        """The slide at `path`, kept under `key` (opened now unless it already is)."""
        found = self.get(key)
        if found is not None:
            return found
        opened = _opened(path)  # outside the lock: other slides' tiles keep flowing
        with self._lock:
            kept = self._open.setdefault(key, opened)  # a racing opener may have won
            self._open.move_to_end(key)
            while len(self._open) > self.capacity:
                self._open.popitem(last=False)
            return kept

    def first_view(self, slide: OpenedSlide, viewer: str) -> bool:
        """True the first time `viewer` looks at `slide` since it was opened here."""
        with self._lock:
            if viewer in slide.viewers:
                return False
            slide.viewers.add(viewer)
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def clear(self) -> None:
        with self._lock:
            self._open.clear()
