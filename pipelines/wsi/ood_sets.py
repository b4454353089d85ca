"""The WSI side of `aidx models calibrate-ood`: tiles as the tile model takes them
(uint8 RGB 256 x 256 at 0.5 um/px; the gate sees them as 3 x 256 x 256 in 0..1),
in distribution, and the out-of-distribution sets the gate is measured on.

In distribution: the tissue tiles of a folder of slides (OpenSlide-readable, read as
served: the tile plan, the tissue mask, the same reader), or the recipe's synthetic
tiles (train.draw_tile: two kinds of tissue or tissue and glass split by a line,
JPEG-compressed) from its train (fit), validation (threshold) and held-out
(false-rejection rate) split seeds.

Out of distribution: blank glass; noise; the recipe's tissue re-stained as IHC
(haematoxylin and DAB brown) and as dark-field fluorescence; marker ink over tissue
and glass; scikit-image's bundled photographs and textures (natural images) and its
real IHC image (immunohistochemistry: DAB).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path

import imagecodecs
import numpy as np

from aidx.inference.ood import embed
from aidx.inference.ood_calibration import (
    InDistribution,
    OodSet,
    OodSources,
    split_embeddings,
)
from aidx.pipelines.wsi.gate import tile_tensor
from aidx.pipelines.wsi.model import TILE_MPP, TILE_PX

DRAWN_TILES = 48  # per drawn set
TILES_PER_SLIDE = 64  # at most, spread over each slide of a dataset folder
MIN_TISSUE_FRACTION = 0.25  # as the analysis (AnalysisParams.min_tissue_fraction)
# stain optical-density vectors (Ruifrok & Johnston): haematoxylin, eosin, DAB
_H = np.array([0.65, 0.70, 0.29])
_E = np.array([0.07, 0.99, 0.11])
_DAB = np.array([0.27, 0.57, 0.78])


def tile_embedding(tile: np.ndarray) -> np.ndarray:
    return embed(tile_tensor(tile))


def _recipe_embedding(job: tuple[int, int]) -> np.ndarray:
    from aidx.pipelines.wsi.train import draw_tile

    return tile_embedding(draw_tile(*job)[0])


def recipe_embeddings(split_seed: int, n: int, workers: int = 1) -> np.ndarray:
    jobs = [(split_seed, i) for i in range(n)]
    if workers <= 1:
        return np.stack([_recipe_embedding(job) for job in jobs])
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return np.stack(pool.map(_recipe_embedding, jobs, chunksize=32))


def synthetic_in_distribution(recipe_seed: int, n: int, workers: int = 1) -> InDistribution:
    """n tiles of the train split (fit), 0.6 n of the validation split (threshold), n
    of the held-out split (false-rejection rate)."""
    from aidx.pipelines.wsi.train import split_seed

    seeds = {split: split_seed(recipe_seed, split) for split in ("train", "val", "heldout")}
    return InDistribution(
        fit=recipe_embeddings(seeds["train"], n, workers),
        calibration=recipe_embeddings(seeds["val"], max(10, round(0.6 * n)), workers),
        heldout=recipe_embeddings(seeds["heldout"], n, workers),
        dataset=(
            "synthetic H&E tiles of the recipe (aidx.pipelines.wsi.train.draw_tile); split "
            f"seeds {seeds['train']} (fit), {seeds['val']} (threshold), "
            f"{seeds['heldout']} (held-out)"
        ),
        unit="tiles",
    )


def slide_tiles(path: Path, limit: int = TILES_PER_SLIDE) -> np.ndarray:
    """Up to `limit` tissue tiles of a slide, spread over it, read as served."""
    from aidx.pipelines.wsi.slide import SlideReader, describe
    from aidx.pipelines.wsi.tiling import plan_tiles, tissue_fractions, tissue_tiles
    from aidx.pipelines.wsi.tissue import read_low_res

    info = describe(path)
    plan = plan_tiles(info, TILE_MPP, TILE_PX)
    reader = SlideReader(info)
    try:
        low = read_low_res(reader, plan.stride_px / 4)
        cells = list(tissue_tiles(tissue_fractions(plan, low), MIN_TISSUE_FRACTION))
        if not cells:
            return np.empty((0, TILE_PX, TILE_PX, 3), np.uint8)
        spread = np.linspace(0, len(cells) - 1, min(limit, len(cells))).astype(int)
        origins = [plan.origin(*cells[i]) for i in spread]
        return reader.read_tiles(origins, plan.level, plan.read_px, plan.tile_px)
    finally:
        reader.close()


def _folder_embeddings(folder: Path) -> np.ndarray:
    from aidx.inference.errors import AidxError

    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name[0] != "."):
        try:
            rows += [tile_embedding(tile) for tile in slide_tiles(path)]
        except AidxError as exc:
            print(f"skipped {path.name}: {exc}")
    return np.stack(rows) if rows else np.empty((0, 0))


def folder_in_distribution(folder: Path, seed: int = 0) -> InDistribution:
    """The tissue tiles of a folder of slides, split 60/20/20 by a seeded shuffle."""
    embeddings = _folder_embeddings(folder)
    if len(embeddings) < 10:
        raise ValueError(f"{folder} holds {len(embeddings)} tissue tiles; at least 10 are needed")
    return split_embeddings(
        embeddings, f"{len(embeddings)} tissue tiles of the slides in {folder}", seed, "tiles"
    )


# --- out-of-distribution sets ------------------------------------------------------


def _jpeg(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    tile = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    encoded = imagecodecs.jpeg_encode(tile, level=int(rng.integers(70, 92)))
    return np.asarray(imagecodecs.jpeg_decode(encoded))


def _he_tile(rng: np.random.Generator) -> np.ndarray:
    from aidx.pipelines.wsi.train import draw_tile

    return draw_tile(int(rng.integers(1 << 30)), 0)[0]


def _concentrations(tile: np.ndarray) -> np.ndarray:
    """Haematoxylin and eosin amounts per pixel (colour deconvolution) [H, W, 2]."""
    od = -np.log(np.maximum(tile.astype(np.float64), 1.0) / 255.0)
    stains = np.stack([_H / np.linalg.norm(_H), _E / np.linalg.norm(_E)])
    return np.clip(od @ np.linalg.pinv(stains), 0, None)


def blank_glass(rng: np.random.Generator) -> np.ndarray:
    """Bare glass: near white, a faint tint, a little noise and dust."""
    level = rng.uniform(225, 252) + rng.uniform(-4, 4, 3)
    tile = np.broadcast_to(level, (TILE_PX, TILE_PX, 3)) + rng.normal(0, 1.5, (TILE_PX, TILE_PX, 3))
    return _jpeg(tile, rng)


def noise(rng: np.random.Generator) -> np.ndarray:
    """Uniform, Gaussian or smoothed colour noise."""
    from scipy import ndimage

    shape = (TILE_PX, TILE_PX, 3)
    kind = int(rng.integers(3))
    if kind == 0:
        tile = rng.uniform(0, 255, shape)
    elif kind == 1:
        tile = rng.normal(rng.uniform(60, 200), rng.uniform(20, 70), shape)
    else:
        blobs = ndimage.gaussian_filter(rng.random(shape), (rng.uniform(2, 16),) * 2 + (0,))
        tile = (blobs - blobs.min()) / max(float(np.ptp(blobs)), 1e-6) * 255
    return _jpeg(tile, rng)


def ihc_dab(rng: np.random.Generator) -> np.ndarray:
    """The recipe's tissue re-stained: haematoxylin counterstain and DAB brown where
    the eosin was (and on some nuclei)."""
    amount = _concentrations(_he_tile(rng))
    h, dab = amount[..., 0] * rng.uniform(0.4, 0.8), amount[..., 1] * rng.uniform(0.8, 2.0)
    dab = dab + amount[..., 0] * (rng.random() < 0.5) * rng.uniform(0.5, 1.0)
    od = h[..., None] * _H / np.linalg.norm(_H) + dab[..., None] * _DAB / np.linalg.norm(_DAB)
    return _jpeg(255.0 * np.exp(-od), rng)


def fluorescence(rng: np.random.Generator) -> np.ndarray:
    """Dark-field fluorescence: nuclei bright blue (DAPI), stroma dim green, black glass."""
    amount = _concentrations(_he_tile(rng))
    gain = rng.uniform(120, 260)
    rgb = (
        np.stack([0.1 * amount[..., 1], 0.6 * amount[..., 1], amount[..., 0] * 1.5], axis=-1) * gain
    )
    return _jpeg(rgb + rng.uniform(0, 12), rng)


def pen_ink(rng: np.random.Generator) -> np.ndarray:
    """Marker ink (blue, green, black) over most of a tile of tissue or glass."""
    from aidx.pipelines.wsi.phantom import INK_RGB, Blob, InkMark, apply_ink

    base = _he_tile(rng) if rng.random() < 0.6 else blank_glass(rng)
    colour = list(INK_RGB)[int(rng.integers(len(INK_RGB)))]
    x, y, rx, ry = rng.uniform(60, 196, 2).tolist() + rng.uniform(180, 320, 2).tolist()
    blob = Blob(x, y, rx, ry)
    return apply_ink(base, 0, 0, [InkMark(colour, blob)])


def _crops(images: list[np.ndarray], rng: np.random.Generator, n: int) -> Iterator[np.ndarray]:
    """n random 256 x 256 crops of the images (each at a random scale), in turn."""
    from skimage.transform import rescale

    scaled = []
    for image in images:
        image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
        scale = max(rng.uniform(0.5, 1.2), (TILE_PX + 1) / min(image.shape[:2]))
        scaled.append(rescale(image, scale, channel_axis=2, anti_aliasing=True) * 255)
    for i in range(n):
        image = scaled[i % len(scaled)].astype(np.uint8)
        r = int(rng.integers(0, image.shape[0] - TILE_PX + 1))
        c = int(rng.integers(0, image.shape[1] - TILE_PX + 1))
        yield _jpeg(image[r : r + TILE_PX, c : c + TILE_PX], rng)


_NATURAL = ("astronaut", "coffee", "chelsea", "rocket", "retina", "hubble_deep_field",
            "brick", "grass", "gravel")  # fmt: skip


def _skimage(names: tuple[str, ...]) -> list[np.ndarray]:
    import skimage.data

    return [np.asarray(getattr(skimage.data, name)()) for name in names]


_DRAWN: dict[str, tuple[Callable[[np.random.Generator], np.ndarray], str]] = {
    "blank_glass": (
        blank_glass,
        "bare glass, near white, faint tint and noise (in serving such a tile never reaches "
        "the gate: under 25% tissue it is not a tissue tile, and a slide of it is no_tissue)",
    ),
    "noise": (noise, "uniform, Gaussian and smoothed colour noise"),
    "ihc_dab": (ihc_dab, "the recipe's tissue re-stained: haematoxylin and DAB brown"),
    "fluorescence": (fluorescence, "the recipe's tissue as dark-field fluorescence"),
    "pen_ink": (pen_ink, "blue, green or black marker ink over tissue or glass"),
}


def builtin_ood_sets(seed: int = 0) -> dict[str, OodSet]:
    """The sets the card reports."""
    rng = np.random.default_rng([seed, 29])
    sets = {
        name: OodSet(source, np.stack([tile_embedding(draw(rng)) for _ in range(DRAWN_TILES)]))
        for name, (draw, source) in _DRAWN.items()
    }
    natural = [tile_embedding(t) for t in _crops(_skimage(_NATURAL), rng, DRAWN_TILES)]
    sets["natural_images"] = OodSet(
        f"crops of scikit-image's photographs and textures ({', '.join(_NATURAL)})",
        np.stack(natural),
    )
    real_ihc = [tile_embedding(t) for t in _crops(_skimage(("immunohistochemistry",)), rng, 24)]
    sets["real_ihc"] = OodSet(
        "crops of a real IHC (DAB) slide image (scikit-image immunohistochemistry)",
        np.stack(real_ihc),
    )
    return sets


def folder_ood_set(name: str, folder: Path) -> OodSet:
    """A site's own out-of-distribution set: the tissue tiles of the slides in `folder`."""
    found = _folder_embeddings(folder)
    if not len(found):
        raise ValueError(f"{folder} holds no slide with tissue tiles")
    return OodSet(f"{name}: {len(found)} tissue tiles of the slides in {folder}", found)


SOURCES = OodSources(
    folder_in_distribution, synthetic_in_distribution, builtin_ood_sets, folder_ood_set, "tiles"
)
calibration_for = SOURCES.calibrate
