"""The anatomy of a synthetic PA chest phantom (`synthetic.generate`): a body frame,
lungs, heart and thorax drawn analytically (units: half the shorter image side), their
density map with ribs, spine, clavicles and vessel markings, patchy consolidations, and
the detector's exposure. Bright = dense; the patient's right is on the image's left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

NORMAL_CTR_RANGE = (0.38, 0.50)
CARDIOMEGALY_CTR_RANGE = (0.56, 0.68)
WORK_SHORT_PX = 256  # anatomy is drawn at most this fine, then resampled (it is smooth)


# --- geometry ---------------------------------------------------------------------


@dataclass(frozen=True)
class BodyFrame:
    """Per-pixel body coordinates: u across (patient's left positive), v down."""

    u: np.ndarray
    v: np.ndarray
    scale_px: float  # image pixels per body unit

    @classmethod
    def draw(
        cls, rng: np.random.Generator, size_px: tuple[int, int], work: tuple[int, int]
    ) -> BodyFrame:
        """Coordinates on a `work` grid that covers an image of `size_px`."""
        rows, cols = size_px
        short = min(rows, cols)
        scale = 0.5 * short * rng.uniform(0.84, 0.97)
        angle = np.deg2rad(rng.uniform(-5.0, 5.0))
        r0 = rows / 2 + rng.uniform(-0.04, 0.04) * short
        c0 = cols / 2 + rng.uniform(-0.04, 0.04) * short
        # work pixel i has its centre at image coordinate (i + 0.5) * rows / work_rows
        dr = (np.arange(work[0], dtype=np.float32) + 0.5) * np.float32(rows / work[0]) - r0
        dc = (np.arange(work[1], dtype=np.float32) + 0.5) * np.float32(cols / work[1]) - c0
        dr, dc = dr.astype(np.float32)[:, None], dc.astype(np.float32)[None, :]
        cos, sin = np.float32(np.cos(angle) / scale), np.float32(np.sin(angle) / scale)
        return cls(u=cos * dc + sin * dr, v=cos * dr - sin * dc, scale_px=float(scale))


def work_shape(rows: int, cols: int) -> tuple[int, int]:
    factor = min(1.0, WORK_SHORT_PX / min(rows, cols))
    return max(1, round(rows * factor)), max(1, round(cols * factor))


def resize(arrays: tuple[np.ndarray, ...], shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Bilinear resampling of work-grid maps to the image grid (pixel-centre aligned)."""
    if arrays[0].shape == shape:
        return arrays
    stack = torch.from_numpy(np.stack(arrays))[None]
    out = F.interpolate(stack, size=shape, mode="bilinear", align_corners=False)[0].numpy()
    return tuple(out)


@dataclass(frozen=True)
class _Lung:
    side: int  # -1: patient's right (image left), +1: patient's left
    a_c: float  # centre, lateral distance from the midline
    v_c: float
    ax: float  # half-width at mid-height
    ay: float  # half-height
    taper: float  # width grows towards the base
    dome_v: float  # top of the hemidiaphragm dome
    dome_a: float  # lateral position of the dome's top
    dome_curv: float

    def lateral_extent(self) -> float:
        y = np.linspace(-1.0, 1.0, 401)
        a = self.a_c + self.ax * (1 + self.taper * y) * np.sqrt(1 - y**2)
        v = self.v_c + self.ay * y
        below_dome = v < self.dome_v + self.dome_curv * ((a - self.dome_a) / 0.3) ** 2
        return float(a[below_dome].max())


@dataclass(frozen=True)
class _Heart:
    u_c: float
    v_c: float
    p: float  # semi-axes of the (rotated) ellipse
    q: float
    tilt: float


@dataclass(frozen=True)
class Thorax:
    lungs: tuple[_Lung, _Lung]
    heart: _Heart
    ctr: float
    width: float  # thoracic width (outer lung edge to outer lung edge), body units
    mediastinum_hw: float

    @classmethod
    def draw(cls, rng: np.random.Generator, *, cardiomegaly: bool) -> Thorax:
        a_c, v_c = rng.uniform(0.36, 0.42), rng.uniform(-0.12, -0.03)
        ax, ay, taper = rng.uniform(0.26, 0.31), rng.uniform(0.62, 0.72), rng.uniform(0.2, 0.35)
        dome_v = v_c + ay * rng.uniform(0.55, 0.72)
        lungs = tuple(
            _Lung(
                side=side,
                a_c=a_c * rng.uniform(0.97, 1.03),
                v_c=v_c,
                ax=ax * rng.uniform(0.96, 1.04),
                ay=ay,
                taper=taper,
                # the right hemidiaphragm (side -1) sits a little higher
                dome_v=dome_v + (0.0 if side < 0 else rng.uniform(0.0, 0.06)),
                dome_a=rng.uniform(0.28, 0.4),
                dome_curv=rng.uniform(0.12, 0.25),
            )
            for side in (-1, 1)
        )
        width = lungs[0].lateral_extent() + lungs[1].lateral_extent()
        ctr = float(rng.uniform(*(CARDIOMEGALY_CTR_RANGE if cardiomegaly else NORMAL_CTR_RANGE)))
        heart_w = ctr * width
        right_fraction = rng.uniform(0.28, 0.38)  # share of the heart right of the midline
        tilt = np.deg2rad(rng.uniform(-30.0, -12.0))
        aspect = rng.uniform(0.72, 0.9)  # q / p
        # choose p so that the rotated ellipse's horizontal half-extent is heart_w / 2
        p = 0.5 * heart_w / np.sqrt(np.cos(tilt) ** 2 + (aspect * np.sin(tilt)) ** 2)
        q = aspect * p
        half_h = np.sqrt((p * np.sin(tilt)) ** 2 + (q * np.cos(tilt)) ** 2)
        left_dome = lungs[1].dome_v + rng.uniform(0.0, 0.05)
        heart = _Heart(
            u_c=heart_w * (0.5 - right_fraction),
            v_c=left_dome + 0.04 - 0.8 * half_h,
            p=float(p),
            q=float(q),
            tilt=float(tilt),
        )
        return cls(lungs, heart, ctr, width, float(rng.uniform(0.075, 0.095)))  # type: ignore[arg-type]


# --- drawing ----------------------------------------------------------------------


def _soft(x: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 ramp of `width` centred on x = 0 (anti-aliased inside test)."""
    return np.clip(x * np.float32(1.0 / width) + np.float32(0.5), 0.0, 1.0)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """A smooth Gaussian random field, about `cells` blobs across the shorter side,
    unit standard deviation; separable kernel interpolation of a coarse grid."""
    rows, cols = shape
    short = min(rows, cols)
    n_r = max(2, round(cells * rows / short)) + 2
    n_c = max(2, round(cells * cols / short)) + 2
    coarse = rng.standard_normal((n_r, n_c)).astype(np.float32)
    field = _interp_matrix(rows, n_r) @ coarse @ _interp_matrix(cols, n_c).T
    return field / np.float32(max(float(field.std()), 1e-6))


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    t = (np.arange(n_out, dtype=np.float32) + 0.5) / n_out * (n_in - 2) + 0.5
    w = np.exp(-0.5 * ((t[:, None] - np.arange(n_in, dtype=np.float32)[None, :]) / 0.7) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _dome(lung: _Lung, a: np.ndarray) -> np.ndarray:
    """Height (v) of the hemidiaphragm under `lung` at lateral distance `a`."""
    return np.float32(lung.dome_v) + np.float32(lung.dome_curv / 0.09) * (a - lung.dome_a) ** 2


def _lung_field(fr: BodyFrame, lung: _Lung, med_hw: np.ndarray, edge: float) -> np.ndarray:
    a = fr.u * np.float32(lung.side)
    y = (fr.v - np.float32(lung.v_c)) / np.float32(lung.ay)
    x = (a - np.float32(lung.a_c)) / (np.float32(lung.ax) * (1 + np.float32(lung.taper) * y))
    inside = 1 - (x * x + y * y)
    return (
        _soft(inside * np.float32(0.25), edge)
        * _soft(_dome(lung, a) - fr.v, edge)
        * _soft(a - med_hw, edge)
    )


def _heart_field(fr: BodyFrame, heart: _Heart, edge: float) -> np.ndarray:
    du, dv = fr.u - np.float32(heart.u_c), fr.v - np.float32(heart.v_c)
    c, s = np.float32(np.cos(heart.tilt)), np.float32(np.sin(heart.tilt))
    x = (c * du + s * dv) / np.float32(heart.p)
    y = (-s * du + c * dv) / np.float32(heart.q)
    return _soft((1 - (x * x + y * y)) * np.float32(heart.p * 0.5), edge)


def anatomy(rng: np.random.Generator, fr: BodyFrame, th: Thorax) -> tuple[np.ndarray, np.ndarray]:
    """Density map (bright = dense) without pathology, and the soft lung-field map."""
    u, v = fr.u, fr.v
    shape = u.shape
    edge = float(rng.uniform(0.006, 0.018))
    # body: a rounded torso, narrowing to the neck above the shoulders
    torso = _soft(1 - (u / 1.02) ** 4 - ((v - 0.15) / 1.25) ** 4, 0.08)
    neck = _soft(0.2 - np.abs(u), 0.03) * _soft(-0.7 - v, 0.1)
    body = np.maximum(torso * _soft(v + 0.92 + 0.35 * u * u, 0.06), neck)
    # superior mediastinum (with an aortic knob on the patient's left)
    knob = np.float32(0.05) * np.exp(-(((v + 0.36) / 0.07) ** 2)) * (u > 0)
    med_hw = np.float32(th.mediastinum_hw) + knob
    heart = _heart_field(fr, th.heart, edge)
    lungs = np.maximum(*(_lung_field(fr, lung, med_hw, edge) for lung in th.lungs))
    lungs = lungs * (1 - heart)
    # the abdomen below the domes is as dense as the heart it merges with
    right, left = th.lungs
    dome = np.where(u < 0, _dome(right, -u), _dome(left, u))
    abdomen = _soft(v - dome, edge)
    mediastinum = np.maximum(_soft(med_hw - np.abs(u), edge) * _soft(0.45 - v, 0.05), heart)
    mediastinum = np.maximum(mediastinum, abdomen) * body

    soft_tissue = rng.uniform(0.42, 0.52)
    density = body * np.float32(soft_tissue) * (1 + 0.06 * _smooth_field(rng, shape, 3))
    density += mediastinum * np.float32(rng.uniform(0.05, 0.1))
    density -= lungs * np.float32(rng.uniform(0.24, 0.32))
    # vessel markings: ridges of a random field, densest at the hila
    ridge = np.exp(-((_smooth_field(rng, shape, 14) / 0.22) ** 2))
    hilum = np.exp(-((np.abs(u) - 0.16) ** 2 + (v + 0.05) ** 2) / 0.08)
    density += lungs * ridge * (0.015 + 0.06 * hilum) * np.float32(rng.uniform(0.6, 1.2))
    density += _ribs(rng, fr, th) * body
    density += _spine_and_clavicles(rng, fr) * body
    if rng.random() < 0.6:  # gastric air bubble under the left hemidiaphragm
        bubble = ((u - left.dome_a - 0.02) / 0.09) ** 2 + ((v - left.dome_v - 0.12) / 0.06) ** 2
        density -= _soft(1 - bubble, 0.3) * np.float32(rng.uniform(0.1, 0.25))
    return density, lungs


def _ribs(rng: np.random.Generator, fr: BodyFrame, th: Thorax) -> np.ndarray:
    """Posterior ribs (arched, brighter) and anterior ribs (faint, sloping medially)."""
    a = np.abs(fr.u)
    cage_w = 0.5 * th.width + 0.05
    cage = _soft(cage_w - a, 0.03) * _soft(fr.v + 0.85, 0.05) * _soft(0.62 - fr.v, 0.08)
    spacing = rng.uniform(0.115, 0.14)
    # posterior: rising a little from the spine, then arching down laterally
    post = fr.v - np.float32(rng.uniform(0.8, 1.2)) * (a - 0.24) ** 2
    post_phase = (post + 0.9) / np.float32(spacing)
    post_band = _band(post_phase, rng.uniform(0.32, 0.42)) * _soft(a - 0.05, 0.04)
    ant = fr.v + np.float32(rng.uniform(0.45, 0.65)) * a
    ant_band = _band((ant + 0.5) / np.float32(spacing * 1.15), 0.3) * _soft(a - 0.12, 0.05)
    strength = np.float32(rng.uniform(0.06, 0.11))
    return cage * strength * (post_band + 0.45 * ant_band)


def _band(phase: np.ndarray, duty: float) -> np.ndarray:
    """Periodic bands (period 1 in `phase`) with bright cortical edges."""
    frac = phase - np.floor(phase)
    inside = _soft(frac * (np.float32(duty) - frac), 0.004)
    edges = np.exp(-((frac / 0.05) ** 2)) + np.exp(-(((frac - np.float32(duty)) / 0.05) ** 2))
    return inside * (0.7 + 0.3 * edges)


def _spine_and_clavicles(rng: np.random.Generator, fr: BodyFrame) -> np.ndarray:
    u, v = fr.u, fr.v
    spine = _soft(0.065 - np.abs(u), 0.02)
    vertebrae = 0.75 + 0.25 * np.cos(np.float32(2 * np.pi / 0.1) * v)
    clav_v = -0.78 + np.float32(rng.uniform(-0.04, 0.04)) - 0.25 * (np.abs(u) - 0.1)
    clavicles = _soft(0.03 - np.abs(v - clav_v - 0.35 * (np.abs(u) - 0.35) ** 2), 0.015)
    clavicles *= _soft(np.abs(u) - 0.06, 0.03) * _soft(0.7 - np.abs(u), 0.05)
    return np.float32(rng.uniform(0.05, 0.1)) * spine * vertebrae + np.float32(0.1) * clavicles


def consolidations(
    rng: np.random.Generator, fr: BodyFrame, th: Thorax, lung_soft: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One to three patchy airspace opacities inside the lung fields: the added
    density and a core map, positive inside the ground-truth lesion."""
    shape = lung_soft.shape
    lung_mask = lung_soft > 0.5
    opacity = np.zeros(shape, dtype=np.float32)
    core = np.full(shape, -1.0, dtype=np.float32)
    n_foci = int(rng.choice([1, 2, 3], p=[0.65, 0.25, 0.1]))
    min_px = max(6, int(0.006 * lung_mask.sum()))
    placed = 0
    for _ in range(20 * n_foci):
        focus, focus_core = _one_focus(rng, fr, th, lung_mask)
        if np.count_nonzero((focus_core > 0) & lung_mask) < min_px:
            continue  # too small to see: draw another
        opacity = np.maximum(opacity, focus)
        core = np.maximum(core, focus_core)
        placed += 1
        if placed == n_foci:
            break
    if placed == 0:
        raise RuntimeError("could not place a consolidation inside the lung fields")
    # patchy texture with air bronchograms (dark branching lines) inside
    texture = 0.65 + 0.35 * np.tanh(_smooth_field(rng, shape, 36))
    bronchi = 1 - 0.4 * np.exp(-((_smooth_field(rng, shape, 20) / 0.12) ** 2))
    return opacity * texture * bronchi * lung_soft, core


def _one_focus(
    rng: np.random.Generator, fr: BodyFrame, th: Thorax, lung_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    lung = th.lungs[int(rng.integers(2))]
    zone = int(rng.integers(3))  # upper, middle or lower third of the lung
    y = (fr.v - np.float32(lung.v_c)) / np.float32(lung.ay)
    lo = -1 + 0.62 * zone
    in_zone = lung_mask & ((fr.u * lung.side) > 0) & (y >= lo) & (y < lo + 0.62)
    candidates = np.flatnonzero(in_zone if in_zone.any() else lung_mask)
    centre = int(candidates[rng.integers(candidates.size)])
    u0, v0 = fr.u.flat[centre], fr.v.flat[centre]
    rx = float(np.exp(rng.uniform(np.log(0.07), np.log(0.28))))
    ry = rx * rng.uniform(0.7, 1.5)
    phi = rng.uniform(0, np.pi)
    du, dv = fr.u - u0, fr.v - v0
    c, s = np.float32(np.cos(phi)), np.float32(np.sin(phi))
    d2 = ((c * du + s * dv) / np.float32(rx)) ** 2 + ((-s * du + c * dv) / np.float32(ry)) ** 2
    q = d2 * np.exp(0.4 * _smooth_field(rng, lung_mask.shape, 16))  # irregular border
    if rng.random() < 0.25:  # bounded by a fissure: a sharp straight edge
        q = np.where((fr.v - v0) * np.float32(rng.choice([-1, 1])) > rx * 0.3, np.float32(9), q)
    alpha = np.float32(rng.uniform(0.3, 1.0) * 0.28)
    return alpha * np.clip((1 - q) / 0.35, 0, 1), np.float32(0.85) - q


def expose(rng: np.random.Generator, density: np.ndarray) -> np.ndarray:
    """Detector response: window, gamma, quantum noise; float32 in [0, 1]."""
    lo, hi = rng.uniform(-0.05, 0.08), rng.uniform(0.6, 0.85)
    image = np.clip((density - np.float32(lo)) * np.float32(1 / (hi - lo)), 0, 1)
    image **= np.float32(rng.uniform(0.65, 1.5))
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image += noise * np.float32(rng.uniform(0.004, 0.03))
    return np.clip(image, 0, 1).astype(np.float32, copy=False)
