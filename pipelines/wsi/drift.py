"""What the WSI pipeline observes of each slide for drift monitoring
(aidx.inference.drift): the staining, as the optical density of the tissue in the
low-resolution view the tissue mask was made from (per RGB channel, mean and standard
deviation: a stronger or weaker haematoxylin or eosin, another stain protocol or
scanner colour profile moves them), the tissue fraction, the MPP in use and the
scanner's vendor. Values the pipeline already holds: no extra read of the slide."""

from __future__ import annotations

import numpy as np

from aidx.inference.drift import Value
from aidx.pipelines.wsi.analysis import SlideAnalysis
from aidx.pipelines.wsi.tissue import LowRes

CHANNELS = ("r", "g", "b")
MAX_PIXELS = 200_000  # tissue pixels summarised per slide (an even sample past it)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Beer-Lambert optical density per channel, [n, 3] uint8 -> float64 (glass ~0)."""
    return np.asarray(-np.log10((rgb.astype(np.float64) + 1.0) / 256.0))


def stain_statistics(low: LowRes) -> dict[str, Value]:
    """Mean and standard deviation of the tissue's optical density per channel (None
    without tissue: nothing to describe)."""
    tissue = low.rgb[low.mask]
    if len(tissue) > MAX_PIXELS:
        tissue = tissue[:: len(tissue) // MAX_PIXELS + 1]
    found: dict[str, Value] = {}
    od = optical_density(tissue) if len(tissue) else None
    for i, channel in enumerate(CHANNELS):
        found[f"od_mean_{channel}"] = None if od is None else round(float(od[:, i].mean()), 4)
        found[f"od_std_{channel}"] = None if od is None else round(float(od[:, i].std()), 4)
    return found


def slide_observation(result: SlideAnalysis) -> dict[str, Value]:
    """The slide's drift inputs: staining, tissue fraction, MPP and vendor."""
    return {
        **stain_statistics(result.low),
        "tissue_fraction": round(result.low.tissue_fraction, 4),
        "mpp": round(result.info.mpp, 4),
        "vendor": result.info.vendor or "(none)",
    }
