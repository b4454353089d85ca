"""Each content check alone, on real radiographs (pydicom-data), copies with edited
headers, and drawn images."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from aidx.inference.assessment import NotAssessedReason, OodPolicy, OodStatus, OodVerdict
from aidx.inference.card_sections import FRONTAL_VIEWS, RadiographView
from aidx.pipelines.cxr.content import (
    check_blank,
    check_chest,
    check_distribution,
    check_view,
    out_of_distribution_warning,
    projection_from_header,
    stored_spread,
)
from aidx.pipelines.cxr.decode import decode_radiograph
from tests.conftest import dicom_bytes
from tests.pipelines.cxr.dicom_copies import edited


def header(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def view_code(code: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "SCT", meaning
    return item


IN = OodVerdict(status=OodStatus.in_distribution, score=0.9, threshold=1.5, method="m")
OUT = OodVerdict(status=OodStatus.out_of_distribution, score=7.0, threshold=1.5, method="m")
NONE = OodVerdict(status=OodStatus.uncalibrated)


# --- blank -----------------------------------------------------------------------


def test_the_real_radiographs_are_not_blank() -> None:
    for name in ("RG1_UNCR.dcm", "RG3_UNCR.dcm"):
        radiograph = decode_radiograph(edited(name, BodyPartExamined=None))
        assert check_blank(radiograph.image01, radiograph.stored_spread) is None


def test_a_flat_image_is_blank() -> None:
    flat = np.full((512, 512), 0.4, np.float32)
    why = check_blank(flat, stored_spread(np.full((512, 512), 1638), 12))
    assert why is not None and why.reason is NotAssessedReason.blank_image
    assert "nothing to judge" in why.message


def test_faint_noise_stretched_to_full_contrast_is_still_blank() -> None:
    """Without a VOI window the display chain stretches any spread to [0, 1]: the
    stored values show that the detector recorded almost nothing."""
    rng = np.random.default_rng(0)
    stored = 2000 + rng.integers(-3, 4, (512, 512))
    stretched = ((stored - stored.min()) / np.ptp(stored)).astype(np.float32)
    assert check_blank(stretched, stored_spread(stored, 12)) is not None


def test_noise_is_not_blank() -> None:
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 4096, (512, 512))
    assert check_blank((stored / 4095).astype(np.float32), stored_spread(stored, 12)) is None


# --- projection ---------------------------------------------------------------------


def test_the_real_chest_cr_is_a_pa_frontal_view() -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes("RG1_UNCR.dcm")), stop_before_pixels=True)
    projection = projection_from_header(ds)
    assert projection.view is RadiographView.PA and projection.frontal is True
    assert projection.sources == ("ViewPosition", "PatientOrientation")
    assert check_view(projection, FRONTAL_VIEWS) is None


@pytest.mark.parametrize(
    ("values", "view"),
    [
        ({"ViewPosition": "LL"}, RadiographView.LL),
        ({"ViewPosition": "LATERAL"}, RadiographView.LATERAL),
        ({"ViewPosition": "RLO"}, RadiographView.OBLIQUE),
        ({"ViewCodeSequence": [view_code("399198007", "right lateral")]}, RadiographView.RL),
        ({"ViewCodeSequence": [view_code("399182000", "oblique")]}, RadiographView.OBLIQUE),
    ],
)
def test_lateral_and_oblique_views_are_unsupported(
    values: dict[str, object], view: RadiographView
) -> None:
    projection = projection_from_header(header(**values))
    assert projection.view is view and projection.frontal is False
    why = check_view(projection, FRONTAL_VIEWS)
    assert why is not None and why.reason is NotAssessedReason.unsupported_view
    assert view.value in why.message and "PA/AP" in why.message


def test_patient_orientation_alone_tells_frontal_from_lateral() -> None:
    lateral = projection_from_header(header(PatientOrientation=["A", "F"]))
    assert lateral.view is None and lateral.frontal is False
    assert check_view(lateral, FRONTAL_VIEWS) is not None
    frontal = projection_from_header(header(PatientOrientation=["R", "F"]))
    assert frontal.frontal is True and check_view(frontal, FRONTAL_VIEWS) is None


def test_a_view_the_card_does_not_list_is_unsupported() -> None:
    ap = projection_from_header(header(ViewCodeSequence=[view_code("399348003", "AP")]))
    assert ap.view is RadiographView.AP
    assert check_view(ap, (RadiographView.PA,)) is not None
    assert check_view(ap, FRONTAL_VIEWS) is None


def test_a_header_that_contradicts_itself_is_unsupported() -> None:
    """ViewPosition PA, but the rows run anterior-posterior: a lateral."""
    projection = projection_from_header(header(ViewPosition="PA", PatientOrientation=["P", "F"]))
    assert projection.conflict
    why = check_view(projection, FRONTAL_VIEWS)
    assert why is not None and "contradicts" in why.message


def test_a_silent_header_leaves_the_view_to_the_image() -> None:
    projection = projection_from_header(header())
    assert projection.frontal is None and projection.sources == ()
    assert check_view(projection, FRONTAL_VIEWS) is None


# --- chest and distribution ------------------------------------------------------------


def test_a_stated_chest_needs_no_image_evidence() -> None:
    assert check_chest(True, OUT) is None and check_chest(True, NONE) is None


def test_without_body_part_the_gate_decides_whether_it_is_a_chest() -> None:
    assert check_chest(False, IN) is None
    unlike = check_chest(False, OUT)
    assert unlike is not None and unlike.reason is NotAssessedReason.not_chest
    assert (
        "BodyPartExamined is absent" in unlike.message and "7.0 > threshold 1.5" in unlike.message
    )
    unchecked = check_chest(False, NONE)
    assert unchecked is not None and unchecked.reason is NotAssessedReason.not_chest
    assert "no out-of-distribution reference" in unchecked.message


def test_out_of_distribution_is_not_assessed_and_the_warning_says_why() -> None:
    assert check_distribution(IN) is None and check_distribution(NONE) is None
    why = check_distribution(OUT)
    assert why is not None and why.reason is NotAssessedReason.out_of_distribution
    warning = out_of_distribution_warning(OUT.model_copy(update={"policy": OodPolicy.warn}))
    assert warning.startswith("OUT OF DISTRIBUTION") and "do not rely" in warning


def test_the_card_says_which_views_the_model_supports() -> None:
    from aidx.inference.model_card import card_from, parse_card_text
    from aidx.inference.repository import parse_config
    from tests.conftest import MODELS

    folder = MODELS / "cxr_pneumonia"
    config = parse_config(folder / "config.pbtxt")
    front, body = parse_card_text((folder / "card.md").read_text())
    default = card_from(front, body, config).cxr
    assert default is not None and default.views == FRONTAL_VIEWS  # PA and AP
    pa_only = front.model_copy(update={"views": (RadiographView.PA,)})
    card = card_from(pa_only, body, config).cxr
    assert card is not None and card.views == (RadiographView.PA,)
