"""The recipe's evaluation: per-label AUROC, sensitivity and specificity at the chosen
thresholds, the Pneumonia localisation hit rate, the validation split's thresholds,
and runners for the trained torch model and the exported ONNX file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from aidx.pipelines.cxr.model import CAM_STRIDE_PX, LABELS
from aidx.pipelines.cxr.preprocess import CropGeometry
from aidx.pipelines.cxr.train_data import Case
from aidx.pipelines.metrics import auroc, sensitivity_specificity, youden_threshold

HIT_DILATION_MODEL_PX = 4.0  # half a cam cell; in original pixels x geometry.scale

RunFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # images -> (logits, cam)


def peak_in_mask(
    cam: np.ndarray, geometry: CropGeometry, mask: np.ndarray, radius_px: float
) -> bool:
    """Whether the cam's hottest cell, mapped to original pixels, lies within
    `radius_px` of the mask (the mask dilated by a disc of that radius)."""
    i, j = np.unravel_index(int(np.argmax(cam)), cam.shape)
    row, col = geometry.to_original((i + 0.5) * CAM_STRIDE_PX, (j + 0.5) * CAM_STRIDE_PX)
    r = int(np.ceil(radius_px))
    r0, c0 = max(0, int(round(row)) - r), max(0, int(round(col)) - r)
    window = mask[r0 : int(round(row)) + r + 1, c0 : int(round(col)) + r + 1]
    rr, cc = np.nonzero(window)
    return bool(np.any((rr + r0 - row) ** 2 + (cc + c0 - col) ** 2 <= radius_px**2 + 0.5))


def run_in_batches(
    run: RunFn, cases: Sequence[Case], batch: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    logits, cams = [], []
    for start in range(0, len(cases), batch):
        images = np.stack([c.image for c in cases[start : start + batch]])
        out_logits, out_cam = run(images)
        logits.append(out_logits)
        cams.append(out_cam)
    return np.concatenate(logits), np.concatenate(cams)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def evaluate(run: RunFn, cases: Sequence[Case], thresholds: dict[str, float]) -> dict:
    """Per-label AUROC and sensitivity/specificity at `thresholds` (probabilities),
    and the Pneumonia localisation hit rate (mask dilated by HIT_DILATION_MODEL_PX
    model pixels) over pneumonia-positive cases; `..._undilated` without dilation."""
    logits, cams = run_in_batches(run, cases)
    probabilities = sigmoid(logits)
    labels = np.stack([c.labels for c in cases])
    metrics: dict = {"auroc": {}, "sensitivity": {}, "specificity": {}}
    for k, name in enumerate(LABELS):
        metrics["auroc"][name] = auroc(probabilities[:, k], labels[:, k])
        sens, spec = sensitivity_specificity(probabilities[:, k], labels[:, k], thresholds[name])
        metrics["sensitivity"][name], metrics["specificity"][name] = sens, spec
    hits, hits_undilated = [], []
    p = LABELS.index("Pneumonia")
    for case, cam in zip(cases, cams, strict=True):
        if case.pneumonia_mask is None:
            continue
        radius = HIT_DILATION_MODEL_PX * case.geometry.scale
        hits.append(peak_in_mask(cam[p], case.geometry, case.pneumonia_mask, radius))
        hits_undilated.append(peak_in_mask(cam[p], case.geometry, case.pneumonia_mask, 0.0))
    metrics["localisation_hit_rate"] = float(np.mean(hits))
    metrics["localisation_hit_rate_undilated"] = float(np.mean(hits_undilated))
    metrics["n"] = len(cases)
    metrics["n_positive"] = {name: int(labels[:, k].sum()) for k, name in enumerate(LABELS)}
    return metrics


def pick_thresholds(run: RunFn, val: Sequence[Case]) -> dict[str, float]:
    logits, _ = run_in_batches(run, val)
    probabilities = sigmoid(logits)
    labels = np.stack([c.labels for c in val])
    return {
        name: round(youden_threshold(probabilities[:, k], labels[:, k]), 4)
        for k, name in enumerate(LABELS)
    }


def onnx_runner(path: str | Path) -> RunFn:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, cam = session.run(["logits", "cam"], {"image": images.astype(np.float32)})
        return logits, cam

    return run


def torch_runner(model: torch.nn.Module) -> RunFn:
    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        model.eval()
        with torch.no_grad():
            logits, cam = model(torch.from_numpy(images))
        return logits.numpy(), cam.numpy()

    return run
