"""The demo chest X-ray model: export fidelity, the committed files, and its metrics
re-measured on fresh phantoms it has never seen."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from aidx.pipelines.cxr import model as cxr_model
from aidx.pipelines.cxr import train_data, train_eval

ROOT = Path(__file__).resolve().parents[3]
MODEL_DIR = ROOT / "models" / "cxr_pneumonia"
ONNX_PATH = MODEL_DIR / "1" / "model.onnx"
FRESH_SPLIT_SEED = 9_000_001  # not a training split seed (1000*seed + 1..3)
FRESH_IMAGES = 200
AUROC_MARGIN = 0.05  # allowed drop from the card's 1000-image estimate (~3 standard errors)
HIT_RATE_MARGIN = 0.10
CARD_KEYS = {
    "name", "version", "pipeline", "demo_weights", "files", "outputs", "labels", "metrics",
    "ood",  # the out-of-distribution gate (inference/ood.py), calibrated by the recipe
}  # fmt: skip


def front_matter(path: Path) -> dict:
    text = path.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---", 2)[1])


def session(path: Path, providers: list[str] | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def phantom_batch(n: int, seed: int) -> np.ndarray:
    cases = [train_data.make_case(train_data.draw_sample(seed, i)) for i in range(n)]
    return np.stack([c.image for c in cases])


# --- export fidelity (a freshly seeded, untrained network) --------------------------


@pytest.fixture(scope="module")
def fresh_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = cxr_model.build_model(seed=123).eval()
    path = tmp_path_factory.mktemp("onnx") / "fresh.onnx"
    cxr_model.export_onnx(model, path)
    return model, path


def test_export_signature(fresh_export: tuple[torch.nn.Module, Path]) -> None:
    _, path = fresh_export
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    sess = session(path)
    (image,) = sess.get_inputs()
    assert image.name == "image" and image.shape[1:] == [1, 224, 224]
    assert isinstance(image.shape[0], str)  # dynamic batch
    outputs = {o.name: o.shape for o in sess.get_outputs()}
    assert set(outputs) == {"logits", "cam"}
    assert outputs["logits"][1:] == [2] and outputs["cam"][1:] == [2, 28, 28]
    assert isinstance(outputs["logits"][0], str) and isinstance(outputs["cam"][0], str)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch(fresh_export: tuple[torch.nn.Module, Path], batch: int) -> None:
    model, path = fresh_export
    rng = np.random.default_rng(batch)
    images = np.concatenate(
        [
            phantom_batch(batch, seed=77),
            rng.uniform(-1024, 1024, size=(batch, 1, 224, 224)).astype(np.float32),
        ]
    )
    with torch.no_grad():
        torch_logits, torch_cam = (t.numpy() for t in model(torch.from_numpy(images)))
    ort_logits, ort_cam = session(path).run(["logits", "cam"], {"image": images})
    assert ort_logits.shape == (2 * batch, 2) and ort_cam.shape == (2 * batch, 2, 28, 28)
    np.testing.assert_allclose(ort_logits, torch_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ort_cam, torch_cam, rtol=1e-4, atol=1e-4)


def test_logits_are_pooled_from_the_cam() -> None:
    cam = torch.randn(4, 2, 28, 28)
    logits = cxr_model.pool_cam(cam)
    r = cxr_model.POOL_SHARPNESS
    expected = (torch.logsumexp(r * cam.flatten(2), dim=2) - math.log(28 * 28)) / r
    torch.testing.assert_close(logits, expected)
    flat = torch.full((1, 2, 28, 28), 1.5)
    torch.testing.assert_close(cxr_model.pool_cam(flat), torch.full((1, 2), 1.5))
    assert cxr_model.count_parameters(cxr_model.CxrNet()) < 1_000_000


# --- the committed model folder -------------------------------------------------------


@pytest.fixture(scope="module")
def card() -> dict:
    return front_matter(MODEL_DIR / "card.md")


def test_card_front_matter(card: dict) -> None:
    assert set(card) == CARD_KEYS
    assert card["name"] == "cxr_pneumonia" and card["version"] == 1
    assert card["pipeline"] == "cxr" and card["demo_weights"] is True
    assert card["outputs"] == {"logits": "logits", "cam": "cam"}
    assert [lab["name"] for lab in card["labels"]] == list(cxr_model.LABELS)
    assert [lab["code"] for lab in card["labels"]] == ["233604007", "8186001"]
    assert all(lab["scheme"] == "SCT" and 0 < lab["threshold"] < 1 for lab in card["labels"])
    metrics = card["metrics"]
    assert metrics["heldout_images"] >= 500
    for key in ("auroc", "sensitivity", "specificity"):
        assert set(metrics[key]) == set(cxr_model.LABELS)
    prose = (MODEL_DIR / "card.md").read_text().split("---", 2)[2]
    for phrase in ("DEMO WEIGHTS", "NOT FOR CLINICAL USE", "synthetic", "--seed"):
        assert phrase in prose


def test_card_sha256_matches_the_file(card: dict) -> None:
    # the model, its OOD reference and its drift reference, each with its checksum
    assert set(card["files"]) == {"1/model.onnx", "1/ood.npz", "1/drift.json"}
    for name, sha256 in card["files"].items():
        assert hashlib.sha256((MODEL_DIR / name).read_bytes()).hexdigest() == sha256, name
    assert ONNX_PATH.stat().st_size < 5_000_000


def test_config_and_labels_match_the_model() -> None:
    config = text_format.Parse(
        (MODEL_DIR / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert (config.name, config.platform, config.max_batch_size) == (
        "cxr_pneumonia",
        "onnxruntime_onnx",
        32,
    )
    sess = session(ONNX_PATH)
    for spec, value in zip(config.input, sess.get_inputs(), strict=True):
        assert spec.name == value.name and list(spec.dims) == value.shape[1:]
        assert spec.data_type == model_config_pb2.TYPE_FP32
    for spec, value in zip(config.output, sess.get_outputs(), strict=True):
        assert spec.name == value.name and list(spec.dims) == value.shape[1:]
    assert config.output[0].label_filename == "labels.txt"
    batching = config.dynamic_batching
    assert batching.max_queue_delay_microseconds == 2000 and batching.priority_levels == 2
    assert batching.default_priority_level == 2
    assert batching.default_queue_policy.max_queue_size == 128
    # Triton loads the serving version (1, the card's) and the candidate run in shadow (2)
    assert list(config.version_policy.specific.versions) == [1, 2]
    labels = (MODEL_DIR / "labels.txt").read_text().splitlines()
    assert labels == list(cxr_model.LABELS)


def test_committed_model_is_batch_invariant() -> None:
    images = phantom_batch(4, seed=FRESH_SPLIT_SEED + 1)
    sess = session(ONNX_PATH)
    batched = sess.run(["logits", "cam"], {"image": images})
    for i in range(len(images)):
        single = sess.run(["logits", "cam"], {"image": images[i : i + 1]})
        np.testing.assert_allclose(single[0][0], batched[0][i], atol=1e-4)
        np.testing.assert_allclose(single[1][0], batched[1][i], atol=1e-4)
        # the logits are the cam's own smooth maximum
        pooled = cxr_model.pool_cam(torch.from_numpy(single[1])).numpy()
        np.testing.assert_allclose(pooled, single[0], atol=1e-4)


def test_metrics_hold_on_fresh_phantoms(card: dict) -> None:
    """Re-measure the card's claims on phantoms from a split seed training never used."""
    cases = [
        train_data.make_case(train_data.draw_sample(FRESH_SPLIT_SEED, i))
        for i in range(FRESH_IMAGES)
    ]
    thresholds = {lab["name"]: lab["threshold"] for lab in card["labels"]}
    measured = train_eval.evaluate(train_eval.onnx_runner(ONNX_PATH), cases, thresholds)
    claimed = card["metrics"]
    for name in cxr_model.LABELS:
        assert measured["auroc"][name] >= claimed["auroc"][name] - AUROC_MARGIN, (name, measured)
    assert claimed["auroc"]["Pneumonia"] >= 0.9
    assert (
        measured["localisation_hit_rate"] >= claimed["localisation_hit_rate"] - HIT_RATE_MARGIN
    ), measured


