"""The recipe's data: phantom `index` of a split, drawn from its own generator, and the
`Case` the model sees (the served preprocessing) with the ground truth to score it."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from aidx.pipelines.cxr import synthetic
from aidx.pipelines.cxr.model import CAM_SIZE, LABELS
from aidx.pipelines.cxr.preprocess import CropGeometry, to_model_input
from aidx.pipelines.cxr.train_recipe import PREVALENCE


@dataclass(frozen=True)
class Case:
    """One phantom as the model sees it, with the ground truth needed to score it."""

    image: np.ndarray  # 1 x 224 x 224 float32, [-1024, 1024]
    labels: np.ndarray  # float32 [len(LABELS)], 1 = present
    geometry: CropGeometry
    cam_target: np.ndarray  # float32 28 x 28: fraction of each cam cell inside the lesion
    pneumonia_mask: np.ndarray | None  # original pixels; None without pneumonia


def draw_sample(split_seed_: int, index: int) -> synthetic.SyntheticCxr:
    """Phantom `index` of the split with seed `split_seed_`: labels drawn at
    PREVALENCE, image size from `synthetic.sample_size_px`."""
    rng = np.random.default_rng([split_seed_, index])
    pneumonia = bool(rng.random() < PREVALENCE["Pneumonia"])
    cardiomegaly = bool(rng.random() < PREVALENCE["Cardiomegaly"])
    size = synthetic.sample_size_px(rng)
    return synthetic.generate(rng, size_px=size, pneumonia=pneumonia, cardiomegaly=cardiomegaly)


def make_case(sample: synthetic.SyntheticCxr) -> Case:
    image, geometry = to_model_input(sample.image01)
    g = geometry
    crop = sample.pneumonia_mask[g.row0 : g.row0 + g.side_px, g.col0 : g.col0 + g.side_px]
    target = F.adaptive_avg_pool2d(torch.from_numpy(crop.astype(np.float32))[None], CAM_SIZE)
    labels = np.array([sample.labels[name] for name in LABELS], dtype=np.float32)
    return Case(
        image=image,
        labels=labels,
        geometry=geometry,
        cam_target=target[0].numpy(),
        pneumonia_mask=sample.pneumonia_mask if sample.pneumonia else None,
    )


def _case_job(job: tuple[int, int]) -> Case:
    return make_case(draw_sample(*job))


def worker_init() -> None:
    torch.set_num_threads(1)


def make_cases(seed_: int, n: int, *, workers: int = 1) -> list[Case]:
    """Cases 0..n-1 of the split with seed `seed_`, in order (the same for any
    number of workers)."""
    jobs = [(seed_, i) for i in range(n)]
    if workers <= 1:
        return [_case_job(job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(workers, initializer=worker_init) as pool:
        return list(pool.imap(_case_job, jobs, chunksize=16))
