"""The CT side of `aidx models calibrate-ood`: chest CT volumes as the model's input
(the lung-windowed grid of preprocess.to_model_grid, in distribution), and the
out-of-distribution sets the gate is measured on.

In distribution: a folder of DICOM CT series (grouped by SeriesInstanceUID,
assembled as served), or the recipe's synthetic chest phantoms (synthetic.generate)
from its train (fit), validation (threshold) and held-out (false-rejection rate)
split seeds. The sliding-window model does not care how much of the body a series
covers, so these phantoms are drawn over the fields of view a chest CT has (220-400
mm head to foot, 360-460 x 270-360 mm across) rather than the recipe's one extent.

Out of distribution, drawn: a head (skull ring, brain, no lungs), an abdomen (organs,
bowel gas, no lungs), a chest at MR-like intensities, a chest stored without its
rescale intercept (+1024), noise, constant volumes; and from pydicom-data's real
slices (when installed), each repeated into a short series: head CTs, an abdominal
CT, MR slices.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from aidx.inference.errors import AidxError
from aidx.inference.ood import embed
from aidx.inference.ood_calibration import (
    InDistribution,
    OodSet,
    OodSources,
    split_embeddings,
)
from aidx.pipelines.ct import synthetic
from aidx.pipelines.ct.preprocess import to_model_grid
from aidx.pipelines.ct.series import assemble

SPACING_MM = 3.0  # the model grid's (models/ct_pneumonia/config.pbtxt spacing_mm)
DRAWN_VOLUMES = 12  # per drawn set
SLICE_COUNTS = (8, 16, 32)  # a real slice repeated into series of these lengths
_EXTENT_MM = ((220.0, 400.0), (270.0, 360.0), (360.0, 460.0))  # z, y, x ranges
_REAL_SETS = {
    "real_head_ct": (
        ("693_*.dcm", "J2K_pixelrep_mismatch.dcm"),
        "head CT slices (pydicom-data 693_* in 4 codecs, J2K_pixelrep_mismatch)",
    ),
    "real_abdomen_ct": (("explicit_VR-UN.dcm",), "an abdominal CT slice (pydicom-data)"),
    "real_mr": (("MR2_*.dcm", "MR_small.dcm"), "MR slices (pydicom-data MR2_*, MR_small)"),
}


def volume_embedding(hu_kji: np.ndarray, affine_lps: np.ndarray) -> np.ndarray:
    """A volume in HU [k, j, i] with its LPS affine, embedded as the model sees it."""
    return embed(to_model_grid(hu_kji.astype(np.float32), affine_lps, SPACING_MM).image)


def _shape(extent_mm: Iterable[float], spacing_kji: Iterable[float]) -> tuple[int, int, int]:
    k, j, i = (max(1, int(round(e / s))) for e, s in zip(extent_mm, spacing_kji, strict=True))
    return k, j, i


def chest_phantom(split_seed: int, index: int) -> synthetic.Phantom:
    """Phantom `index` of a split: the recipe's anatomy at a random acquisition spacing
    (as the recipe draws it) over a random chest field of view."""
    rng = np.random.default_rng([split_seed, index, 17])
    in_plane, step = float(rng.uniform(2.4, 3.6)), float(rng.uniform(2.5, 5.0))
    extent = [rng.uniform(lo, hi) for lo, hi in _EXTENT_MM]
    shape = _shape(extent, (step, in_plane, in_plane))
    return synthetic.generate(rng, shape_kji=shape, spacing_mm=(in_plane, in_plane, step))


def _phantom_embedding(job: tuple[int, int]) -> np.ndarray:
    phantom = chest_phantom(*job)
    return volume_embedding(phantom.hu, phantom.affine_lps)


def phantom_embeddings(split_seed: int, n: int, workers: int = 1) -> np.ndarray:
    jobs = [(split_seed, i) for i in range(n)]
    if workers <= 1:
        return np.stack([_phantom_embedding(job) for job in jobs])
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return np.stack(pool.map(_phantom_embedding, jobs, chunksize=4))


def synthetic_in_distribution(recipe_seed: int, n: int, workers: int = 1) -> InDistribution:
    """n phantoms of the train split (fit), 0.6 n of the validation split (threshold),
    n of the held-out split (false-rejection rate)."""
    from aidx.pipelines.ct.train import split_seed

    seeds = {s: split_seed(recipe_seed, s) for s in ("train", "validation", "heldout")}
    return InDistribution(
        fit=phantom_embeddings(seeds["train"], n, workers),
        calibration=phantom_embeddings(seeds["validation"], max(10, round(0.6 * n)), workers),
        heldout=phantom_embeddings(seeds["heldout"], n, workers),
        dataset=(
            "synthetic chest-CT phantoms of the recipe (aidx.pipelines.ct.synthetic) over "
            "chest fields of view (aidx.pipelines.ct.ood_sets.chest_phantom); split seeds "
            f"{seeds['train']} (fit), {seeds['validation']} (threshold), "
            f"{seeds['heldout']} (held-out)"
        ),
        unit="volumes",
    )


def series_in(folder: Path) -> dict[str, list[Path]]:
    """The DICOM files under `folder`, by SeriesInstanceUID (unreadable files skipped)."""
    series: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name[0] != "."):
        try:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
        except (pydicom.errors.InvalidDicomError, AttributeError, OSError):
            continue
        series.setdefault(uid, []).append(path)
    return series


def _series_embeddings(folder: Path) -> np.ndarray:
    """Each series under `folder` assembled as served, bar the body-part check (an
    out-of-distribution set may well name another part)."""
    rows = []
    for uid, paths in series_in(folder).items():
        datasets = [pydicom.dcmread(p) for p in paths]
        for ds in datasets:
            if "BodyPartExamined" in ds:
                del ds.BodyPartExamined
        try:
            volume = assemble(datasets)
        except AidxError as exc:
            print(f"skipped series {uid}: {exc}")
            continue
        rows.append(volume_embedding(volume.hu, volume.affine_lps))
    return np.stack(rows) if rows else np.empty((0, 0))


def folder_in_distribution(folder: Path, seed: int = 0) -> InDistribution:
    """A folder of in-distribution CT series, split 60/20/20 by a seeded shuffle."""
    embeddings = _series_embeddings(folder)
    if len(embeddings) < 10:
        raise ValueError(f"{folder} holds {len(embeddings)} CT series; at least 10 are needed")
    return split_embeddings(
        embeddings, f"{len(embeddings)} CT series in {folder}", seed, unit="volumes"
    )


# --- out-of-distribution sets ------------------------------------------------------


def _frame(rng: np.random.Generator, extent_mm: tuple[float, float, float]):  # type: ignore[no-untyped-def]
    """A random acquisition grid over `extent_mm` (z, y, x): shape, affine and the
    voxel centres' x, y, z in mm (broadcastable)."""
    in_plane, step = float(rng.uniform(2.5, 4.0)), float(rng.uniform(2.5, 5.0))
    shape = _shape(extent_mm, (step, in_plane, in_plane))
    affine = synthetic.grid(shape, (in_plane, in_plane, step))
    k, j, i = (np.arange(n, dtype=np.float32) for n in shape)
    x = (affine[0, 3] + affine[0, 0] * i)[None, None, :]
    y = (affine[1, 3] + affine[1, 1] * j)[None, :, None]
    z = (affine[2, 3] + affine[2, 2] * k)[:, None, None]
    return shape, affine, x, y, z


