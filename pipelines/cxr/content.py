"""Content checks on a radiograph before any model judges it, by the image and not
only the header: a blank image, a view the model does not support, an image that
may not be a chest, an image unlike the model's training data.

Each check is a pure function of the decoded image, its header facts and the
out-of-distribution verdict, and answers None (the check passed) or why the
findings are not assessed. An input that is not what the route takes at all (not a
radiograph, an explicitly other body part, colour, too small) is refused earlier,
in decode.py; these checks are for radiographs of the right kind that the model
still cannot judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom

from aidx.inference.assessment import NotAssessed, NotAssessedReason, OodStatus, OodVerdict
from aidx.inference.card_sections import RadiographView

# Blank: the middle 98% of the values span less than this share of their range.
BLANK_MAX_STORED_SPREAD = 0.005  # of the stored bit range (12 bits: 20 grey levels)
BLANK_MAX_DISPLAY_SPREAD = 0.02  # of the display range [0, 1], after the VOI window

# ViewCodeSequence (DICOM CID 4010, SNOMED CT) -> view
_VIEW_CODES = {
    "272479007": RadiographView.PA,  # postero-anterior
    "399348003": RadiographView.AP,  # antero-posterior
    "399173006": RadiographView.LL,  # left lateral
    "399198007": RadiographView.RL,  # right lateral
    "399067008": RadiographView.LATERAL,  # lateral
}
# ViewPosition values (and common non-standard spellings) -> view
_VIEW_POSITIONS = {
    "PA": RadiographView.PA,
    "AP": RadiographView.AP,
    "LL": RadiographView.LL,
    "LLD": RadiographView.LL,  # left lateral decubitus
    "RL": RadiographView.RL,
    "RLD": RadiographView.RL,
    "LAT": RadiographView.LATERAL,
    "LATERAL": RadiographView.LATERAL,
}


@dataclass(frozen=True)
class Projection:
    """What the header says of the projection: per source, frontal or not."""

    view: RadiographView | None  # the exact view, when a source names it
    frontal: bool | None  # None: the header is silent
    sources: tuple[str, ...]  # the attributes that said so
    conflict: bool = False  # two sources disagree (frontal vs not)

    def describe(self) -> str:
        what = self.view.value if self.view else ("frontal" if self.frontal else "not frontal")
        return f"{what} (from {', '.join(self.sources)})"


def _view_of_code(ds: pydicom.Dataset) -> RadiographView | None:
    for item in ds.get("ViewCodeSequence", []) or []:
        code = str(item.get("CodeValue", "") or item.get("LongCodeValue", ""))
        if code in _VIEW_CODES:
            return _VIEW_CODES[code]
        if code:
            return RadiographView.OBLIQUE  # another CID 4010 view: oblique, axial...
    return None


def _view_of_position(ds: pydicom.Dataset) -> RadiographView | None:
    text = str(ds.get("ViewPosition", "") or "").strip().upper()
    if not text:
        return None
    return _VIEW_POSITIONS.get(text, RadiographView.OBLIQUE if "O" in text else None)


def _frontal_by_orientation(ds: pydicom.Dataset) -> bool | None:
    """PatientOrientation's row direction: left/right across the image is a frontal
    view, anterior/posterior a lateral one."""
    orientation = ds.get("PatientOrientation")
    if not orientation or len(orientation) < 1:
        return None
    row = str(orientation[0]).upper()
    if row[:1] in ("L", "R"):
        return True
    if row[:1] in ("A", "P"):
        return False
    return None


def projection_from_header(ds: pydicom.Dataset) -> Projection:
    said: list[tuple[str, RadiographView | None, bool]] = []
    for source, view in (
        ("ViewPosition", _view_of_position(ds)),
        ("ViewCodeSequence", _view_of_code(ds)),
    ):
        if view is not None:
            said.append((source, view, view.frontal))
    by_orientation = _frontal_by_orientation(ds)
    if by_orientation is not None:
        said.append(("PatientOrientation", None, by_orientation))
    if not said:
        return Projection(view=None, frontal=None, sources=())
    view = next((v for _, v, _ in said if v is not None), None)
    frontal = {f for _, _, f in said}
    return Projection(
        view=view,
        frontal=said[0][2],
        sources=tuple(source for source, _, _ in said),
        conflict=len(frontal) > 1,
    )


SPREAD_SAMPLE_PX = 1 << 18  # a regular subsample of this many pixels is enough
_COUNT_CHUNK = 1 << 18  # pixels counted at a time (a 2 MB copy in machine integers)


def percentiles_of_counts(
    values: np.ndarray, counts: np.ndarray, q: tuple[float, ...]
) -> list[float]:
    """np.percentile (linear) of an image given as its distinct `values` and each
    one's pixel count: the same order statistics and numpy's interpolation."""
    order = np.argsort(values, kind="stable")
    ranked, cumulative = values[order], np.cumsum(counts[order])
    n = int(cumulative[-1])
    out = []
    for virtual in (n - 1) * (np.asarray(q, dtype=np.float64) / 100):
        below = int(np.floor(virtual))
        a, b = (ranked[np.searchsorted(cumulative, r, side="right")]
                for r in (below, min(below + 1, n - 1)))  # fmt: skip
        gamma = virtual - below  # numpy's _lerp, kept exactly
        out.append(float(b - (b - a) * (1 - gamma) if gamma >= 0.5 else a + (b - a) * gamma))
    return out


def robust_spread(values: np.ndarray) -> float:
    """The span of the middle 98% of `values` (1st to 99th percentile), on a regular
    subsample of about SPREAD_SAMPLE_PX pixels. Integers of up to 16 bits are
    counted (a histogram, not a partial sort): the same percentiles, faster."""
    step = max(1, int(np.sqrt(values.size / SPREAD_SAMPLE_PX)))
    sample = values[::step, ::step]
    if sample.dtype.kind in "iu" and sample.dtype.itemsize <= 2:
        lo, hi = _counted_percentiles(sample, (1.0, 99.0))
    else:
        lo, hi = np.percentile(sample, (1.0, 99.0))
    return float(hi - lo)


def code_counts(codes: np.ndarray, size: int) -> np.ndarray:
    """np.bincount(codes.ravel(), minlength=size) of a 2-D array of unsigned codes,
    counted a block of rows at a time: bincount's copy of its input, in machine
    integers, stays small (a whole image's would be 8 bytes a pixel, freshly paged)."""
    counts = np.zeros(size, dtype=np.intp)
    rows = max(1, _COUNT_CHUNK // max(1, codes.shape[1]))
    for start in range(0, codes.shape[0], rows):
        counts += np.bincount(codes[start : start + rows].ravel(), minlength=size)
    return counts


def _counted_percentiles(sample: np.ndarray, q: tuple[float, ...]) -> list[float]:
    """np.percentile of a 2-D sample of integers of up to 16 bits, from their
    histogram. Signed values are counted by their bits with the sign bit flipped:
    the same order."""
    unsigned = np.dtype(f"u{sample.itemsize}")
    offset = 1 << (8 * sample.itemsize - 1) if sample.dtype.kind == "i" else 0
    codes = sample.view(unsigned) ^ unsigned.type(offset) if offset else sample.view(unsigned)
    counts = code_counts(codes, 1 << (8 * sample.itemsize))
    seen = np.flatnonzero(counts)
    return percentiles_of_counts((seen - offset).astype(np.float64), counts[seen], q)


def stored_spread(stored: np.ndarray, bits_stored: int) -> float:
    """The stored values' robust spread as a share of the bit range."""
    return robust_spread(stored) / float(2**bits_stored - 1)


def check_blank(image01: np.ndarray, stored_fraction: float) -> NotAssessed | None:
    """A blank or near-constant image: nothing to judge. Judged on the stored values
    (a display window without VOI stretches even faint noise to full contrast) and
    on the display image (a window may flatten what the detector recorded)."""
    display = robust_spread(image01)
    if stored_fraction < BLANK_MAX_STORED_SPREAD or display < BLANK_MAX_DISPLAY_SPREAD:
        return NotAssessed(
            reason=NotAssessedReason.blank_image,
            message=(
                "the image is blank or nearly so: its pixel values span "
                f"{stored_fraction:.2%} of the stored range and {display:.2%} of the "
                "display range; there is nothing to judge"
            ),
        )
    return None


def check_view(projection: Projection, supported: Sequence[RadiographView]) -> NotAssessed | None:
    """A view the model's card does not list (e.g. a lateral for a frontal model)."""
    names = "/".join(v.value for v in supported)
    if projection.conflict:
        return NotAssessed(
            reason=NotAssessedReason.unsupported_view,
            message=(
                f"the header contradicts itself on the projection ({', '.join(projection.sources)}"
                f" disagree on frontal vs lateral); this model supports only {names}"
            ),
        )
    if projection.view is not None:
        ok = projection.view in supported
    elif projection.frontal is not None:
        ok = projection.frontal and any(v.frontal for v in supported)
    else:
        return None  # the header is silent: the image decides (the OOD gate)
    if ok:
        return None
    return NotAssessed(
        reason=NotAssessedReason.unsupported_view,
        message=f"the view is {projection.describe()}; this model supports only {names}",
    )


def _ood_words(verdict: OodVerdict) -> str:
    return f"OOD score {verdict.score} > threshold {verdict.threshold}, {verdict.method}"


def check_chest(body_part_stated: bool, verdict: OodVerdict) -> NotAssessed | None:
    """Without BodyPartExamined, only the image can say it is a chest radiograph:
    here, the model's OOD gate (fitted on the chest radiographs the model was made
    for). An image outside it, or no gate to ask, is not assessed."""
    if body_part_stated or verdict.status is OodStatus.in_distribution:
        return None
    if verdict.status is OodStatus.uncalibrated:
        basis = (
            "this model has no out-of-distribution reference to confirm from the image "
            "that it is a chest radiograph"
        )
    else:
        basis = (
            "the image is unlike the chest radiographs this model was made for "
            f"({_ood_words(verdict)}): it may not be a chest radiograph"
        )
    return NotAssessed(
        reason=NotAssessedReason.not_chest, message=f"BodyPartExamined is absent and {basis}"
    )


def check_distribution(verdict: OodVerdict) -> NotAssessed | None:
    """Out of distribution: findings not assessed (under the `not_assessed` policy)."""
    if verdict.status is not OodStatus.out_of_distribution:
        return None
    return NotAssessed(
        reason=NotAssessedReason.out_of_distribution,
        message=(
            "the image is unlike the images this model was trained and validated on "
            f"({_ood_words(verdict)}): its findings would not be reliable"
        ),
    )


def out_of_distribution_warning(verdict: OodVerdict) -> str:
    """What a report scored under the `warn` policy says first."""
    return (
        "OUT OF DISTRIBUTION: the image is unlike the images this model was trained and "
        f"validated on ({_ood_words(verdict)}); the findings are scored only because this "
        "site's policy is `warn`: do not rely on them"
    )


def silent_projection_warning(verdict: OodVerdict) -> str:
    """A header silent on the projection: what, if anything, judged it from the image."""
    judged = (
        "it was assumed frontal and not checked"
        if verdict.status is OodStatus.uncalibrated
        else "only the out-of-distribution gate judged from the image that it is a view "
        "like the model's"
    )
    return (
        "the projection is not stated in the header (ViewPosition, ViewCodeSequence, "
        f"PatientOrientation): {judged}"
    )
