"""DeepZoom tiles of an analysed slide, for the review workspace's slide viewer
(OpenSeadragon): openslide-python's `DeepZoomGenerator` over the slide's own pyramid.

The DeepZoom image is the whole of level 0 (`limit_bounds=False`), so the viewer's
image coordinates are level-0 pixels: the regions of a report are drawn as they are.
Tiles are 256 px without overlap, JPEG: at a full-resolution level each lies on exactly
one of the slide's own 256-px tiles, so drawing it decodes one JPEG tile, where a 254-px
tile with a 1-px overlap straddles four (the cost of a cold tile was mostly those decodes).

Opening a slide costs tens of milliseconds, reading a tile a few: `DeepZoomSlides`
keeps the last `capacity` slides open in an LRU (by report id), shared by every request (one
OpenSlide handle per slide: libopenslide handles are thread-safe), and the tiles it has
encoded in a second LRU bounded by bytes (a viewer panning back gets them without a
read). Rendering blocks (file reads, JPEG encoding): callers run it off the event loop;
a cache lookup does not. An evicted slide is not closed here: a read in another thread
may still hold it, and its handle closes when the last reference goes.

A tile is what `DeepZoomGenerator.get_tile` draws (its geometry, read from the same
slide level), made cheaper: an opaque region is converted, not composited on the
background, and a region read larger than the tile is box-reduced by the integer factor
then resampled bilinearly, where `get_tile` runs a Lanczos thumbnail over it.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from aidx.inference.errors import NotFound
from aidx.pipelines.wsi.slide import SlideReadError, open_slide

TILE_PX = 256
OVERLAP_PX = 0
FORMAT = "jpeg"
JPEG_QUALITY = 75
MAX_OPEN_SLIDES = 16
TILE_CACHE_BYTES = 64 * 1024 * 1024  # about 4000 tiles of tissue (AIDX_WSI_DEEPZOOM_CACHE_BYTES)
OPAQUE = 255
MAX_INDEX_DIGITS = 7  # no DeepZoom level has 10 million tiles along a side


def tile_index(value: str) -> int:
    """A level, column or row from the URL: digits only, else 404 `tile_not_found`."""
    if not value.isdigit() or len(value) > MAX_INDEX_DIGITS:
        raise NotFound("no such tile", code="tile_not_found")
    return int(value)


@dataclass(frozen=True)
class TileRead:
    """Where a DeepZoom tile comes from: the region of a slide level to read (`origin_px`
    in level-0 pixels, `size_px` in that level's), and the tile's own size."""

    origin_px: tuple[int, int]
    slide_level: int
    size_px: tuple[int, int]
    tile_px: tuple[int, int]


def tile_read(
    slide: openslide.AbstractSlide, gen: DeepZoomGenerator, level: int, address: tuple[int, int]
) -> TileRead:
    """`get_tile`'s geometry (openslide-python's deepzoom.py, whole level 0): the slide
    level with the largest downsample not above the DeepZoom level's, an overlap on each
    inner edge, the region rounded out to whole pixels."""
    downsample = 2 ** (gen.level_count - 1 - level)  # of the DeepZoom level, from level 0
    slide_level = slide.get_best_level_for_downsample(downsample)
    level_downsample = slide.level_downsamples[slide_level]
    scale = downsample / level_downsample  # DeepZoom pixels -> slide level pixels
    origin, size, tile = [], [], []
    axes = zip(
        address, gen.level_tiles[level], gen.level_dimensions[level],
        slide.level_dimensions[slide_level], strict=True,
    )  # fmt: skip
    for t, tiles, z_lim, l_lim in axes:  # x, then y
        before = OVERLAP_PX if t != 0 else 0
        after = OVERLAP_PX if t != tiles - 1 else 0
        z_size = min(TILE_PX, z_lim - TILE_PX * t) + before + after
        l_start = scale * (TILE_PX * t - before)
        origin.append(int(level_downsample * l_start))
        size.append(int(min(math.ceil(scale * z_size), l_lim - math.ceil(l_start))))
        tile.append(z_size)
    return TileRead((origin[0], origin[1]), slide_level, (size[0], size[1]), (tile[0], tile[1]))


def on_background(region: Image.Image, background: str) -> Image.Image:
    """RGB: an opaque region (nearly always) as it is, else laid on the slide's
    background as `get_tile` lays it."""
    alpha = region.getchannel("A")
    if alpha.getextrema()[0] == OPAQUE:
        return region.convert("RGB")
    return Image.composite(region, Image.new("RGB", region.size, background), alpha)


def _to_tile_size(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` at `size`: a box reduce by the whole factor (cheap, exact for 2x), then
    bilinear for what remains (a pixel at an edge, or a non-power-of-two pyramid)."""
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=1.0)


