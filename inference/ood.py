"""The out-of-distribution gate of an imaging model: is this input like the inputs
the model was made for? If not, its findings are not assessed (or, where a site
chose `warn`, scored under a prominent warning).

Method `thumbnail-edges-ppca-v1`, model-agnostic. A drop-in model (e.g. an exported
torchxrayvision DenseNet) has no feature output, so the gate looks at what every
model is given, its preprocessed input tensor:

1. Embedding (`embed`): per channel, a 16 x 16 thumbnail (block means: where the
   dense and the lucent areas lie) and an 8 x 8 map of local edge strength (block
   means of |dx| + |dy| at full resolution: how textured each area is). A
   1 x 224 x 224 chest X-ray tensor gives 320 numbers. A volume (C, X, Y, Z), e.g.
   a CT model's grid, is embedded by six planes per channel: its mean projection
   along each axis (where the air and the dense parts lie in 3-D) and its central
   slice across each axis (the texture the projections average away): 1920 numbers.
   A plane smaller than a grid is first enlarged by repeating its pixels.
2. Reference (`OodReference.fit`), on in-distribution inputs: each feature
   standardised, then a probabilistic PCA (Tipping & Bishop 1999): the top k
   principal directions with their variances, and one variance shared by all the
   directions off them.
3. Score: the Mahalanobis distance of an input's standardised embedding under that
   Gaussian (along the k directions, plus the residual off them), divided by the
   number of features and square-rooted: about 1 for a typical training input.
4. Threshold (`threshold_at`): the (1 - target false-rejection rate) quantile of the
   scores of a calibration split that played no part in the fit. The rate itself is
   then measured on a third, held-out split (inference/ood_calibration.py).

The reference is a sidecar in the model's version folder (`ood.npz`), listed with
its sha256 in the card's `files`; the card's `ood:` section gives the threshold and
the measured rates. A model without one is `uncalibrated`: no gate ran, and its
reports say so.
"""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aidx.inference.assessment import (
    NotAssessed,
    NotAssessedReason,
    OodPolicy,
    OodStatus,
    OodVerdict,
)
from aidx.inference.errors import ModelUnavailable
from aidx.inference.model_card import ModelCard

METHOD = "thumbnail-edges-ppca-v1"
THUMBNAIL_GRID = 16
EDGE_GRID = 8
MAX_COMPONENTS = 32
_EPS = 1e-6


