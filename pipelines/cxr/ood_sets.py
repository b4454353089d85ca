"""The CXR side of `aidx models calibrate-ood`: chest radiographs as model tensors
(in distribution), and the out-of-distribution sets the gate is measured on.

In distribution: a folder of DICOM files, decoded exactly as served
(decode.decode_radiograph, preprocess.to_model_input), or the recipe's synthetic
phantoms written to DICOM and read back the same way (both photometric
interpretations, with and without a VOI window), from the model's own train
(fit), validation (threshold) and held-out (false-rejection rate) split seeds.

Out of distribution, built here from pydicom-data's real images (when installed) and
drawn: other body parts (the extremity CRs RG3_*), other modalities (CT and MR
slices), the real chest CRs RG1_* (real anatomy: unlike synthetic phantoms), blank
and noise images. Each real file gives several views (crop, flip, gamma), so a set
holds more images than files; the card says how many distinct images it has.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from aidx.inference.dicom_input import decode_pixels, read_image
from aidx.inference.errors import AidxError
from aidx.inference.ood import embed
from aidx.inference.ood_calibration import (
    InDistribution,
    OodSet,
    OodSources,
    split_indices,
)
from aidx.pipelines.cxr.decode import decode_radiograph, to_display
from aidx.pipelines.cxr.preprocess import to_model_input

VIEWS_PER_FILE = 6  # crop / flip / gamma variants of each real out-of-distribution file
DRAWN_IMAGES = 24  # blank and noise images per set
FILE_SPLITS = (0.6, 0.2, 0.2)  # fit, calibration, held-out of a folder of DICOM files
_REAL_SETS = {
    "other_body_part": ("RG3_*.dcm", "extremity CRs (pydicom-data RG3_*, 1 image, 4 codecs)"),
    "ct_slices": ("693_*.dcm", "CT slices (pydicom-data 693_*, 1 image, 4 codecs)"),
    "mr_slices": ("MR2_*.dcm", "MR slices (pydicom-data MR2_*, 1 image, 4 codecs)"),
    "real_chest_cr": ("RG1_*.dcm", "real PA chest CRs (pydicom-data RG1_*, 1 image, 4 codecs)"),
}


def embedding(image01: np.ndarray) -> np.ndarray:
    tensor, _ = to_model_input(image01)
    return embed(tensor)


def served_image(data: bytes) -> np.ndarray:
    """A chest radiograph as the service decodes it (refusals raise AidxError)."""
    return decode_radiograph(data).image01


def any_image(data: bytes) -> np.ndarray:
    """Any single-frame greyscale DICOM image through the display chain, without the
    chest radiograph checks (for the out-of-distribution sets)."""
    ds = read_image(data)
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ValueError("not greyscale")
    stored = decode_pixels(ds)
    return to_display(ds, stored[0] if stored.ndim == 3 else stored)


def _embed_files(paths: Sequence[Path], read: Callable[[bytes], np.ndarray]) -> np.ndarray:
    rows = []
    for path in paths:
        try:
            rows.append(embedding(read(path.read_bytes())))
        except (AidxError, ValueError, OSError) as exc:
            print(f"skipped {path.name}: {exc}")
    if not rows:
        raise ValueError("none of the files could be read as a chest radiograph")
    return np.stack(rows)


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def folder_in_distribution(folder: Path, seed: int = 0) -> InDistribution:
    """A folder of in-distribution DICOM files, split 60/20/20 by a seeded shuffle."""
    paths = dicom_files(folder)
    if len(paths) < 10:
        raise ValueError(f"{folder} holds {len(paths)} files; at least 10 are needed")
    embeddings = _embed_files(paths, served_image)
    fit, calibration, heldout = (
        embeddings[i] for i in split_indices(len(embeddings), FILE_SPLITS, seed)
    )
    return InDistribution(fit, calibration, heldout, f"{len(embeddings)} DICOM files in {folder}")


def _phantom_embedding(job: tuple[int, int, str]) -> np.ndarray:
    from aidx.pipelines.cxr import synthetic_dicom, train_data

    split_seed, index, folder = job
    path = Path(folder) / f"{split_seed}-{index}.dcm"
    photometric = "MONOCHROME1" if index % 2 else "MONOCHROME2"
    synthetic_dicom.write_dicom(
        train_data.draw_sample(split_seed, index),
        path,
        photometric=photometric,
        window=index % 3 != 2,
    )
    try:
        return embedding(served_image(path.read_bytes()))
    finally:
        path.unlink()


def phantom_embeddings(split_seed: int, n: int, workers: int = 1) -> np.ndarray:
    """Phantoms 0..n-1 of a split, written to DICOM and read back as served."""
    with tempfile.TemporaryDirectory() as folder:
        jobs = [(split_seed, i, folder) for i in range(n)]
        if workers <= 1:
            return np.stack([_phantom_embedding(job) for job in jobs])
        import multiprocessing

        from aidx.pipelines.cxr.train_data import worker_init  # one torch thread per worker

        with multiprocessing.get_context("spawn").Pool(workers, worker_init) as pool:
            return np.stack(pool.map(_phantom_embedding, jobs, chunksize=8))


def synthetic_in_distribution(recipe_seed: int, n: int, workers: int = 1) -> InDistribution:
    """The recipe's phantoms: n from the train split (fit), 0.6 n from the validation
    split (threshold), n from the held-out split (false-rejection rate)."""
    from aidx.pipelines.cxr.train_recipe import split_seed

    seeds = {split: split_seed(recipe_seed, split) for split in ("train", "val", "heldout")}
    return InDistribution(
        fit=phantom_embeddings(seeds["train"], n, workers),
        calibration=phantom_embeddings(seeds["val"], max(10, round(0.6 * n)), workers),
        heldout=phantom_embeddings(seeds["heldout"], n, workers),
        dataset=(
            f"synthetic phantoms of the recipe (aidx.pipelines.cxr.synthetic), written to "
            f"DICOM and read back as served; split seeds {seeds['train']} (fit), "
            f"{seeds['val']} (threshold), {seeds['heldout']} (held-out)"
        ),
    )


# --- out-of-distribution sets ------------------------------------------------------


def views_of(image01: np.ndarray, rng: np.random.Generator, n: int) -> Iterable[np.ndarray]:
    """`n` variants of an image: a random crop (60-100% of each side), a horizontal
    flip half of the time, a gamma in [0.7, 1.4]; the first is the image itself."""
    yield image01
    rows, cols = image01.shape
    for _ in range(n - 1):
        h, w = (max(64, int(side * rng.uniform(0.6, 1.0))) for side in (rows, cols))
        r0, c0 = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
        view = image01[r0 : r0 + h, c0 : c0 + w]
        view = view[:, ::-1] if rng.random() < 0.5 else view
        yield np.clip(view, 0.0, 1.0) ** rng.uniform(0.7, 1.4)


def blank_images(rng: np.random.Generator, n: int = DRAWN_IMAGES) -> Iterable[np.ndarray]:
    """Flat grey images at levels across the range, some with faint noise."""
    for i in range(n):
        image = np.full((512, 512), i / max(n - 1, 1), np.float32)
        if i % 2:
            image = np.clip(image + rng.normal(0, 0.002, image.shape), 0, 1)
        yield image.astype(np.float32)


def noise_images(rng: np.random.Generator, n: int = DRAWN_IMAGES) -> Iterable[np.ndarray]:
    """Uniform, Gaussian and smoothed (blob) noise at several sizes."""
    from scipy import ndimage

    for i in range(n):
        side = int(rng.integers(256, 1025))
        kind = i % 3
        if kind == 0:
            image = rng.random((side, side))
        elif kind == 1:
            image = np.clip(rng.normal(0.5, 0.2, (side, side)), 0, 1)
        else:
            blobs = ndimage.gaussian_filter(rng.random((side, side)), side / rng.uniform(8, 64))
            image = (blobs - blobs.min()) / max(float(np.ptp(blobs)), 1e-6)
        yield image.astype(np.float32)


def _real_set(pattern: str, source: str, rng: np.random.Generator) -> OodSet | None:
    try:
        from pydicom.data import get_testdata_files
    except ImportError:
        return None
    paths = sorted(Path(p) for p in get_testdata_files(pattern))
    if not paths:
        return None
    images = [any_image(p.read_bytes()) for p in paths]
    rows = [embedding(v) for image in images for v in views_of(image, rng, VIEWS_PER_FILE)]
    return OodSet(f"{source} x {VIEWS_PER_FILE} views", np.stack(rows))


def builtin_ood_sets(seed: int = 0) -> dict[str, OodSet]:
    """The sets the card reports (the pydicom-data ones only when it is installed)."""
    rng = np.random.default_rng(seed)
    sets = {}
    for name, (pattern, source) in _REAL_SETS.items():
        found = _real_set(pattern, source, rng)
        if found is not None:
            sets[name] = found
    sets["blank"] = OodSet(
        "flat grey images, levels 0..1, half with faint noise",
        np.stack([embedding(i) for i in blank_images(rng)]),
    )
    sets["noise"] = OodSet(
        "uniform, Gaussian and smoothed noise, 256-1024 px",
        np.stack([embedding(i) for i in noise_images(rng)]),
    )
    return sets


def folder_ood_set(name: str, folder: Path) -> OodSet:
    """A site's own out-of-distribution set: every readable DICOM image in `folder`."""
    paths = dicom_files(folder)
    return OodSet(f"{name}: {len(paths)} DICOM files in {folder}", _embed_files(paths, any_image))


SOURCES = OodSources(
    folder_in_distribution, synthetic_in_distribution, builtin_ood_sets, folder_ood_set, "phantoms"
)
calibration_for = SOURCES.calibrate
