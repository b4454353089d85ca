"""Helpers for the tests of `aidx models calibrate-ood` on the CT and WSI models."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from aidx.inference.model_card import load_card, parse_card_text, render_card
from aidx.inference.ood import gate_for
from aidx.inference.repository import load_entry, parse_config
from aidx.service.cli import app
from tests.conftest import MODELS


def uncalibrated_copy(repository: Path, name: str) -> Path:
    """A demo model folder without its gate: no `ood:`, no ood.npz."""
    folder = repository / name
    shutil.copytree(MODELS / name, folder)
    (folder / "1" / "ood.npz").unlink()
    front, body = parse_card_text((folder / "card.md").read_text())
    files = {k: v for k, v in front.files.items() if k != "1/ood.npz"}
    (folder / "card.md").write_text(
        render_card(front.model_copy(update={"ood": None, "files": files}), body)
    )
    return folder


def calibrate(repository: Path, model: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["models", "calibrate-ood", model, "--repository", str(repository), *args]
    )
    return result.exit_code, result.output


def assert_calibrated(folder: Path, splits: tuple[int, int, int] | None) -> None:
    card = load_card(folder / "card.md", parse_config(folder / "config.pbtxt"))
    assert card.ood is not None and card.ood.file == "1/ood.npz"
    counts = (card.ood.fit_images, card.ood.calibration_images, card.ood.heldout_images)
    assert counts == splits if splits is not None else min(counts) > 0
    assert card.ood.false_rejection_rate <= 0.05
    entry = load_entry(folder)
    assert entry.problem is None and entry.card is not None
    assert gate_for(folder, entry.card) is not None
    original = load_card(MODELS / folder.name / "card.md", parse_config(folder / "config.pbtxt"))
    assert (card.metrics, card.labels, card.files_sha256["1/model.onnx"]) == (
        original.metrics, original.labels, original.files_sha256["1/model.onnx"],
    )  # fmt: skip
