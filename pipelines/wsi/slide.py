"""Opening whole slides with OpenSlide (openslide-python + openslide-bin from PyPI).

`describe` opens a slide once to check it and learn its geometry and MPP; a
`SlideReader` reads tiles from a pool of threads, each with its own OpenSlide
handle (handles are not shared across threads), all sharing one bounded cache.
Any file OpenSlide cannot open is an `Unprocessable` with a stable code.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
from PIL import Image

from aidx.inference.errors import AidxError, ErrorKind, NotFound, Unprocessable

MPP_RANGE = (0.05, 20.0)  # plausible microns per pixel at level 0
MPP_TOLERANCE = 0.10  # a request MPP further than this from the slide's own is refused
CACHE_BYTES = 16 * 1024 * 1024
_UNIT_MICRONS = {"centimeter": 1e4, "inch": 25_400.0}


class SlideReadError(AidxError):
    """A slide that opened but whose pixels could not be read (e.g. a damaged tile)."""

    kind = ErrorKind.unprocessable
    code = "slide_read_error"


@dataclass(frozen=True)
class Level:
    width_px: int
    height_px: int
    downsample: float
    tile_px: int | None  # the format's native tile size, when it says


@dataclass(frozen=True)
class SlideInfo:
    path: Path
    vendor: str
    width_px: int
    height_px: int
    levels: tuple[Level, ...]
    mpp_x: float
    mpp_y: float
    mpp_source: str  # "slide", "tiff resolution" or "request"
    objective_power: float | None
    bounds: tuple[int, int, int, int]  # x, y, width, height of the non-empty region, level 0
    quickhash: str | None
    # the slide's own MPP (x, y) and where it came from, when the request's replaced it
    slide_mpp: tuple[float, float] | None = None
    slide_mpp_source: str | None = None

    @property
    def mpp(self) -> float:
        return (self.mpp_x + self.mpp_y) / 2

    def summary(self) -> dict[str, object]:
        """What a client may see of the slide (no path: paths may carry identifiers)."""
        return {
            "vendor": self.vendor,
            "width_px": self.width_px,
            "height_px": self.height_px,
            "levels": len(self.levels),
            "mpp_x": self.mpp_x,
            "mpp_y": self.mpp_y,
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
        }


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) and number > 0 else None


def _slide_mpp(props: Mapping[str, str]) -> tuple[float, float, str] | None:
    mpp_x, mpp_y = (
        _float(props.get(openslide.PROPERTY_NAME_MPP_X)),
        _float(props.get(openslide.PROPERTY_NAME_MPP_Y)),
    )
    if mpp_x and mpp_y:
        return mpp_x, mpp_y, "slide"
    unit = _UNIT_MICRONS.get(str(props.get("tiff.ResolutionUnit", "")).lower())
    res_x, res_y = _float(props.get("tiff.XResolution")), _float(props.get("tiff.YResolution"))
    if unit and res_x and res_y:
        return unit / res_x, unit / res_y, "tiff resolution"
    return None


def open_slide(path: Path) -> openslide.OpenSlide:
    if not path.is_file():
        raise NotFound("the slide does not exist or is not a file", code="slide_not_found")
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        raise Unprocessable(
            "the file is not a whole-slide image that OpenSlide can read "
            "(SVS, generic tiled TIFF, NDPI, MRXS, SCN, ...) or it is truncated",
            code="unsupported_slide_format",
        ) from None
    except (openslide.OpenSlideError, OSError) as exc:
        raise Unprocessable(
            f"the slide could not be opened: {exc}", code="unreadable_slide"
        ) from None


def _levels(slide: openslide.OpenSlide) -> tuple[Level, ...]:
    props = slide.properties
    return tuple(
        Level(
            int(w),
            int(h),
            float(slide.level_downsamples[i]),
            int(props.get(f"openslide.level[{i}].tile-width", 0)) or None,
        )
        for i, (w, h) in enumerate(slide.level_dimensions)
    )


def _bounds(props: Mapping[str, str], width: int, height: int) -> tuple[int, int, int, int]:
    """x, y, width, height of the scanned (non-empty) region at level 0."""

    def bound(key: str, default: int) -> int:
        value = props.get(f"openslide.bounds-{key}")
        return int(value) if value is not None and value.isdigit() else default

    return bound("x", 0), bound("y", 0), bound("width", width), bound("height", height)


def describe(path: Path, mpp: float | None = None) -> SlideInfo:
    """Open the slide, check it, and read its geometry. `mpp` (from the request)
    overrides the slide's own (kept in `slide_mpp`; `check_request_mpp` refuses a
    contradiction); without either the slide cannot be analysed."""
    if mpp is not None and not MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
        raise Unprocessable(
            f"an MPP of {mpp} um/px is not plausible for a slide", code="implausible_mpp"
        )
    slide = open_slide(path)
    try:
        props = slide.properties
        found = _slide_mpp(props)
        replaced = found if mpp is not None else None  # the slide's own, set aside
        if mpp is not None:
            mpp_x = mpp_y = mpp
            source = "request"
        elif found is not None:
            mpp_x, mpp_y, source = found
        else:
            raise Unprocessable(
                "the slide does not record its resolution (MPP); give `mpp` in the request",
                code="missing_mpp",
            )
        if not all(MPP_RANGE[0] <= v <= MPP_RANGE[1] for v in (mpp_x, mpp_y)):
            raise Unprocessable(
                f"the slide's MPP ({mpp_x:.4g}, {mpp_y:.4g}) is not plausible; give `mpp`",
                code="implausible_mpp",
            )
        width, height = slide.dimensions
        power = _float(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER))
        return SlideInfo(
            path=path,
            vendor=str(props.get(openslide.PROPERTY_NAME_VENDOR) or "unknown"),
            width_px=int(width),
            height_px=int(height),
            levels=_levels(slide),
            mpp_x=float(mpp_x),
            mpp_y=float(mpp_y),
            mpp_source=source,
            objective_power=power,
            bounds=_bounds(props, int(width), int(height)),
            quickhash=props.get(openslide.PROPERTY_NAME_QUICKHASH1),
            slide_mpp=(replaced[0], replaced[1]) if replaced is not None else None,
            slide_mpp_source=replaced[2] if replaced is not None else None,
        )
    finally:
        slide.close()


def mpp_disagreement(info: SlideInfo) -> float | None:
    """How far the request's MPP lies from the slide's own, relative to the slide's
    (the larger of x and y); None when the slide's own was used or it has none."""
    if info.slide_mpp is None:
        return None
    own_x, own_y = info.slide_mpp
    return max(abs(info.mpp_x - own_x) / own_x, abs(info.mpp_y - own_y) / own_y)


