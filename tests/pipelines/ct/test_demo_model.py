"""The committed demo CT model: its files, its card, its config, and its quality
re-measured on fresh phantoms it has never seen (a different split seed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from aidx.inference.repository import load_entry
from aidx.inference.serving import ServedModel
from aidx.pipelines.ct import train
from aidx.pipelines.ct.inference import WindowConfig, probability_map
from aidx.pipelines.ct.pipeline import window_config

ROOT = Path(__file__).resolve().parents[3]
MODEL_DIR = ROOT / "models" / "ct_pneumonia"
ONNX_PATH = MODEL_DIR / "1" / "model.onnx"
FRESH_SPLIT_SEED = 7_000_001  # not a recipe split seed (1000 * seed + 1..3)
FRESH_SCANS = 8  # about 1 s each


def front_matter() -> dict:  # type: ignore[type-arg]
    text = (MODEL_DIR / "card.md").read_text()
    assert text.startswith("---\n")
    return dict(yaml.safe_load(text.split("---", 2)[1]))


def test_files_and_card() -> None:
    meta = front_matter()
    assert meta["pipeline"] == "ct" and meta["demo_weights"] is True
    digest = hashlib.sha256(ONNX_PATH.read_bytes()).hexdigest()
    assert meta["files"]["1/model.onnx"] == digest
    # the weights, the OOD gate and the drift reference
    assert set(meta["files"]) == {"1/model.onnx", "1/ood.npz", "1/drift.json"}
    assert ONNX_PATH.stat().st_size < 3 * 1024 * 1024
    (label,) = meta["labels"]
    assert label["code"] == "233604007" and 0 < label["threshold"] < 1
    for key in ("dice_global", "lesion_sensitivity", "false_positives_per_scan"):
        assert key in meta["metrics"]
    assert "NOT FOR CLINICAL USE" in (MODEL_DIR / "card.md").read_text()


def test_config_gives_the_window() -> None:
    entry = load_entry(MODEL_DIR)
    assert entry.problem is None
    window, min_ml = window_config(ServedModel(entry))
    assert window.roi_voxels == 64 and window.spacing_mm == 3.0
    assert 0 < window.overlap < 1 and window.sw_batch_size <= entry.max_batch_size
    assert min_ml > 0


@pytest.mark.slow
def test_quality_on_fresh_phantoms() -> None:
    meta = front_matter()
    threshold = meta["labels"][0]["threshold"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(ONNX_PATH), options, providers=["CPUExecutionProvider"])

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["logits"], {"image": batch})[0])

    rows = []
    for index in range(FRESH_SCANS):
        case = train.draw_case(FRESH_SPLIT_SEED, index, 3.0)
        probability = probability_map(case.image, predict, WindowConfig())
        rows.append(train.evaluate_case(case, probability, threshold, 0.5))
    summary = train.summarise(rows)
    card = meta["metrics"]
    # Margins for 8 scans (about 10 lesions) against the card's 20-scan estimate.
    assert summary["lesion_sensitivity"] >= card["lesion_sensitivity"] - 0.15
    assert summary["false_positives_per_scan"] <= card["false_positives_per_scan"] + 0.5
    assert summary["dice_mean_positive_scans"] >= card["dice_mean_positive_scans"] - 0.2
