"""The CXR recipe's settings: the Recipe (split sizes, seed, hyper-parameters), the
labels' prevalence among the phantoms, the splits' seeds and the loss weights."""

from __future__ import annotations

from dataclasses import dataclass

PREVALENCE = {"Pneumonia": 0.5, "Cardiomegaly": 0.4}
SPLIT_OFFSETS = {"train": 1, "val": 2, "heldout": 3}
LOCALISATION_WEIGHT = 1.0
LOCALISATION_POS_WEIGHT = 10.0  # lesion cells are few: weigh them up in the per-cell loss


@dataclass(frozen=True)
class Recipe:
    seed: int = 0
    train_images: int = 3000
    val_images: int = 600
    heldout_images: int = 1000
    ood_images: int = 1000  # phantoms per split for the OOD gate (fit, held-out; 0.6x threshold)
    ood_target_frr: float = 0.005  # the gate's threshold: this share of the threshold split above
    epochs: int = 12
    batch: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    threads: int = 2
    version: int = 1  # the version folder written (2, 3, ... for a candidate to shadow)


def split_seed(seed: int, split: str) -> int:
    return 1000 * seed + SPLIT_OFFSETS[split]
