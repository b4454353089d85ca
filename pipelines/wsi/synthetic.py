"""Synthetic H&E-like tissue, rendered in level-0 pixel coordinates.

Colour comes from stain optical densities (Beer-Lambert, Ruifrok & Johnston's H&E
vectors): eosin for pink stroma with a fibrous texture, haematoxylin for purple
nuclei. "Suspicious" tissue has crowded, enlarged, pleomorphic, hyperchromatic
nuclei, sometimes with a nucleolus; normal tissue has small, round, evenly spaced
nuclei, and some normal tissue is a dense small-lymphocyte infiltrate (dark and
crowded, but small and round) so that "purple" alone does not make a tile suspicious.

Everything is a function of level-0 coordinates and a seed: nuclei are drawn per
cell of `CELL_PX` from `np.random.default_rng([seed, cell_y, cell_x])` and the stroma
texture is a sum of global sinusoids, so any region renders the same whether drawn
whole or tile by tile (no seams at tile borders).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

CELL_PX = 128  # nuclei are sampled per cell of this many level-0 pixels
MAX_RADIUS_PX = 14  # no nucleus reaches further than this from its centre
_OFFSET = 1 << 24  # keeps seed words non-negative for cells left of or above 0
# Stain optical-density vectors (rows: haematoxylin, eosin), normalised.
_STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]], dtype=np.float32)
_STAINS /= np.linalg.norm(_STAINS, axis=1, keepdims=True)
_BACKGROUND_OD = np.array([0.03, 0.03, 0.025], dtype=np.float32)  # the glass, near white


class Tissue(enum.IntEnum):
    background = 0
    normal = 1
    lymphoid = 2  # a normal dense infiltrate: hard negatives
    suspicious = 3


@dataclass(frozen=True)
class NucleusStyle:
    per_cell: tuple[int, int]  # nuclei per 128 x 128 px cell (min, max)
    radius_px: tuple[float, float]
    elongation: tuple[float, float]  # major/minor axis ratio
    irregularity: float  # amplitude of the outline's wobble, relative to the radius
    haematoxylin: tuple[float, float]  # optical density at the centre
    nucleolus_p: float


STYLES = {
    Tissue.normal: NucleusStyle((6, 14), (3.2, 4.6), (1.0, 1.6), 0.05, (0.55, 0.8), 0.0),
    Tissue.lymphoid: NucleusStyle((22, 34), (2.8, 3.6), (1.0, 1.15), 0.03, (0.9, 1.2), 0.0),
    Tissue.suspicious: NucleusStyle((16, 30), (5.5, 10.5), (1.0, 2.0), 0.22, (1.0, 1.6), 0.5),
}

# A layout says which tissue lies at level-0 points: xs, ys (float arrays) -> Tissue codes.
Layout = Callable[[np.ndarray, np.ndarray], np.ndarray]


def uniform_layout(tissue: Tissue) -> Layout:
    def layout(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        return np.full(np.broadcast(xs, ys).shape, int(tissue), dtype=np.uint8)

    return layout


@dataclass(frozen=True)
class Stain:
    """Per-slide staining: how strong each stain came out."""

    haematoxylin: float = 1.0
    eosin: float = 1.0


def random_stain(rng: np.random.Generator) -> Stain:
    return Stain(float(rng.uniform(0.8, 1.2)), float(rng.uniform(0.75, 1.25)))


def _stroma_density(xs: np.ndarray, ys: np.ndarray, seed: int) -> np.ndarray:
    """Eosin density with a fibrous texture: a few long, oriented sinusoids, each
    evaluated separably (sin(a + b) = sin a cos b + cos a sin b) as an outer product."""
    rng = np.random.default_rng([seed, 7])
    x, y = xs.reshape(1, -1).astype(np.float64), ys.reshape(-1, 1).astype(np.float64)
    density = np.full((y.shape[0], x.shape[1]), 0.42, dtype=np.float32)
    waves = [(rng.uniform(0, np.pi), rng.uniform(9, 40), rng.uniform(0.03, 0.08)) for _ in range(6)]
    waves.append((rng.uniform(0, np.pi), 900.0, 0.12))  # looser and denser stroma
    for angle, period, amplitude in waves:
        k = 2 * np.pi / period
        phase = rng.uniform(0, 2 * np.pi)
        ax, ay = k * np.cos(angle) * x, k * np.sin(angle) * y + phase
        wave = np.sin(ax) * np.cos(ay) + np.cos(ax) * np.sin(ay)
        density += np.float32(amplitude) * wave.astype(np.float32)
    return np.clip(density, 0.08, None)


class Nucleus(NamedTuple):
    x: float
    y: float
    radius: float
    elongation: float
    angle: float
    od: float  # haematoxylin optical density
    wobble: float
    nucleolus: bool
    seed: int  # for its outline and chromatin grain


def _cell_nuclei(seed: int, cy: int, cx: int, layout: Layout) -> list[Nucleus]:
    """The nuclei whose centres fall in one cell."""
    rng = np.random.default_rng([seed, cy + _OFFSET, cx + _OFFSET])
    centre = layout(np.array([cx * CELL_PX + CELL_PX / 2]), np.array([cy * CELL_PX + CELL_PX / 2]))
    kind = Tissue(int(centre.reshape(-1)[0]))
    if kind is Tissue.background:
        return []
    style = STYLES[kind]
    count = int(rng.integers(style.per_cell[0], style.per_cell[1] + 1))
    xs = cx * CELL_PX + rng.uniform(0, CELL_PX, count)
    ys = cy * CELL_PX + rng.uniform(0, CELL_PX, count)
    kinds = layout(xs, ys)  # each nucleus takes the tissue where it lies
    nuclei = []
    for i in range(count):
        here = Tissue(int(kinds[i]))
        if here is Tissue.background:
            continue
        s = STYLES[here]
        nuclei.append(
            Nucleus(
                float(xs[i]),
                float(ys[i]),
                float(rng.uniform(*s.radius_px)),
                float(rng.uniform(*s.elongation)),
                float(rng.uniform(0, np.pi)),
                float(rng.uniform(*s.haematoxylin)),
                s.irregularity,
                bool(rng.random() < s.nucleolus_p),
                int(rng.integers(1 << 30)),
            )
        )
    return nuclei


def _draw_nucleus(h_od: np.ndarray, x0: int, y0: int, nucleus: Nucleus) -> None:
    x, y, radius, elong, angle, od, wobble, nucleolus, k = nucleus
    h, w = h_od.shape
    reach = min(MAX_RADIUS_PX, int(np.ceil(radius * max(elong, 1.0) ** 0.5 * (1 + wobble))) + 2)
    c0, c1 = max(0, int(x) - x0 - reach), min(w, int(x) - x0 + reach + 1)
    r0, r1 = max(0, int(y) - y0 - reach), min(h, int(y) - y0 + reach + 1)
    if c0 >= c1 or r0 >= r1:
        return
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    dx, dy = xx + x0 - x, yy + y0 - y
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    a, b = radius * elong**0.5, radius / elong**0.5
    theta = np.arctan2(v, u)
    rng = np.random.default_rng(k)
    harmonics = rng.uniform(0, 2 * np.pi, 3)
    edge = 1 + wobble * (
        np.sin(2 * theta + harmonics[0]) * 0.5
        + np.sin(3 * theta + harmonics[1]) * 0.35
        + np.sin(5 * theta + harmonics[2]) * 0.15
    )
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2) / edge
    inside = np.clip((1.0 - rho) * radius * 0.8 + 0.5, 0.0, 1.0)  # ~1 px soft edge
    if not inside.any():
        return
    # the grain is drawn for the whole window and cut, so a clipped nucleus matches
    full = 2 * reach + 1
    grain_full = 1 + 0.25 * rng.standard_normal((full, full)).astype(np.float32)
    gr0, gc0 = r0 - (int(y) - y0 - reach), c0 - (int(x) - x0 - reach)
    grain = grain_full[gr0 : gr0 + (r1 - r0), gc0 : gc0 + (c1 - c0)]
    value = od * inside * grain * (0.8 + 0.2 * rho.clip(0, 1))  # darker rim: chromatin
    if nucleolus:
        n_rho = np.sqrt(((u - 0.2 * a) / 1.6) ** 2 + (v / 1.6) ** 2)
        value += 0.6 * od * np.clip(1.0 - n_rho, 0, 1)
    np.maximum(h_od[r0:r1, c0:c1], value, out=h_od[r0:r1, c0:c1])


def render(
    x0: int,
    y0: int,
    width: int,
    height: int,
    layout: Layout,
    *,
    seed: int,
    stain: Stain = Stain(),
    noise_seed: int | None = None,
) -> np.ndarray:
    """RGB uint8 [height, width, 3] of the level-0 region at (x0, y0)."""
    ys = np.arange(height, dtype=np.float64) + y0
    xs = np.arange(width, dtype=np.float64) + x0
    # the tissue map at 8-px resolution, upsampled: cheap and smooth enough
    step = 8
    gy = np.arange(y0, y0 + height + step, step, dtype=np.float32)
    gx = np.arange(x0, x0 + width + step, step, dtype=np.float32)
    coarse = layout(gx[None, :] + 0 * gy[:, None], gy[:, None] + 0 * gx[None, :])
    kinds = np.repeat(np.repeat(coarse, step, axis=0), step, axis=1)[:height, :width]
    tissue = (kinds != Tissue.background).astype(np.float32)

    e_od = np.zeros((height, width), dtype=np.float32)
    h_od = np.zeros((height, width), dtype=np.float32)
    if tissue.any():
        e_od = _stroma_density(xs, ys, seed) * tissue
        h_od = np.float32(0.05) * tissue
    cells_x = range((x0 - MAX_RADIUS_PX) // CELL_PX, (x0 + width + MAX_RADIUS_PX) // CELL_PX + 1)
    cells_y = range((y0 - MAX_RADIUS_PX) // CELL_PX, (y0 + height + MAX_RADIUS_PX) // CELL_PX + 1)
    for cy in cells_y:
        for cx in cells_x:
            for nucleus in _cell_nuclei(seed, cy, cx, layout):
                _draw_nucleus(h_od, x0, y0, nucleus)
    od = (
        h_od[..., None] * (_STAINS[0] * stain.haematoxylin)
        + e_od[..., None] * (_STAINS[1] * stain.eosin)
        + _BACKGROUND_OD
    )
    noise_rng = np.random.default_rng(
        [seed, 11, y0 + _OFFSET, x0 + _OFFSET] if noise_seed is None else noise_seed
    )
    od += noise_rng.normal(0, 0.012, od.shape).astype(np.float32)
    rgb = 255.0 * np.exp(-np.clip(od, 0, None))
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