@dataclass
class OpenedSlide:
    """One open slide and its DeepZoom geometry; `viewers`: who has been recorded
    opening it since it entered the cache (see `DeepZoomSlides.first_view`)."""

    slide: openslide.AbstractSlide
    generator: DeepZoomGenerator
    dzi: str  # the DeepZoom descriptor (XML)
    width_px: int
    height_px: int
    background: str = "#ffffff"  # the slide's own, where it records one
    viewers: set[str] = field(default_factory=set)

    def tile_jpeg(self, level: int, col: int, row: int) -> bytes:
        """One tile, JPEG; 404 `tile_not_found` outside the pyramid."""
        image = self.tile_image(level, col, row)
        out = io.BytesIO()  # 4:2:0, not optimised, no colour profile: as before
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue()

    def tile_image(self, level: int, col: int, row: int) -> Image.Image:
        """One tile, RGB, as `DeepZoomGenerator.get_tile` draws it (see the module's
        notes); 404 `tile_not_found` outside the pyramid."""
        gen = self.generator
        if level >= gen.level_count:
            raise NotFound(f"no DeepZoom level {level}", code="tile_not_found")
        cols, rows = gen.level_tiles[level]
        if col >= cols or row >= rows:
            raise NotFound(f"no tile {col}_{row} at level {level}", code="tile_not_found")
        where = tile_read(self.slide, gen, level, (col, row))
        try:
            region = self.slide.read_region(where.origin_px, where.slide_level, where.size_px)
        except openslide.OpenSlideError as exc:
            raise SlideReadError(f"a tile of the slide could not be read: {exc}") from None
        image = _to_tile_size(on_background(region, self.background), where.tile_px)
        if "icc_profile" in region.info:  # the slide's colour profile, kept as get_tile keeps it
            image.info["icc_profile"] = region.info["icc_profile"]
        return image


def _opened(path: Path) -> OpenedSlide:
    slide = open_slide(path)  # 404 / 422 with a stable code, as for analysis
    generator = DeepZoomGenerator(slide, TILE_PX, OVERLAP_PX, limit_bounds=False)
    width, height = generator.level_dimensions[-1]
    background = "#" + slide.properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR, "ffffff")
    return OpenedSlide(slide, generator, generator.get_dzi(FORMAT), width, height, background)


TileKey = tuple[str, int, int, int]  # (slide key, level, column, row)


class TileCache:
    """Encoded tiles, the least recently used dropped once they pass `max_bytes` together
    (0: none kept); safe to use from many threads. A report's tiles never change."""

    def __init__(self, max_bytes: int = TILE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._lock = threading.Lock()
        self._tiles: OrderedDict[TileKey, bytes] = OrderedDict()

    def get(self, key: TileKey) -> bytes | None:
        with self._lock:
            found = self._tiles.get(key)
            if found is not None:
                self._tiles.move_to_end(key)
            return found

    def put(self, key: TileKey, tile: bytes) -> None:
        if len(tile) > self.max_bytes:
            return
        with self._lock:
            old = self._tiles.pop(key, None)
            self.nbytes += len(tile) - (len(old) if old is not None else 0)
            self._tiles[key] = tile
            while self.nbytes > self.max_bytes:
                self.nbytes -= len(self._tiles.popitem(last=False)[1])

    def __len__(self) -> int:
        with self._lock:
            return len(self._tiles)

    def clear(self) -> None:
        with self._lock:
            self._tiles.clear()
            self.nbytes = 0


class DeepZoomSlides:
    """The most recently used slides, open, by key (the report id), and their tiles
    encoded lately (`tiles`); safe to use from many threads."""

    def __init__(
        self, capacity: int = MAX_OPEN_SLIDES, tile_cache_bytes: int = TILE_CACHE_BYTES
    ) -> None:
        self.capacity = capacity
        self.tiles = TileCache(tile_cache_bytes)
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

    def tile(self, key: str, slide: OpenedSlide, level: int, col: int, row: int) -> bytes:
        """Tile (level, col, row) of `slide` (kept under `key`), JPEG: encoded now and
        kept, unless it already is. Blocks when it encodes."""
        where = (key, level, col, row)
        found = self.tiles.get(where)
        if found is None:
            found = slide.tile_jpeg(level, col, row)
            self.tiles.put(where, found)
        return found

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
        self.tiles.clear()
