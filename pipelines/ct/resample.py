"""Separable resampling of a series onto the model grid, in one pass.

The model grid keeps the series' direction cosines (MONAI's Spacing with
`diagonal=False`) after an axis permutation and flips (Orientation to RAS), so each
model axis samples exactly one series axis: index `c = scale * o + offset`. The
resampling is then three 1-D linear maps, one per axis, each a banded weight
matrix: linear interpolation with the border clamped (MONAI's `bilinear` with
`padding_mode="border"`), and where an axis is downsampled, a Gaussian applied
first (sigma = (zoom - 1) / 2 input voxels, skimage's anti-aliasing rule) so fine
noise and edges are averaged rather than aliased. Each weight matrix only reaches
the input rows it needs, so a crop of the model grid reads only its part of the
series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

GAUSS_TRUNCATE = 4.0  # scipy.ndimage's default kernel radius, in sigmas
AXIS_TOL = 1e-6  # off-axis terms of the index map (an exact permutation)
BLOCK_VOXELS = 1 << 21  # series voxels made float32 at a time (8 MB)


@dataclass(frozen=True)
class AxisMap:
    """One model axis: the series axis it samples and its index map."""

    source_axis: int  # 0 k (slice), 1 j (row), 2 i (column)
    scale: float  # series voxels per model voxel (negative: flipped)
    offset: float

    @property
    def sigma(self) -> float:
        """Anti-aliasing sigma in series voxels (0 where the axis is not downsampled)."""
        return max(0.0, (abs(self.scale) - 1.0) / 2.0)

    def coordinates(self, start: int, stop: int) -> np.ndarray:
        return self.scale * np.arange(start, stop, dtype=np.float64) + self.offset


def axis_maps(model_to_ijk: np.ndarray) -> list[AxisMap]:
    """Model (x, y, z) index -> series (i, j, k) index, split per model axis; the
    3x3 part must be a scaled signed permutation."""
    maps = []
    for axis in range(3):
        column = model_to_ijk[:3, axis]
        source = int(np.argmax(np.abs(column)))
        if np.any(np.abs(np.delete(column, source)) > AXIS_TOL * abs(column[source])):
            raise ValueError("the model grid is not axis-aligned with the series")
        # (i, j, k) row `source` is series array axis 2 - source ([k, j, i] order)
        maps.append(AxisMap(2 - source, float(column[source]), float(model_to_ijk[source, 3])))
    return maps


def _gaussian(sigma: float) -> np.ndarray:
    if sigma <= 0:
        return np.ones(1)
    radius = int(GAUSS_TRUNCATE * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return taps / taps.sum()


def weights(coords: np.ndarray, n_in: int, sigma: float) -> sparse.csr_matrix:
    """[len(coords), n_in] rows: linear interpolation at `coords` (clamped to the
    border) of the input smoothed by a Gaussian of `sigma` (border replicated)."""
    coords = np.clip(coords, 0.0, n_in - 1.0)
    low = np.floor(coords).astype(np.int64)
    frac = coords - low
    kernel = _gaussian(sigma)
    radius = len(kernel) // 2
    offsets = np.arange(-radius, radius + 2)  # the kernel at `low` and at `low + 1`
    padded = np.concatenate([kernel, [0.0]])
    shifted = np.concatenate([[0.0], kernel])
    taps = (1.0 - frac)[:, None] * padded[None, :] + frac[:, None] * shifted[None, :]
    columns = np.clip(low[:, None] + offsets[None, :], 0, n_in - 1)
    rows = np.repeat(np.arange(len(coords)), len(offsets))
    matrix = sparse.coo_matrix(
        (taps.ravel(), (rows, columns.ravel())), shape=(len(coords), n_in)
    ).tocsr()  # duplicates (clamped taps) are summed
    matrix.eliminate_zeros()
    return matrix


def support(matrix: sparse.csr_matrix) -> tuple[int, int]:
    """The input range [lo, hi) that `matrix` reads."""
    used = matrix.indices
    return int(used.min()), int(used.max()) + 1


def across_slices(
    volume: np.ndarray,
    matrix: sparse.csr_matrix,
    k0: int,
    rows: tuple[int, int],
    block_voxels: int = BLOCK_VOXELS,
) -> np.ndarray:
    """`matrix` (output planes x slices k0..) applied along the slices of `volume`'s
    rows j0..j1: float32 [planes, j1 - j0, columns]. The slab is made float32 a block
    of rows at a time (an int16 series is never copied whole); each output voxel is
    the same sparse sum, in the same order, as over the whole slab at once."""
    j0, j1 = rows
    n_slices, columns = matrix.shape[1], volume.shape[2]
    out = np.empty((matrix.shape[0], j1 - j0, columns), dtype=np.float32)
    step = max(1, block_voxels // (n_slices * columns))
    for j in range(j0, j1, step):
        stop = min(j + step, j1)
        block = np.ascontiguousarray(volume[k0 : k0 + n_slices, j:stop], dtype=np.float32)
        product = matrix @ block.reshape(n_slices, -1)
        out[:, j - j0 : stop - j0] = product.reshape(-1, stop - j, columns)
    return out


def resample(
    volume: np.ndarray,
    maps: list[AxisMap],
    box: tuple[slice, slice, slice],
    *,
    anti_alias: bool = True,
) -> np.ndarray:
    """`volume` [k, j, i] sampled on the model voxels `box` (x, y, z slices):
    float32 [X, Y, Z]. Reads only the slices, rows and columns the box needs."""
    w: list[sparse.csr_matrix] = [sparse.csr_matrix((0, 0))] * 3
    for model_axis, m in enumerate(maps):
        sl = box[model_axis]
        sigma = m.sigma if anti_alias else 0.0
        coords = m.coordinates(int(sl.start), int(sl.stop))
        w[m.source_axis] = weights(coords, volume.shape[m.source_axis], sigma).astype(np.float32)
    (k0, k1), (j0, j1) = support(w[0]), support(w[1])
    # Slices first (a sparse product over the rows the row weights read), then rows
    # per slice, then columns as one dense product on what is left.
    planes = across_slices(volume, w[0][:, k0:k1], k0, (j0, j1))
    rows = w[1][:, j0:j1]
    kj = np.stack([rows @ plane for plane in planes])
    kji = (kj.reshape(-1, kj.shape[-1]) @ w[2].T.toarray()).reshape(*kj.shape[:2], -1)
    order = [m.source_axis for m in maps]  # model axes x, y, z <- array axes
    return np.ascontiguousarray(kji.transpose(order), dtype=np.float32)
