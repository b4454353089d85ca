"""The CXR overlay, kept off the analysis path.

Rendering and PNG-encoding the overlay costs more than the findings themselves, and
the radiologist waits for the findings. So the analysis saves only the overlay's
inputs (OVERLAY_INPUTS_FILE: the radiograph at overlay size, the label's activation
map, its probability, the crop and the region boxes; uncompressed, so a few ms), and
the overlay is rendered from them when first used: the PNG cached next to the report
for GET /v1/reports/{id}/overlay.png, the RGB array for the write-back's secondary
capture.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aidx.inference.errors import NotFound
from aidx.inference.reports import Region, ReportStore
from aidx.pipelines.cxr.postprocess import (
    encode_png,
    overlay_grey,
    overlay_scale,
    render_heat_rgba,
    render_overlay_rgb,
)
from aidx.pipelines.cxr.preprocess import CropGeometry

OVERLAY_FILE = "overlay.png"
OVERLAY_INPUTS_FILE = "overlay_inputs.npz"
# The review workspace's two layers: the radiograph, and the heatmap with its boxes.
RADIOGRAPH_FILE = "radiograph.png"
HEAT_LAYER_FILE = "heat_layer.png"


@dataclass(frozen=True)
class OverlayInputs:
    grey: np.ndarray  # uint8 [rows, columns]: the radiograph at overlay size
    cam: np.ndarray | None  # the label's raw activation map; None for a model without one
    probability: float
    geometry: CropGeometry  # the model's crop, original pixels
    scale: float  # overlay pixels per original pixel
    boxes_px: np.ndarray  # float64 [n, 4]: x0, y0, x1, y1 of each region, original pixels

    @classmethod
    def from_analysis(
        cls,
        image01: np.ndarray,
        cam: np.ndarray | None,
        probability: float | None,
        geometry: CropGeometry,
        regions: list[Region],
    ) -> OverlayInputs:
        boxes = [[r.x_min_px, r.y_min_px, r.x_max_px, r.y_max_px] for r in regions]
        return cls(
            grey=overlay_grey(image01),
            cam=None if cam is None else np.asarray(cam, dtype=np.float32),
            # A finding not assessed has no probability: its overlay draws no heat
            # (the heat's opacity scales with the probability).
            probability=0.0 if probability is None else probability,
            geometry=geometry,
            scale=overlay_scale(image01.shape),
            boxes_px=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        )

    def to_npz(self) -> bytes:
        crop = [self.geometry.row0, self.geometry.col0, self.geometry.side_px]
        arrays: dict[str, np.ndarray] = {
            "grey": self.grey,
            "probability": np.asarray(self.probability, np.float64),
            "crop_px": np.asarray(crop, np.int64),
            "scale": np.asarray(self.scale, np.float64),
            "boxes_px": self.boxes_px,
        }
        if self.cam is not None:
            arrays["cam"] = self.cam
        buffer = io.BytesIO()
        # Uncompressed: saving is on the analysis path. (The ignore: numpy's stub lets
        # a ** mapping reach savez's `allow_pickle: bool`.)
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> OverlayInputs:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            row0, col0, side = (int(v) for v in npz["crop_px"])
            return cls(
                grey=np.asarray(npz["grey"], dtype=np.uint8),
                cam=np.asarray(npz["cam"]) if "cam" in npz.files else None,
                probability=float(npz["probability"]),
                geometry=CropGeometry(row0, col0, side),
                scale=float(npz["scale"]),
                boxes_px=np.asarray(npz["boxes_px"], dtype=np.float64),
            )

    def heat_layer(self) -> np.ndarray:
        shape = (int(self.grey.shape[0]), int(self.grey.shape[1]))
        return render_heat_rgba(
            shape, self.cam, self.probability, self.geometry, self.scale, self.boxes_px
        )

    def render(self) -> np.ndarray:
        return render_overlay_rgb(
            self.grey, self.cam, self.probability, self.geometry, self.scale, self.boxes_px
        )


def save_overlay_inputs(store: ReportStore, rid: str, inputs: OverlayInputs) -> None:
    store.put(rid, OVERLAY_INPUTS_FILE, inputs.to_npz())
    # A re-analysis (same source and model, same report id) replaces the inputs: an
    # overlay cached from the previous ones must not be served for them.
    for rendered in (OVERLAY_FILE, RADIOGRAPH_FILE, HEAT_LAYER_FILE):
        store.discard(rid, rendered)


def overlay_rgb(store: ReportStore, rid: str) -> np.ndarray:
    """Report `rid`'s overlay as RGB uint8, rendered from its saved inputs (404
    evidence_not_found when it has none)."""
    data = store.file(rid, OVERLAY_INPUTS_FILE).read_bytes()
    return OverlayInputs.from_npz(data).render()


def overlay_png(store: ReportStore, rid: str) -> Path:
    """Report `rid`'s overlay PNG, rendered and cached on first use. Concurrent first
    uses each write the same bytes atomically, so a reader never sees half a file."""
    try:
        return store.file(rid, OVERLAY_FILE)
    except NotFound:
        pass
    store.put(rid, OVERLAY_FILE, encode_png(overlay_rgb(store, rid)))
    return store.file(rid, OVERLAY_FILE)


def _layer_png(store: ReportStore, rid: str, name: str) -> Path:
    try:
        return store.file(rid, name)
    except NotFound:
        pass
    inputs = OverlayInputs.from_npz(store.file(rid, OVERLAY_INPUTS_FILE).read_bytes())
    layer = inputs.grey if name == RADIOGRAPH_FILE else inputs.heat_layer()
    store.put(rid, name, encode_png(layer))
    return store.file(rid, name)


def radiograph_png(store: ReportStore, rid: str) -> Path:
    """Report `rid`'s radiograph at overlay size (grey PNG), cached on first use."""
    return _layer_png(store, rid, RADIOGRAPH_FILE)


def heat_layer_png(store: ReportStore, rid: str) -> Path:
    """Report `rid`'s heatmap and boxes over transparency (RGBA PNG), cached on first use."""
    return _layer_png(store, rid, HEAT_LAYER_FILE)