def _noisy(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return hu + rng.normal(0.0, rng.uniform(5.0, 25.0), hu.shape).astype(np.float32)


def head_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A head: a skull ring (bone) round the brain, ventricles, air outside."""
    shape, affine, x, y, z = _frame(rng, (rng.uniform(150, 240), 260.0, 260.0))
    a, b, c = rng.uniform(68, 80), rng.uniform(88, 102), rng.uniform(80, 95)
    r = (x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2
    hu = np.full(shape, -1000.0, np.float32)
    hu[r <= 1.0] = rng.uniform(700, 1400)  # skull
    hu[r <= rng.uniform(0.78, 0.86)] = rng.uniform(28, 45)  # brain
    ventricles = (np.abs(x) - 12) ** 2 / 64 + y**2 / 900 + z**2 / 400 <= 1
    hu[ventricles & (r < 0.5)] = rng.uniform(2, 15)
    return _noisy(hu, rng), affine


def abdomen_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An abdomen: the chest phantom's body and spine, liver, kidneys and bowel gas,
    no lungs."""
    shape, affine, x, y, z = _frame(rng, (rng.uniform(200, 380), 300.0, 400.0))
    body = (x / 170.0) ** 2 + ((y - 10.0) / 115.0) ** 2 + 0 * z
    hu = np.full(shape, -1000.0, np.float32)
    hu[body <= 1.0] = synthetic.FAT_HU
    hu[body <= 0.85] = synthetic.TISSUE_HU
    hu[((x + 70) / 80) ** 2 + ((y + 5) / 70) ** 2 + 0 * z <= 1] = rng.uniform(50, 70)  # liver
    for side in (-1, 1):
        hu[((x - side * 65) / 28) ** 2 + ((y - 60) / 35) ** 2 + (z / 55) ** 2 <= 1] = 35.0
    hu[(x / 20.0) ** 2 + ((y - 85.0) / 20.0) ** 2 + 0 * z <= 1] = synthetic.BONE_HU * 0.7
    for _ in range(int(rng.integers(6, 16))):  # bowel gas
        cx, cy, cz = rng.uniform(-80, 110), rng.uniform(-70, 40), rng.uniform(-100, 100)
        rad = rng.uniform(8, 22)
        hu[((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) <= rad**2] = -1000.0
    return _noisy(hu, rng), affine


def mr_like_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A chest phantom at MR-like intensities (air ~0, fat bright, no HU scale)."""
    phantom = chest_phantom(int(rng.integers(1 << 30)), 0)
    points = [-1000, -850, -100, 40, 600]
    levels = [0, rng.uniform(20, 80), rng.uniform(900, 1400), rng.uniform(350, 650), 150]
    return np.interp(phantom.hu, points, levels).astype(np.float32), phantom.affine_lps


def unrescaled_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A chest phantom as stored values read without RescaleIntercept (-1024)."""
    phantom = chest_phantom(int(rng.integers(1 << 30)), 0)
    return phantom.hu + 1024.0, phantom.affine_lps


def noise_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform, Gaussian or smoothed (blob) noise over -1000..1000 HU."""
    from scipy import ndimage

    shape, affine, *_ = _frame(rng, tuple(rng.uniform(150, 400, 3)))  # type: ignore[arg-type]
    kind = int(rng.integers(3))
    if kind == 0:
        hu = rng.uniform(-1000, 1000, shape)
    elif kind == 1:
        hu = rng.normal(rng.uniform(-600, 200), rng.uniform(100, 500), shape)
    else:
        blobs = ndimage.gaussian_filter(rng.random(shape), rng.uniform(2, 8))
        hu = (blobs - blobs.min()) / max(float(np.ptp(blobs)), 1e-6) * 2000 - 1000
    return hu.astype(np.float32), affine


def blank_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One value everywhere (air, water, anything in between), some with faint noise."""
    shape, affine, *_ = _frame(rng, tuple(rng.uniform(150, 400, 3)))  # type: ignore[arg-type]
    hu = np.full(shape, rng.uniform(-1000, 1000), np.float32)
    if rng.random() < 0.5:
        hu += rng.normal(0, 2.0, shape).astype(np.float32)
    return hu, affine


_DRAWN: dict[str, tuple[Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]], str]] = {
    "head": (head_volume, "drawn heads: skull ring, brain, ventricles, no lungs"),
    "abdomen": (abdomen_volume, "drawn abdomens: liver, kidneys, spine, bowel gas, no lungs"),
    "mr_like": (mr_like_volume, "chest phantoms at MR-like intensities (no HU scale)"),
    "unrescaled": (unrescaled_volume, "chest phantoms without RescaleIntercept (+1024)"),
    "noise": (noise_volume, "uniform, Gaussian and smoothed noise, -1000..1000 HU"),
    "blank": (blank_volume, "constant volumes, -1000..1000 HU, half with faint noise"),
}


