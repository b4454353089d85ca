"""`aidx models calibrate-ood ct_pneumonia` on a small folder of CT series: it fits
the gate, writes the reference beside the weights and the card's `ood:` section, and
leaves the weights and metrics as they were."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from aidx.inference.ood_calibration import FILE_SPLITS, split_indices
from aidx.pipelines.ct import synthetic
from tests.pipelines.ood_cli import assert_calibrated, calibrate, uncalibrated_copy


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 small chest series: one phantom under fresh noise, one folder each. With 4
    held-out series, whether one of them outscores all 4 calibration series is a coin
    flip of ranks; the command's split is known (seed 0), so its held-out series are
    made the quieter scans, and the test is about the command, not that coin."""
    root = tmp_path_factory.mktemp("ct_dataset")
    rng = np.random.default_rng(0)
    base = synthetic.generate(rng, shape_kji=(12, 40, 50), spacing_mm=(8.0, 8.0, 25.0))
    heldout = set(split_indices(20, FILE_SPLITS, seed=0)[2].tolist())
    for i in range(20):
        noise_hu = 5 if i in heldout else 15
        noisy = synthetic.Phantom(
            hu=base.hu + rng.normal(0, noise_hu, base.hu.shape).astype(np.float32),
            lesions=base.lesions, lung=base.lung, affine_lps=base.affine_lps, truth=[],
        )  # fmt: skip
        synthetic.write_series(noisy, root / f"s{i:02d}")
    return root


def test_calibrate_ood_writes_the_ct_gate(tmp_path: Path, ct_series: Path) -> None:
    folder = uncalibrated_copy(tmp_path, "ct_pneumonia")
    code, output = calibrate(
        tmp_path, "ct_pneumonia", "--dataset", str(ct_series), "--no-builtin-sets",
        "--target-frr", "0.05",
    )  # fmt: skip
    assert code == 0, output
    assert_calibrated(folder, (12, 4, 4))
    assert "held-out volumes" in (folder / "card.md").read_text().replace("\n", " ")


def test_too_few_series_are_refused(tmp_path: Path, ct_series: Path) -> None:
    uncalibrated_copy(tmp_path, "ct_pneumonia")
    few = tmp_path / "few"
    for sub in sorted(ct_series.iterdir())[:5]:
        shutil.copytree(sub, few / sub.name)
    code, output = calibrate(tmp_path, "ct_pneumonia", "--dataset", str(few), "--no-builtin-sets")
    assert code == 1 and "at least 10" in output
