"""Calibrating a model's out-of-distribution gate (inference/ood.py) and writing it
into the model folder: the reference beside the weights, its sha256 and the typed
`ood:` section in the card, and a section of prose with the measured rates.

In-distribution inputs come in three disjoint splits: `fit` (the reference),
`calibration` (the threshold, at the target false-rejection rate) and `heldout`
(the false-rejection rate the card states). Each out-of-distribution set gets its
detection rate. `aidx models calibrate-ood` and the recipes call this; what a
pipeline contributes is only how its inputs become model tensors.
"""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aidx.inference.files import atomic_write
from aidx.inference.model_card import (
    CardError,
    OodSection,
    OodSetResult,
    load_card,
    parse_card_text,
    render_card,
    with_prose_section,
)
from aidx.inference.ood import METHOD, OodReference, threshold_at
from aidx.inference.repository import parse_config

MAX_FALSE_REJECTION_RATE = 0.05  # a gate that rejects more of its own kind is not written
DEFAULT_TARGET_FRR = 0.01
REFERENCE_FILE = "ood.npz"
SECTION_TITLE = "## Out-of-distribution gate"


@dataclass(frozen=True)
class OodSet:
    """Inputs the gate should reject, as embeddings, and what they are."""

    source: str
    embeddings: np.ndarray  # [n, d]


@dataclass(frozen=True)
class InDistribution:
    """The three disjoint in-distribution splits, as embeddings [n, d]."""

    fit: np.ndarray
    calibration: np.ndarray
    heldout: np.ndarray
    dataset: str  # where they came from, for the card
    unit: str = "images"  # what one input is, in the card's prose: images, volumes, tiles


@dataclass(frozen=True)
class Calibration:
    reference: OodReference
    section: OodSection
    unit: str = "images"


def _scores(reference: OodReference, embeddings: np.ndarray) -> np.ndarray:
    return np.array([reference.score(e) for e in embeddings])


def calibrate(
    data: InDistribution,
    ood_sets: Mapping[str, OodSet],
    *,
    target_frr: float = DEFAULT_TARGET_FRR,
    file: str = f"1/{REFERENCE_FILE}",
) -> Calibration:
    """Fit, choose the threshold, measure. Raises ValueError when the measured
    false-rejection rate on the held-out split is above MAX_FALSE_REJECTION_RATE."""
    reference = OodReference.fit(data.fit)
    threshold = round(threshold_at(_scores(reference, data.calibration), target_frr), 4)
    heldout_frr = float(np.mean(_scores(reference, data.heldout) > threshold))
    if heldout_frr > MAX_FALSE_REJECTION_RATE:
        raise ValueError(
            f"the gate rejects {heldout_frr:.1%} of the held-out in-distribution inputs "
            f"(at most {MAX_FALSE_REJECTION_RATE:.0%} allowed): more or more varied data needed"
        )
    detection = {}
    for name, ood in ood_sets.items():
        detected = int(np.sum(_scores(reference, ood.embeddings) > threshold))
        images = len(ood.embeddings)
        detection[name] = OodSetResult(
            images=images, detected=detected, rate=round(detected / images, 4), source=ood.source
        )
    section = OodSection(
        method=METHOD,
        file=file,
        threshold=threshold,
        target_false_rejection_rate=target_frr,
        false_rejection_rate=round(heldout_frr, 4),
        fit_images=len(data.fit),
        calibration_images=len(data.calibration),
        heldout_images=len(data.heldout),
        dataset=data.dataset,
        detection=detection,
    )
    return Calibration(reference, section, data.unit)