def slice_series(path: Path, n_slices: int) -> tuple[np.ndarray, np.ndarray]:
    """One real slice repeated into an axial series of `n_slices` (HU, LPS affine)."""
    ds = pydicom.dcmread(path)
    hu = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)
    row_mm, col_mm = (float(v) for v in ds.get("PixelSpacing", [1.0, 1.0]))
    step = float(ds.get("SliceThickness") or 5.0)
    volume = np.repeat(hu[None], n_slices, axis=0)
    return volume, synthetic.grid(volume.shape, (col_mm, row_mm, step))


def _real_volumes(patterns: Iterable[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    from pydicom.data import get_testdata_files

    for pattern in patterns:
        for name in sorted(get_testdata_files(pattern)):
            for n in SLICE_COUNTS:
                yield slice_series(Path(name), n)


def builtin_ood_sets(seed: int = 0) -> dict[str, OodSet]:
    """The sets the card reports (the pydicom-data ones only when it is installed)."""
    rng = np.random.default_rng([seed, 23])
    sets = {}
    for name, (draw, source) in _DRAWN.items():
        rows = [volume_embedding(*draw(rng)) for _ in range(DRAWN_VOLUMES)]
        sets[name] = OodSet(source, np.stack(rows))
    try:
        import pydicom.data  # noqa: F401
    except ImportError:
        return sets
    for name, (patterns, source) in _REAL_SETS.items():
        rows = [volume_embedding(*v) for v in _real_volumes(patterns)]
        if rows:
            counts = "/".join(map(str, SLICE_COUNTS))
            sets[name] = OodSet(f"{source}, each as {counts}-slice series", np.stack(rows))
    return sets


def folder_ood_set(name: str, folder: Path) -> OodSet:
    """A site's own out-of-distribution set: every CT series under `folder`."""
    found = _series_embeddings(folder)
    if not len(found):
        raise ValueError(f"{folder} holds no CT series that can be assembled")
    return OodSet(f"{name}: {len(found)} CT series in {folder}", found)


SOURCES = OodSources(
    folder_in_distribution, synthetic_in_distribution, builtin_ood_sets, folder_ood_set, "phantoms"
)
calibration_for = SOURCES.calibrate