def mpp_mismatch_message(info: SlideInfo) -> str | None:
    """Both MPPs in words, when the request's differs from the slide's own by more
    than MPP_TOLERANCE; None otherwise."""
    off = mpp_disagreement(info)
    if off is None or off <= MPP_TOLERANCE or info.slide_mpp is None:
        return None
    own_x, own_y = info.slide_mpp
    own = f"{own_x:.4g}" if own_x == own_y else f"{own_x:.4g} x {own_y:.4g}"
    return (
        f"the request's mpp ({info.mpp_x:.4g} um/px) differs from the slide's own "
        f"({own} um/px, source: {info.slide_mpp_source}) by {off:.0%}, more than "
        f"{MPP_TOLERANCE:.0%}"
    )


def check_request_mpp(info: SlideInfo, *, override: bool) -> None:
    """Refuse a request MPP that contradicts the slide's own (a wrong MPP scales every
    tile and every area), unless the request says to override the slide's."""
    message = mpp_mismatch_message(info)
    if message is not None and not override:
        raise Unprocessable(
            f"{message}; correct it, or send mpp_override: true to analyse at the request's mpp",
            code="mpp_mismatch",
        )


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """OpenSlide's RGBA (transparent outside the scanned area) over white."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha[..., None].astype(np.uint16)
    return ((rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


class SlideReader:
    """Reads square tiles from one level; each calling thread gets its own handle."""

    def __init__(self, info: SlideInfo) -> None:
        self.info = info
        self._local = threading.local()
        self._handles: list[openslide.OpenSlide] = []
        self._lock = threading.Condition()
        self._active = 0  # reads in progress: close() waits for them
        self._closed = False
        self._cache = openslide.OpenSlideCache(CACHE_BYTES)

    @contextmanager
    def _reading(self) -> Iterator[openslide.OpenSlide]:
        with self._lock:
            if self._closed:
                raise SlideReadError("the slide reader is closed", code="reader_closed")
            self._active += 1
        try:
            yield self._handle()
        finally:
            with self._lock:
                self._active -= 1
                self._lock.notify_all()

    def _handle(self) -> openslide.OpenSlide:
        handle = getattr(self._local, "slide", None)
        if handle is None:
            handle = open_slide(self.info.path)
            handle.set_cache(self._cache)
            self._local.slide = handle
            with self._lock:
                self._handles.append(handle)
        return handle

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 [height, width, 3] at `level`; (x, y) in level-0 pixels."""
        with self._reading() as handle:
            try:
                image = handle.read_region((x, y), level, (width, height))
            except openslide.OpenSlideError as exc:
                raise SlideReadError(f"a region of the slide could not be read: {exc}") from None
        return rgba_to_rgb(np.asarray(image))

    def read_tiles(
        self, origins: list[tuple[int, int]], level: int, read_px: int, out_px: int
    ) -> np.ndarray:
        """Tiles of read_px x read_px at `level`, resized to out_px when they differ:
        uint8 [len(origins), out_px, out_px, 3]."""
        out = np.empty((len(origins), out_px, out_px, 3), dtype=np.uint8)
        with self._reading() as handle:
            for i, (x, y) in enumerate(origins):
                try:
                    image = handle.read_region((x, y), level, (read_px, read_px))
                except openslide.OpenSlideError as exc:
                    raise SlideReadError(f"a tile of the slide could not be read: {exc}") from None
                if read_px != out_px:
                    image = image.resize((out_px, out_px), Image.Resampling.BOX)
                out[i] = rgba_to_rgb(np.asarray(image))
        return out

    def close(self) -> None:
        """Close every handle once the reads in progress (in other threads, e.g. one
        whose awaiting task was cancelled) have finished; later reads fail cleanly."""
        with self._lock:
            self._closed = True
            self._lock.wait_for(lambda: self._active == 0)
            for handle in self._handles:
                handle.close()
            self._handles.clear()