def prose(section: OodSection, unit: str = "images") -> str:
    """The card's section on the gate: the method, the rates, the table (`unit`:
    what one input is, e.g. images, volumes or tiles)."""
    how = (
        "Every report gives the gate's verdict (`ood`: score, threshold, status). An input "
        "scoring above the threshold is out of distribution: its findings are not assessed "
        "(`out_of_distribution`), or, where a site sets `AIDX_OOD_POLICY=warn`, scored under "
        f"a prominent warning. Method `{section.method}` (aidx.inference.ood): a 16 x 16 "
        "thumbnail and an 8 x 8 edge-strength map of the model's input tensor (of a "
        "volume: of its mean projections and central slices along each axis), "
        "standardised, scored by the Mahalanobis distance under a probabilistic PCA fitted "
        "on in-distribution inputs (about 1 in distribution). Reference: "
        f"`{section.file}` (its sha256 in `files`)."
    )
    measured = (
        f"In-distribution data: {section.dataset}. The reference was fitted on "
        f"{section.fit_images} {unit}; the threshold, {section.threshold}, is the score "
        f"that {section.target_false_rejection_rate:.1%} of {section.calibration_images} "
        f"calibration {unit} exceed; on {section.heldout_images} held-out {unit} the gate "
        f"rejected **{section.false_rejection_rate:.1%}** (the false-rejection rate)."
    )
    rows = "".join(
        f"| {name} | {result.source} | {result.images} | {result.detected} | {result.rate:.1%} |\n"
        for name, result in section.detection.items()
    )
    table = (
        f"| out-of-distribution set | made of | {unit} | detected | detection rate |\n"
        f"|---|---|---|---|---|\n{rows}"
    )
    paragraphs = (textwrap.fill(text, width=84) for text in (how, measured))
    return "\n\n".join([SECTION_TITLE, *paragraphs, table])


def write_calibration(model_dir: Path, version: int, calibration: Calibration) -> Path:
    """Write the reference into `model_dir/<version>/` and the card's `files`, `ood:`
    and prose; the card is validated against config.pbtxt before it replaces the old."""
    section = calibration.section.model_copy(update={"file": f"{version}/{REFERENCE_FILE}"})
    data = calibration.reference.to_npz()
    card_path = model_dir / "card.md"
    front, body = parse_card_text(card_path.read_text(encoding="utf-8"))
    files = {**front.files, section.file: hashlib.sha256(data).hexdigest()}
    front = front.model_copy(update={"files": files, "ood": section})
    body = with_prose_section(body, SECTION_TITLE, prose(section, calibration.unit))
    text = render_card(front, body)
    staged = model_dir / ".card.md.staged"
    staged.write_text(text, encoding="utf-8")
    try:
        load_card(staged, parse_config(model_dir / "config.pbtxt"))
    except CardError:
        staged.unlink()
        raise
    atomic_write(model_dir / section.file, data)
    staged.replace(card_path)
    return model_dir / section.file


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """A seeded permutation of range(n) cut into consecutive parts of `fractions`."""
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum([round(f * n) for f in fractions[:-1]])
    return [np.sort(part) for part in np.split(order, cuts)]


FILE_SPLITS = (0.6, 0.2, 0.2)  # fit, calibration, held-out of a site's own dataset


def split_embeddings(
    embeddings: np.ndarray, dataset: str, seed: int, unit: str = "images"
) -> InDistribution:
    """A dataset's embeddings [n, d] cut 60/20/20 into fit, calibration and held-out
    by a seeded shuffle."""
    fit, calibration, heldout = (
        embeddings[i] for i in split_indices(len(embeddings), FILE_SPLITS, seed)
    )
    return InDistribution(fit, calibration, heldout, dataset, unit)


@dataclass(frozen=True)
class OodSources:
    """A pipeline's side of its gate's calibration: how its in-distribution data and
    out-of-distribution sets become embeddings. The command and the recipes call
    `calibrate` the same way for every imaging model."""

    folder_in_distribution: Callable[[Path, int], InDistribution]
    synthetic_in_distribution: Callable[[int, int, int], InDistribution]
    builtin_ood_sets: Callable[[int], dict[str, OodSet]]
    folder_ood_set: Callable[[str, Path], OodSet]
    what: str  # "phantoms", "tiles": what `synthetic_images` counts

    def calibrate(
        self,
        *,
        dataset: Path | None,
        synthetic_images: int | None,
        recipe_seed: int = 0,
        extra_sets: dict[str, Path] | None = None,
        builtin_sets: bool = True,
        target_frr: float = DEFAULT_TARGET_FRR,
        workers: int = 1,
    ) -> Calibration:
        """In-distribution data from `dataset` or `synthetic_images` per split; the
        built-in OOD sets (unless `builtin_sets` is False) and `extra_sets` (folders)."""
        if (dataset is None) == (synthetic_images is None):
            raise ValueError(f"give either a dataset folder or a number of synthetic {self.what}")
        if dataset is not None:
            data = self.folder_in_distribution(dataset, recipe_seed)
        else:
            data = self.synthetic_in_distribution(recipe_seed, synthetic_images or 0, workers)
        sets = self.builtin_ood_sets(recipe_seed) if builtin_sets else {}
        for name, folder in (extra_sets or {}).items():
            sets[name] = self.folder_ood_set(name, folder)
        return calibrate(data, sets, target_frr=target_frr)
