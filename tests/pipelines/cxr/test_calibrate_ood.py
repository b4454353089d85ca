"""`aidx models calibrate-ood` on a small folder: it fits the gate, measures it,
writes the reference beside the weights and the card's `ood:` section, and the
model then serves with its gate."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aidx.inference.model_card import load_card, parse_card_text, render_card
from aidx.inference.ood import gate_for
from aidx.inference.repository import load_entry, parse_config
from aidx.pipelines.cxr import synthetic, synthetic_dicom
from aidx.service.cli import app
from tests.conftest import MODELS
from tests.pipelines.cxr.dicom_copies import edited


def uncalibrated_copy(repository: Path) -> Path:
    """The demo model folder without its gate: no `ood:`, no ood.npz."""
    folder = repository / "cxr_pneumonia"
    shutil.copytree(MODELS / "cxr_pneumonia", folder)
    (folder / "1" / "ood.npz").unlink()
    front, body = parse_card_text((folder / "card.md").read_text())
    files = {k: v for k, v in front.files.items() if k != "1/ood.npz"}
    (folder / "card.md").write_text(
        render_card(front.model_copy(update={"ood": None, "files": files}), body)
    )
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small in-distribution files: one phantom under fresh noise and exposure."""
    folder = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(0)
    base = synthetic.generate(rng, size_px=(256, 256), pneumonia=False, cardiomegaly=False)
    for i in range(40):
        image = np.clip(
            base.image01 * rng.uniform(0.9, 1.1) + rng.normal(0, 0.01, (256, 256)), 0, 1
        )
        sample = synthetic.SyntheticCxr(**{**base.__dict__, "image01": image.astype(np.float32)})
        synthetic_dicom.write_dicom(sample, folder / f"{i:02d}.dcm")
    return folder


@pytest.fixture(scope="module")
def legs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("legs")
    for name in ("RG3_UNCR.dcm", "RG3_UNCI.dcm"):
        (folder / name).write_bytes(edited(name, BodyPartExamined=None))
    return folder


def calibrate(repository: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        ["models", "calibrate-ood", "cxr_pneumonia", "--repository", str(repository), *args],
    )
    return result.exit_code, result.output


def test_calibrate_ood_writes_the_gate_into_the_model_folder(
    tmp_path: Path, dataset: Path, legs: Path
) -> None:
    folder = uncalibrated_copy(tmp_path)
    code, output = calibrate(
        tmp_path, "--dataset", str(dataset), "--ood-set", f"legs={legs}", "--no-builtin-sets",
        "--target-frr", "0.05",
    )  # fmt: skip
    assert code == 0, output
    assert "threshold" in output and "legs" in output
    card = load_card(folder / "card.md", parse_config(folder / "config.pbtxt"))
    assert card.ood is not None and card.ood.file == "1/ood.npz"
    assert (card.ood.fit_images, card.ood.calibration_images, card.ood.heldout_images) == (24, 8, 8)
    assert card.ood.false_rejection_rate <= 0.05
    assert card.ood.detection["legs"].images == 2 and card.ood.detection["legs"].rate == 1.0
    digest = hashlib.sha256((folder / "1" / "ood.npz").read_bytes()).hexdigest()
    assert card.files_sha256["1/ood.npz"] == digest
    entry = load_entry(folder)
    assert entry.problem is None and entry.card is not None
    assert gate_for(folder, entry.card) is not None
    # the card kept everything else it said
    original = load_card(
        MODELS / "cxr_pneumonia" / "card.md", parse_config(folder / "config.pbtxt")
    )
    assert (card.metrics, card.labels, card.files_sha256["1/model.onnx"]) == (
        original.metrics, original.labels, original.files_sha256["1/model.onnx"],
    )  # fmt: skip


def test_too_few_files_are_refused(tmp_path: Path, dataset: Path) -> None:
    uncalibrated_copy(tmp_path)
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(dataset.iterdir())[:5]:
        shutil.copy(path, few / path.name)
    code, output = calibrate(tmp_path, "--dataset", str(few), "--no-builtin-sets")
    assert code == 1 and "at least 10" in output


def test_a_model_of_another_pipeline_is_refused(tmp_path: Path) -> None:
    shutil.copytree(MODELS / "labs_anomaly", tmp_path / "labs_anomaly")
    result = CliRunner().invoke(
        app, ["models", "calibrate-ood", "labs_anomaly", "--repository", str(tmp_path)]
    )
    assert result.exit_code == 2 and "CXR" in result.output