def _block_means(image: np.ndarray, grid: int) -> np.ndarray:
    """`image` (H, W) as grid x grid block means (edge rows/columns that do not fill
    a block are dropped; a side shorter than `grid` is repeated up to it)."""
    for axis, side in enumerate(image.shape):
        if 0 < side < grid:
            image = np.repeat(image, -(-grid // side), axis=axis)
    rows, cols = (image.shape[0] // grid) * grid, (image.shape[1] // grid) * grid
    if rows == 0 or cols == 0:
        raise ValueError(f"an input of {image.shape} is smaller than the {grid} x {grid} grid")
    blocks = image[:rows, :cols].reshape(grid, rows // grid, grid, cols // grid)
    return blocks.mean(axis=(1, 3))


def _planes(volume: np.ndarray) -> list[np.ndarray]:
    """A volume's mean projection along each axis, then its central slice across each."""
    centre = [side // 2 for side in volume.shape]
    projections = [volume.mean(axis=axis) for axis in range(3)]
    slices = [np.take(volume, centre[axis], axis=axis) for axis in range(3)]
    return projections + slices


def _plane_features(plane: np.ndarray) -> list[np.ndarray]:
    edges = np.zeros_like(plane)
    edges[:, 1:] += np.abs(np.diff(plane, axis=1))
    edges[1:, :] += np.abs(np.diff(plane, axis=0))
    return [_block_means(plane, THUMBNAIL_GRID), _block_means(edges, EDGE_GRID)]


def embed(tensor: np.ndarray) -> np.ndarray:
    """A model input (C, H, W) or (H, W), or a volume (C, X, Y, Z), as its 1-D
    embedding (float64)."""
    x = np.asarray(tensor, dtype=np.float64)
    channels = x[None] if x.ndim == 2 else x
    if channels.ndim not in (3, 4):
        raise ValueError(f"expected a (C, H, W), (H, W) or (C, X, Y, Z) input, got {x.shape}")
    parts = []
    for channel in channels:
        for plane in _planes(channel) if channel.ndim == 3 else [channel]:
            parts += _plane_features(plane)
    return np.concatenate([p.ravel() for p in parts])


@dataclass(frozen=True)
class OodReference:
    """In-distribution statistics of the embedding: a probabilistic PCA."""

    mean: np.ndarray  # [d] feature means
    scale: np.ndarray  # [d] feature standard deviations
    components: np.ndarray  # [k, d] principal directions (orthonormal rows)
    variances: np.ndarray  # [k] variance along each direction
    residual_variance: float  # per dimension, off the k directions

    @classmethod
    def fit(cls, embeddings: np.ndarray, max_components: int = MAX_COMPONENTS) -> OodReference:
        """Fit on in-distribution embeddings [n, d] (n > 2)."""
        n, d = embeddings.shape
        if n < 3:
            raise ValueError(f"fitting a reference needs at least 3 inputs, got {n}")
        mean = embeddings.mean(axis=0)
        scale = embeddings.std(axis=0, ddof=1) + _EPS
        z = (embeddings - mean) / scale
        _, singular, vt = np.linalg.svd(z, full_matrices=False)
        eigen = singular**2 / (n - 1)
        k = min(max_components, n - 2, d - 1)
        # the variance left off the k directions, shared by the remaining dimensions
        residual = max(float(eigen[k:].sum()) / (d - k), _EPS)
        return cls(mean, scale, vt[:k], np.maximum(eigen[:k], residual), residual)

    def score(self, embedding: np.ndarray) -> float:
        """sqrt(Mahalanobis^2 / d): about 1 in distribution, large far from it."""
        z = (np.asarray(embedding, dtype=np.float64) - self.mean) / self.scale
        projected = self.components @ z
        residual = z - self.components.T @ projected
        distance2 = float(np.sum(projected**2 / self.variances))
        distance2 += float(residual @ residual) / self.residual_variance
        return float(np.sqrt(distance2 / z.size))

    def to_npz(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            method=np.asarray(METHOD),
            mean=self.mean,
            scale=self.scale,
            components=self.components,
            variances=self.variances,
            residual_variance=np.asarray(self.residual_variance),
        )
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> OodReference:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            method = str(npz["method"])
            if method != METHOD:
                raise ValueError(f"the reference was made by {method!r}, not {METHOD!r}")
            return cls(
                mean=np.asarray(npz["mean"], np.float64),
                scale=np.asarray(npz["scale"], np.float64),
                components=np.asarray(npz["components"], np.float64),
                variances=np.asarray(npz["variances"], np.float64),
                residual_variance=float(npz["residual_variance"]),
            )


def threshold_at(scores: np.ndarray, false_rejection_rate: float) -> float:
    """The score above which a `false_rejection_rate` share of `scores` (in-distribution
    inputs) lies: a threshold that rejects at most that share of them."""
    if not 0.0 < false_rejection_rate < 1.0:
        raise ValueError(f"a false-rejection rate is in (0, 1), got {false_rejection_rate}")
    return float(np.quantile(np.asarray(scores), 1.0 - false_rejection_rate, method="higher"))


@dataclass(frozen=True)
class OodGate:
    """A model's reference and threshold: the verdict for one input tensor."""

    reference: OodReference
    threshold: float
    method: str = METHOD

    def score(self, tensor: np.ndarray) -> float:
        return self.reference.score(embed(tensor))

    def verdict(self, tensor: np.ndarray, policy: OodPolicy) -> OodVerdict:
        score = self.score(tensor)
        inside = score <= self.threshold
        return OodVerdict(
            status=OodStatus.in_distribution if inside else OodStatus.out_of_distribution,
            score=round(score, 4),
            threshold=self.threshold,
            method=self.method,
            policy=policy,
        )


def uncalibrated(policy: OodPolicy) -> OodVerdict:
    """The verdict of a model with no reference: no gate ran."""
    return OodVerdict(status=OodStatus.uncalibrated, policy=policy)


def verdict_for(gate: OodGate | None, tensor: np.ndarray, policy: OodPolicy) -> OodVerdict:
    """The gate's verdict on a model input, or `uncalibrated` when there is no gate."""
    return uncalibrated(policy) if gate is None else gate.verdict(tensor, policy)


def ood_words(verdict: OodVerdict) -> str:
    return f"OOD score {verdict.score} > threshold {verdict.threshold}, {verdict.method}"


def stop_out_of_distribution(verdict: OodVerdict, what: str = "image") -> NotAssessed | None:
    """`out_of_distribution` when the input is out of distribution and the policy is
    `not_assessed`; None otherwise (`what` names the input in the message)."""
    if verdict.status is not OodStatus.out_of_distribution:
        return None
    if verdict.policy is not OodPolicy.not_assessed:
        return None
    return NotAssessed(
        reason=NotAssessedReason.out_of_distribution,
        message=(
            f"the {what} is unlike the {what}s this model was trained and validated on "
            f"({ood_words(verdict)}): its findings would not be reliable"
        ),
    )


def out_of_distribution_warning(verdict: OodVerdict, what: str = "image") -> str:
    """What a report scored under the `warn` policy says first."""
    return (
        f"OUT OF DISTRIBUTION: the {what} is unlike the {what}s this model was trained and "
        f"validated on ({ood_words(verdict)}); the findings are scored only because this "
        "site's policy is `warn`: do not rely on them"
    )


UNCALIBRATED_WARNING = (
    "this model has no out-of-distribution reference (uncalibrated): nothing checked "
    "that the image is like the model's training data; calibrate it with "
    "`aidx models calibrate-ood`"
)


def gate_for(directory: Path, card: ModelCard) -> OodGate | None:
    """The gate of the model in `directory` (None: its card has no `ood:` section).
    The sidecar's sha256 is checked against the card's `files`."""
    if card.ood is None:
        return None
    expected = card.files_sha256.get(card.ood.file)
    return _load_gate(str(directory / card.ood.file), expected, card.ood.threshold)


@functools.lru_cache(maxsize=16)
def _load_gate(path: str, expected_sha256: str | None, threshold: float) -> OodGate:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelUnavailable(f"the OOD reference {path} cannot be read: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ModelUnavailable(
            f"the OOD reference {path} does not match the sha256 its card lists",
            code="model_card_invalid",
        )
    try:
        return OodGate(OodReference.from_npz(data), threshold)
    except (ValueError, KeyError) as exc:
        raise ModelUnavailable(
            f"the OOD reference {path} is not usable: {exc}", code="model_card_invalid"
        ) from exc