# --- metric helpers: they decide what the card says, so they are checked too ------


def test_auroc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.4
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounded: plenty of ties
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert train_eval.auroc(scores, labels) == pytest.approx(pairwise, abs=1e-12)
    assert train_eval.auroc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    with pytest.raises(ValueError):
        train_eval.auroc(np.array([0.1, 0.2]), np.array([1, 1]))


def test_youden_threshold_separates_separable_scores() -> None:
    probabilities = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    cut = train_eval.youden_threshold(probabilities, labels)
    assert 0.3 < cut <= 0.6
    assert train_eval.sensitivity_specificity(probabilities, labels, cut) == (1.0, 1.0)


def test_peak_in_mask_uses_original_pixels() -> None:
    from aidx.pipelines.cxr.preprocess import CropGeometry

    geometry = CropGeometry(row0=100, col0=0, side_px=448)  # scale 2
    mask = np.zeros((648, 448), dtype=bool)
    cam = np.zeros((28, 28), dtype=np.float32)
    cam[3, 5] = 1.0  # centre at model (28, 44) -> original (156, 88)
    mask[150:160, 85:90] = True
    assert train_eval.peak_in_mask(cam, geometry, mask, radius_px=0.0)
    mask[:] = False
    mask[156, 96] = True  # 8 px to the right of the peak
    assert not train_eval.peak_in_mask(cam, geometry, mask, radius_px=4.0)
    assert train_eval.peak_in_mask(cam, geometry, mask, radius_px=8.0)


# --- GPU: runs whenever onnxruntime can use CUDA ---------------------------------------


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers() or not (
        torch.cuda.is_available()
    ):
        pytest.skip("no CUDA device")
    images = phantom_batch(8, seed=FRESH_SPLIT_SEED + 2)
    cpu = session(ONNX_PATH).run(["logits", "cam"], {"image": images})
    gpu_session = session(ONNX_PATH, ["CUDAExecutionProvider"])
    assert gpu_session.get_providers()[0] == "CUDAExecutionProvider"
    gpu = gpu_session.run(["logits", "cam"], {"image": images})
    np.testing.assert_allclose(gpu[0], cpu[0], atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(gpu[1], cpu[1], atol=2e-3, rtol=1e-3)
