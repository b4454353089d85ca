"""`aidx models calibrate-ood wsi_tiles --dataset` reads a folder of slides as served
(tissue tiles only: bare glass gives none). One small slide is too little to fit a
tile gate that keeps its false-rejection rate under 5%: the command says so and
writes nothing. (The committed gate comes from `--synthetic 400`.)"""

from __future__ import annotations

import shutil
from pathlib import Path

from aidx.inference.model_card import load_card
from aidx.inference.repository import parse_config
from tests.pipelines.ood_cli import calibrate, uncalibrated_copy

from .conftest import Slides


def test_too_little_slide_data_is_refused_and_nothing_written(
    tmp_path: Path, slides: Slides
) -> None:
    folder = uncalibrated_copy(tmp_path, "wsi_tiles")
    dataset = tmp_path / "slides"
    dataset.mkdir()
    for slide in (slides.tumour, slides.blank):
        shutil.copy(slide, dataset / slide.name)
    code, output = calibrate(
        tmp_path, "wsi_tiles", "--dataset", str(dataset), "--no-builtin-sets",
        "--target-frr", "0.05",
    )  # fmt: skip
    assert code == 1 and "held-out in-distribution inputs" in output, output
    assert not (folder / "1" / "ood.npz").exists()
    assert load_card(folder / "card.md", parse_config(folder / "config.pbtxt")).ood is None
