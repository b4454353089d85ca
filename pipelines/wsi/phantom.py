"""Synthetic whole slides: a layout of tissue with suspicious areas planted at known
places, written as a real pyramidal tiled TIFF (JPEG, 256-px tiles, levels as
successive pages, reduced ones with subfiletype=1) that OpenSlide reads.

With an MPP the first page carries an Aperio-style ImageDescription, so OpenSlide
reports the slide as `aperio` with `openslide.mpp-x/y` and objective power; without
one it is a generic tiled TIFF with no resolution at all.

A layout may carry marker-ink marks (`InkMark`: blue, green or black dots and
circles, as pathologists draw on the glass), laid over tissue and glass alike.

Two tile sources: `render` draws every pixel with `synthetic.render` (small slides,
tests and the demo); `bank` repeats a bank of rendered tiles chosen by the layout
(any size: the benchmark's 60k x 60k slides, written tile by tile in flat memory).

    python -m aidx.pipelines.wsi.phantom OUT.tiff --width 8192 --height 6144 --seed 0
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from aidx.pipelines.wsi import synthetic
from aidx.pipelines.wsi.synthetic import Tissue

TILE_PX = 256
JPEG_QUALITY = 80
MAX_RENDERED_PX = 100_000_000  # the `render` source holds level 0 in memory


@dataclass(frozen=True)
class Blob:
    """An area with a wobbly elliptic outline, in level-0 pixels."""

    x_px: float
    y_px: float
    rx_px: float
    ry_px: float
    angle: float = 0.0
    wobble: float = 0.0
    phases: tuple[float, float] = (0.0, 0.0)

    def contains(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        dx, dy = xs - self.x_px, ys - self.y_px
        c, s = math.cos(self.angle), math.sin(self.angle)
        u, v = c * dx + s * dy, -s * dx + c * dy
        rho = np.sqrt((u / self.rx_px) ** 2 + (v / self.ry_px) ** 2)
        if self.wobble:
            theta = np.arctan2(v, u)
            rho = rho / (
                1
                + self.wobble
                * (
                    0.6 * np.sin(3 * theta + self.phases[0])
                    + 0.4 * np.sin(5 * theta + self.phases[1])
                )
            )
        return np.asarray(rho <= 1.0)

    def polygon(self, points: int = 64) -> list[tuple[float, float]]:
        """The outline as a closed ring of level-0 (x, y) points."""
        ring = []
        for k in range(points):
            theta = 2 * math.pi * k / points
            r = 1 + self.wobble * (
                0.6 * math.sin(3 * theta + self.phases[0])
                + 0.4 * math.sin(5 * theta + self.phases[1])
            )
            u, v = r * self.rx_px * math.cos(theta), r * self.ry_px * math.sin(theta)
            c, s = math.cos(self.angle), math.sin(self.angle)
            ring.append((self.x_px + c * u - s * v, self.y_px + s * u + c * v))
        ring.append(ring[0])
        return ring


# Marker ink as scanned over bare glass (RGB); over tissue it darkens what lies below.
INK_RGB = {"blue": (40, 75, 165), "green": (45, 125, 85), "black": (30, 30, 38)}


@dataclass(frozen=True)
class InkMark:
    """A marker-ink mark: a filled dot (`stroke_px` 0) or a stroke of that width
    along the blob's outline (a circle drawn around an area)."""

    colour: str  # a key of INK_RGB
    blob: Blob
    stroke_px: float = 0.0

    def contains(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        inside = self.blob.contains(xs, ys)
        if not self.stroke_px:
            return inside
        b, width = self.blob, self.stroke_px
        hole = replace(b, rx_px=b.rx_px - width, ry_px=b.ry_px - width)
        return np.asarray(inside & ~hole.contains(xs, ys))


def apply_ink(tile: np.ndarray, x0: int, y0: int, marks: Sequence[InkMark]) -> np.ndarray:
    """The tile (level-0 origin x0, y0) with the marks laid over it: each multiplies
    what lies below by its transmittance, a little uneven as a felt tip is."""
    if not marks:
        return tile
    h, w = tile.shape[:2]
    ys, xs = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float64) + 0.5
    out = tile.astype(np.float32)
    streaks = 0.85 + 0.15 * np.sin(xs / 23.0 + ys / 37.0) * np.sin(ys / 11.0)
    for mark in marks:
        inside = mark.contains(xs, ys)
        if not inside.any():
            continue
        transmittance = np.asarray(INK_RGB[mark.colour], dtype=np.float32) / 255.0
        factor = transmittance[None, None, :] ** streaks[..., None].astype(np.float32)
        out = np.where(inside[..., None], out * factor, out)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class SlideLayout:
    """Which tissue lies where: a `synthetic.Layout` with the ground truth kept."""

    width_px: int
    height_px: int
    mpp: float | None
    tissue: tuple[Blob, ...]
    suspicious: tuple[Blob, ...] = ()
    lymphoid: tuple[Blob, ...] = ()
    seed: int = 0
    stain: synthetic.Stain = field(default_factory=synthetic.Stain)
    ink: tuple[InkMark, ...] = ()  # marker ink on top (the `render` source only)

    def __call__(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        xs, ys = np.broadcast_arrays(np.asarray(xs, np.float64), np.asarray(ys, np.float64))
        out = np.zeros(xs.shape, dtype=np.uint8)
        inside = np.zeros(xs.shape, dtype=bool)
        for blob in self.tissue:
            inside |= blob.contains(xs, ys)
        out[inside] = Tissue.normal
        for blob in self.lymphoid:
            out[inside & blob.contains(xs, ys)] = Tissue.lymphoid
        for blob in self.suspicious:
            out[inside & blob.contains(xs, ys)] = Tissue.suspicious
        return out


def make_layout(
    seed: int,
    width_px: int,
    height_px: int,
    *,
    mpp: float | None = 0.5,
    n_suspicious: int = 2,
    n_lymphoid: int = 1,
    radius_fraction: tuple[float, float] = (0.13, 0.17),
) -> SlideLayout:
    """One to three tissue pieces with a margin of bare glass around them, and
    suspicious and lymphoid areas (radius a fraction of the shorter side) placed
    inside the tissue, not overlapping."""
    short = min(width_px, height_px)
    radius_px = (radius_fraction[0] * short, radius_fraction[1] * short)
    rng = np.random.default_rng([seed, 101])
    pieces = 1 if min(width_px, height_px) < 20_000 else int(rng.integers(1, 4))
    tissue = []
    for k in range(pieces):
        cx = width_px * (k + 0.5) / pieces
        tissue.append(
            Blob(
                x_px=cx + rng.uniform(-0.03, 0.03) * width_px,
                y_px=height_px * rng.uniform(0.45, 0.55),
                rx_px=width_px / pieces * rng.uniform(0.36, 0.42),
                ry_px=height_px * rng.uniform(0.34, 0.40),
                angle=float(rng.uniform(-0.2, 0.2)),
                wobble=0.08,
                phases=(float(rng.uniform(0, 6.3)), float(rng.uniform(0, 6.3))),
            )
        )
    placed: list[Blob] = []

    def place(radius_range: tuple[float, float]) -> Blob:
        for _ in range(2000):
            r = float(rng.uniform(*radius_range))
            host = tissue[int(rng.integers(len(tissue)))]
            x = host.x_px + rng.uniform(-1, 1) * host.rx_px
            y = host.y_px + rng.uniform(-1, 1) * host.ry_px
            blob = Blob(x, y, r, r * rng.uniform(0.75, 1.0), float(rng.uniform(0, math.pi)), 0.1)
            ring = np.array(blob.polygon(16))
            if not all(host.contains(ring[:, 0] * 1.0, ring[:, 1] * 1.0)):
                continue
            if any(math.hypot(x - o.x_px, y - o.y_px) < 1.15 * (r + o.rx_px) for o in placed):
                continue
            placed.append(blob)
            return blob
        raise ValueError("the slide is too small for the areas asked for")

    suspicious = tuple(place(radius_px) for _ in range(n_suspicious))
    lymphoid = tuple(place(radius_px) for _ in range(n_lymphoid))
    return SlideLayout(
        width_px,
        height_px,
        mpp,
        tuple(tissue),
        suspicious,
        lymphoid,
        seed,
        synthetic.random_stain(rng),
    )


# --- tile sources -------------------------------------------------------------------


def level_shapes(width_px: int, height_px: int, smallest_px: int = 1024) -> list[tuple[int, int]]:
    """(height, width) per level, halving until the longer side is <= smallest_px."""
    shapes = [(height_px, width_px)]
    while max(shapes[-1]) > smallest_px and min(shapes[-1]) >= 2 * TILE_PX:
        h, w = shapes[-1]
        shapes.append((h // 2, w // 2))
    return shapes


def _tiles_of(image: np.ndarray) -> Iterator[np.ndarray]:
    for y in range(0, image.shape[0], TILE_PX):
        for x in range(0, image.shape[1], TILE_PX):
            yield image[y : y + TILE_PX, x : x + TILE_PX]


def _halve(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    blocks = image[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).astype(np.uint16)
    return ((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)


def rendered_levels(layout: SlideLayout) -> Iterator[Iterator[np.ndarray]]:
    """Every pixel drawn; level 0 is held in memory, so only for small slides."""
    if layout.width_px * layout.height_px > MAX_RENDERED_PX:
        raise ValueError("the render source is for small slides; use the bank source")
    image = np.empty((layout.height_px, layout.width_px, 3), dtype=np.uint8)
    for y in range(0, layout.height_px, TILE_PX):
        for x in range(0, layout.width_px, TILE_PX):
            h, w = min(TILE_PX, layout.height_px - y), min(TILE_PX, layout.width_px - x)
            tile = synthetic.render(x, y, w, h, layout, seed=layout.seed, stain=layout.stain)
            image[y : y + h, x : x + w] = apply_ink(tile, x, y, layout.ink)
    shapes = level_shapes(layout.width_px, layout.height_px)
    for level, (h, w) in enumerate(shapes):
        if level:
            image = _halve(image)[:h, :w]
        yield _tiles_of(image)


class TileBank:
    """A few rendered tiles per kind of tissue, JPEG-encoded once; a slide of any
    size is tiled from them by its layout, tile by tile."""

    def __init__(self, layout: SlideLayout, per_kind: int = 12) -> None:
        self.layout = layout
        self.tiles: dict[int, list[np.ndarray]] = {}
        self.encoded: dict[int, list[bytes]] = {}
        for kind in Tissue:
            uniform = synthetic.uniform_layout(kind)
            tiles = [
                synthetic.render(
                    TILE_PX * 7 * i,
                    TILE_PX * 3 * int(kind),
                    TILE_PX,
                    TILE_PX,
                    uniform,
                    seed=layout.seed,
                    stain=layout.stain,
                )
                for i in range(per_kind if kind is not Tissue.background else 2)
            ]
            self.tiles[int(kind)] = tiles
            self.encoded[int(kind)] = [_jpeg(t) for t in tiles]

    def _choice(self, kinds: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return (rows * 7919 + cols * 104729) % np.array(
            [len(self.tiles[int(k)]) for k in kinds.flat]
        ).reshape(kinds.shape)

    def _kinds(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.layout((cols + 0.5) * TILE_PX, (rows + 0.5) * TILE_PX)

    def level_tiles(self, level: int, shape: tuple[int, int]) -> Iterator[np.ndarray | bytes]:
        h, w = shape
        scale = 1 << level
        piece = TILE_PX // scale
        shrunk = {kind: [_shrink(t, scale) for t in tiles] for kind, tiles in self.tiles.items()}
        for y in range(0, h, TILE_PX):
            for x in range(0, w, TILE_PX):
                rows = (np.arange(scale) + y // piece)[:, None] * np.ones((1, scale), int)
                cols = (np.arange(scale) + x // piece)[None, :] * np.ones((scale, 1), int)
                kinds = self._kinds(rows, cols)
                picks = self._choice(kinds, rows, cols)
                if level == 0:
                    yield self.encoded[int(kinds[0, 0])][int(picks[0, 0])]
                    continue
                out = np.empty((TILE_PX, TILE_PX, 3), dtype=np.uint8)
                for i in range(scale):
                    for j in range(scale):
                        out[i * piece : (i + 1) * piece, j * piece : (j + 1) * piece] = shrunk[
                            int(kinds[i, j])
                        ][int(picks[i, j])]
                yield out


def _shrink(tile: np.ndarray, scale: int) -> np.ndarray:
    for _ in range(int(math.log2(scale))):
        tile = _halve(tile)
    return tile


def _jpeg(tile: np.ndarray) -> bytes:
    return bytes(imagecodecs.jpeg_encode(tile, level=JPEG_QUALITY))


def banked_levels(layout: SlideLayout) -> Iterator[Iterator[np.ndarray | bytes]]:
    if layout.width_px % TILE_PX or layout.height_px % TILE_PX:
        raise ValueError("the bank source needs sides that are multiples of 256")
    if layout.ink:
        raise ValueError("the bank source draws no ink; use the render source")
    bank = TileBank(layout)
    for level, shape in enumerate(level_shapes(layout.width_px, layout.height_px)):
        yield bank.level_tiles(level, shape)


# --- writing ------------------------------------------------------------------------


def aperio_description(width_px: int, height_px: int, mpp: float, app_mag: float) -> str:
    return (
        f"Aperio Image Library v12.0.15 (aidx synthetic)\r\n{width_px}x{height_px} "
        f"[0,0 {width_px}x{height_px}] ({TILE_PX}x{TILE_PX}) JPEG/RGB Q={JPEG_QUALITY}"
        f"|AppMag = {app_mag:g}|MPP = {mpp:g}"
    )


def write_slide(path: Path, layout: SlideLayout, *, source: str = "render") -> Path:
    """Write the layout as a pyramidal JPEG tiled TIFF; returns the path."""
    levels = rendered_levels(layout) if source == "render" else banked_levels(layout)
    shapes = level_shapes(layout.width_px, layout.height_px)
    path.parent.mkdir(parents=True, exist_ok=True)
    big = layout.width_px * layout.height_px * 3 > 3_000_000_000
    with tifffile.TiffWriter(path, bigtiff=big) as tif:
        for level, (tiles, (h, w)) in enumerate(zip(levels, shapes, strict=True)):
            extra: dict[str, object] = {}
            if level == 0 and layout.mpp is not None:
                mag = 20.0 * 0.5 / layout.mpp
                extra["description"] = aperio_description(w, h, layout.mpp, mag)
                extra["resolution"] = (1e4 / layout.mpp, 1e4 / layout.mpp)
                extra["resolutionunit"] = "CENTIMETER"
            tif.write(
                tiles,  # type: ignore[arg-type]
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(TILE_PX, TILE_PX),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": JPEG_QUALITY},
                subfiletype=1 if level else 0,
                metadata=None,
                **extra,  # type: ignore[arg-type]
            )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic pyramidal slide.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--height", type=int, default=6144)
    parser.add_argument("--mpp", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suspicious", type=int, default=2)
    parser.add_argument("--source", choices=["render", "bank"], default="render")
    args = parser.parse_args(argv)
    layout = make_layout(
        args.seed, args.width, args.height, mpp=args.mpp, n_suspicious=args.suspicious
    )
    write_slide(args.out, layout, source=args.source)
    for k, blob in enumerate(layout.suspicious, 1):
        print(
            f"suspicious area {k}: centre ({blob.x_px:.0f}, {blob.y_px:.0f}) px, "
            f"radius {blob.rx_px:.0f} px"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
