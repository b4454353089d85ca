"""The CXR side of `aidx models drift-reference`: the inputs a reference is computed
from, as DICOM bytes the service would receive: a folder of the site's own radiographs,
or the recipe's held-out phantoms written to DICOM (both photometric interpretations,
with and without a VOI window, as ood_sets.py writes them)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

from aidx.pipelines.cxr.ood_sets import dicom_files


def folder_inputs(folder: Path) -> tuple[Iterator[bytes], str]:
    """Every file in `folder` (those that are not chest radiographs are skipped)."""
    paths = dicom_files(folder)
    return (p.read_bytes() for p in paths), f"{len(paths)} DICOM files in {folder}"


def phantom_bytes(split_seed: int, index: int) -> bytes:
    from aidx.pipelines.cxr import synthetic_dicom, train_data

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "phantom.dcm"
        synthetic_dicom.write_dicom(
            train_data.draw_sample(split_seed, index),
            path,
            photometric="MONOCHROME1" if index % 2 else "MONOCHROME2",
            window=index % 3 != 2,
        )
        return path.read_bytes()


def synthetic_inputs(recipe_seed: int, n: int) -> tuple[Iterator[bytes], str]:
    """The recipe's first `n` held-out phantoms, and what they are (for the card)."""
    from aidx.pipelines.cxr.train_recipe import split_seed

    seed = split_seed(recipe_seed, "heldout")
    dataset = (
        f"the recipe's held-out synthetic phantoms (aidx.pipelines.cxr.synthetic, split "
        f"seed {seed}, 0..{n - 1}), written to DICOM"
    )
    return (phantom_bytes(seed, i) for i in range(n)), dataset
