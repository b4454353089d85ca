"""The CT side of `aidx models drift-reference`: the inputs a reference is computed
from, as the DICOM series the service would receive: a folder of the site's own
series, or the recipe's held-out chest phantoms (ood_sets.chest_phantom: the recipe's
anatomy at its random acquisition spacing) written as axial CT series."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

from aidx.pipelines.ct import ood_sets, synthetic


def folder_inputs(folder: Path) -> tuple[Iterator[list[bytes]], str]:
    """Every series under `folder` (by SeriesInstanceUID)."""
    series = ood_sets.series_in(folder)
    inputs = ([p.read_bytes() for p in paths] for paths in series.values())
    return inputs, f"{len(series)} DICOM series in {folder}"


def phantom_series(split_seed: int, index: int) -> list[bytes]:
    with tempfile.TemporaryDirectory() as folder:
        phantom = ood_sets.chest_phantom(split_seed, index)
        return [p.read_bytes() for p in synthetic.write_series(phantom, Path(folder))]


def synthetic_inputs(recipe_seed: int, n: int) -> tuple[Iterator[list[bytes]], str]:
    """The recipe's first `n` held-out phantoms, and what they are (for the card)."""
    from aidx.pipelines.ct.train import split_seed

    seed = split_seed(recipe_seed, "heldout")
    dataset = (
        f"the recipe's held-out synthetic chest phantoms (aidx.pipelines.ct.ood_sets."
        f"chest_phantom, split seed {seed}, 0..{n - 1}), written as axial CT series"
    )
    return (phantom_series(seed, i) for i in range(n)), dataset
