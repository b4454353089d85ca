"""The WSI side of `aidx models drift-reference`: the slides a reference is computed
from, as the job runner gives them to the pipeline: a folder of the site's own slides,
or small synthetic slides (phantom.py, 1536 x 1536 px at 0.5 um/px, each with its own
layout and the recipe's per-slide stain variation), written one at a time to a
temporary folder and removed once analysed."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

from aidx.pipelines.wsi.analysis import AnalysisParams
from aidx.pipelines.wsi.pipeline import SlideInput

SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".dcm"}
SYNTHETIC_PX = 1536
SYNTHETIC_MPP = 0.5


def folder_inputs(folder: Path) -> tuple[Iterator[SlideInput], str]:
    """Every slide file in `folder` (those OpenSlide cannot read are skipped)."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SLIDE_SUFFIXES)
    inputs = (SlideInput(p, None, AnalysisParams()) for p in paths)
    return inputs, f"{len(paths)} slides in {folder}"


def synthetic_slide(folder: Path, seed: int) -> Path:
    from aidx.pipelines.wsi.phantom import make_layout, write_slide

    layout = make_layout(
        seed, SYNTHETIC_PX, SYNTHETIC_PX, mpp=SYNTHETIC_MPP,
        n_suspicious=seed % 2, n_lymphoid=0,
    )  # fmt: skip
    return write_slide(folder / f"slide_{seed}.svs", layout)


def _synthetic(first_seed: int, n: int) -> Iterator[SlideInput]:
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(first_seed, first_seed + n):
            path = synthetic_slide(Path(tmp), seed)
            yield SlideInput(path, None, AnalysisParams())
            path.unlink()


def synthetic_inputs(recipe_seed: int, n: int) -> tuple[Iterator[SlideInput], str]:
    """`n` synthetic slides (layout seeds from the recipe's held-out split seed on),
    and what they are (for the card)."""
    from aidx.pipelines.wsi.train import split_seed

    first = split_seed(recipe_seed, "heldout")
    dataset = (
        f"{n} synthetic slides (aidx.pipelines.wsi.phantom, {SYNTHETIC_PX} x {SYNTHETIC_PX} "
        f"px at {SYNTHETIC_MPP} um/px, layout seeds {first}..{first + n - 1}, each with "
        "its own random stain strength)"
    )
    return _synthetic(first, n), dataset
