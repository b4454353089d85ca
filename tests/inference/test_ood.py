"""The generic out-of-distribution gate: embedding, reference, threshold, verdicts,
the sidecar's checksum, and writing a calibration into a model folder."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from aidx.inference.assessment import OodPolicy, OodStatus
from aidx.inference.errors import ModelUnavailable
from aidx.inference.model_card import CardError, load_card
from aidx.inference.ood import (
    EDGE_GRID,
    METHOD,
    THUMBNAIL_GRID,
    OodGate,
    OodReference,
    embed,
    gate_for,
    threshold_at,
    uncalibrated,
)
from aidx.inference.ood_calibration import (
    SECTION_TITLE,
    InDistribution,
    OodSet,
    calibrate,
    split_indices,
    write_calibration,
)
from aidx.inference.repository import load_entry, parse_config
from tests.conftest import MODELS


def images(rng: np.random.Generator, n: int) -> np.ndarray:
    """'In distribution': a bright vertical band of varying width and brightness on a
    dark background, with faint noise, as 1 x 64 x 64 tensors."""
    out = np.zeros((n, 1, 64, 64))
    for i in range(n):
        half = int(rng.integers(8, 16))
        out[i, 0, :, 32 - half : 32 + half] = rng.uniform(0.5, 1.0)
        out[i] += rng.normal(0, 0.02, (1, 64, 64))
    return out


def embeddings(tensors: np.ndarray) -> np.ndarray:
    return np.stack([embed(t) for t in tensors])


@pytest.fixture(scope="module")
def data() -> InDistribution:
    rng = np.random.default_rng(0)
    fit, cal, held = (embeddings(images(rng, n)) for n in (300, 200, 200))
    return InDistribution(fit, cal, held, "bands")


def test_the_embedding_is_a_thumbnail_and_an_edge_map() -> None:
    tensor = np.zeros((1, 224, 224))
    tensor[0, :, 112:] = 1.0
    features = embed(tensor)
    assert features.shape == (THUMBNAIL_GRID**2 + EDGE_GRID**2,)
    thumbnail = features[: THUMBNAIL_GRID**2].reshape(THUMBNAIL_GRID, THUMBNAIL_GRID)
    assert np.all(thumbnail[:, :8] == 0) and np.all(thumbnail[:, 8:] == 1)
    edges = features[THUMBNAIL_GRID**2 :].reshape(EDGE_GRID, EDGE_GRID)
    # the step between columns 111 and 112 counts in the block of column 112 (the 5th)
    assert np.all(edges[:, 4] > 0) and edges[:, [0, 1, 2, 3, 5, 6, 7]].sum() == 0
    assert np.array_equal(embed(tensor[0]), features)  # (H, W) is one channel


def test_in_distribution_scores_about_one_and_others_far(data: InDistribution) -> None:
    reference = OodReference.fit(data.fit)
    held = np.array([reference.score(e) for e in data.heldout])
    assert 0.5 < np.median(held) < 1.5
    rng = np.random.default_rng(1)
    flat = reference.score(embed(np.full((1, 64, 64), 0.5)))
    noise = reference.score(embed(rng.random((1, 64, 64))))
    assert flat > 3 * held.max() and noise > 3 * held.max()


def test_the_threshold_rejects_at_most_the_target_share() -> None:
    scores = np.arange(1, 101, dtype=float)
    assert threshold_at(scores, 0.05) == 96.0  # the quantile, rounded up to a score
    assert np.mean(scores > threshold_at(scores, 0.05)) == 0.04
    with pytest.raises(ValueError):
        threshold_at(scores, 0.0)


def test_the_reference_round_trips_through_its_file(data: InDistribution) -> None:
    reference = OodReference.fit(data.fit)
    again = OodReference.from_npz(reference.to_npz())
    probe = data.heldout[0]
    assert again.score(probe) == pytest.approx(reference.score(probe), rel=1e-12)


def test_the_gate_answers_in_out_and_uncalibrated(data: InDistribution) -> None:
    gate = OodGate(OodReference.fit(data.fit), threshold=2.0)
    inside = gate.verdict(images(np.random.default_rng(5), 1)[0], OodPolicy.not_assessed)
    assert inside.status is OodStatus.in_distribution and inside.score is not None
    assert inside.threshold == 2.0 and inside.method == METHOD
    outside = gate.verdict(np.full((1, 64, 64), 0.5), OodPolicy.warn)
    assert outside.status is OodStatus.out_of_distribution and outside.policy is OodPolicy.warn
    none = uncalibrated(OodPolicy.not_assessed)
    assert none.status is OodStatus.uncalibrated and none.score is None


def test_calibrate_measures_the_rates(data: InDistribution) -> None:
    rng = np.random.default_rng(2)
    sets = {
        "flat": OodSet("flat grey", embeddings(np.full((10, 1, 64, 64), 0.3))),
        "noise": OodSet("noise", embeddings(rng.random((10, 1, 64, 64)))),
    }
    result = calibrate(data, sets, target_frr=0.02)
    section = result.section
    assert section.false_rejection_rate <= 0.05 and section.fit_images == 300
    assert {n: r.rate for n, r in section.detection.items()} == {"flat": 1.0, "noise": 1.0}


def test_calibrate_refuses_a_gate_that_rejects_its_own_kind(data: InDistribution) -> None:
    shifted = InDistribution(data.fit, data.calibration, data.heldout + 5.0, "shifted")
    with pytest.raises(ValueError, match="held-out"):
        calibrate(shifted, {}, target_frr=0.01)


def test_split_indices_are_disjoint_and_seeded() -> None:
    parts = split_indices(10, (0.6, 0.2, 0.2), seed=3)
    assert [len(p) for p in parts] == [6, 2, 2]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert [p.tolist() for p in split_indices(10, (0.6, 0.2, 0.2), seed=3)] == [
        p.tolist() for p in parts
    ]


@pytest.fixture()
def model_copy(tmp_path: Path, data: InDistribution) -> Path:
    """A copy of the CXR demo model folder, calibrated on the band images."""
    folder = tmp_path / "cxr_pneumonia"
    shutil.copytree(MODELS / "cxr_pneumonia", folder)
    write_calibration(folder, 1, calibrate(data, {}, target_frr=0.02))
    return folder


def test_write_calibration_adds_the_file_its_sha_and_the_section(model_copy: Path) -> None:
    original = load_card(
        MODELS / "cxr_pneumonia" / "card.md",
        parse_config(MODELS / "cxr_pneumonia" / "config.pbtxt"),
    )
    card = load_card(model_copy / "card.md", parse_config(model_copy / "config.pbtxt"))
    assert card.ood is not None and card.ood.file == "1/ood.npz"
    digest = hashlib.sha256((model_copy / "1" / "ood.npz").read_bytes()).hexdigest()
    assert card.files_sha256["1/ood.npz"] == digest
    # everything else the card said is kept
    assert card.files_sha256["1/model.onnx"] == original.files_sha256["1/model.onnx"]
    assert (card.metrics, card.labels) == (original.metrics, original.labels)
    assert card.text.count(SECTION_TITLE) == 1
    assert card.text.index(SECTION_TITLE) < card.text.index("## Limitations")
    assert load_entry(model_copy).problem is None
    gate = gate_for(model_copy, card)
    assert gate is not None and gate.threshold == card.ood.threshold


def test_a_recalibration_replaces_the_section(model_copy: Path, data: InDistribution) -> None:
    write_calibration(model_copy, 1, calibrate(data, {}, target_frr=0.05))
    card = load_card(model_copy / "card.md", parse_config(model_copy / "config.pbtxt"))
    assert card.text.count(SECTION_TITLE) == 1 and card.ood is not None
    assert card.ood.target_false_rejection_rate == 0.05


def test_a_tampered_reference_keeps_the_model_out_of_service(model_copy: Path) -> None:
    with (model_copy / "1" / "ood.npz").open("ab") as fh:
        fh.write(b"tampered")
    entry = load_entry(model_copy)
    assert entry.problem is not None and "1/ood.npz" in entry.problem
    assert entry.card is not None
    with pytest.raises(ModelUnavailable, match="sha256"):
        gate_for(model_copy, entry.card)


def test_a_card_whose_ood_file_is_not_listed_is_invalid(model_copy: Path) -> None:
    text = (model_copy / "card.md").read_text()
    (model_copy / "card.md").write_text(text.replace("  1/ood.npz:", "  1/other.npz:"))
    with pytest.raises(CardError, match="ood.file"):
        load_card(model_copy / "card.md", parse_config(model_copy / "config.pbtxt"))
