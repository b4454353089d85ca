"""Content checks on real series: BodyPartExamined when present, and the lungs a
lesion statement needs (pydicom-data's head CT slices as series, chest phantoms)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aidx.inference.assessment import NotAssessedReason
from aidx.inference.errors import Unprocessable
from aidx.inference.repository import load_entry
from aidx.pipelines.ct import content
from aidx.pipelines.ct.pipeline import find_lungs, preprocess
from aidx.pipelines.ct.series import assemble_bytes
from aidx.service.handlers import http_status
from tests.pipelines.ct.conftest import replicated_series
from tests.pipelines.ct.test_series import edited

MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "ct_pneumonia"


@pytest.mark.parametrize(
    "value",
    ["CHEST", "chest", "THORAX", "LUNG", "CHESTABDOMEN", "CHESTABDPELVIS", "CHEST_TO_PELVIS",
     "NECKCHESTABDOMEN", "WHOLEBODY", "WHOLE BODY", "CT CHEST W/O", "THORACIC", "TORAX"],
)  # fmt: skip
def test_chest_body_parts_pass(value: str) -> None:
    assert content.names_the_chest(value)
    content.check_body_part([value, None, ""])


@pytest.mark.parametrize(
    "value", ["HEAD", "BRAIN", "HEADNECK", "NECK", "ABDOMEN", "PELVIS", "ABDOMENPELVIS",
              "KNEE", "HAND", "EXTREMITY", "TSPINE", "HEART"],
)  # fmt: skip
def test_other_body_parts_are_refused(value: str) -> None:
    with pytest.raises(Unprocessable) as info:
        content.check_body_part(["CHEST", value])
    assert info.value.code == "unsupported_body_part" and http_status(info.value) == 422
    assert info.value.details["body_part"] == value and value in info.value.message


def test_an_absent_body_part_passes() -> None:
    content.check_body_part([None, "", "  "])
    content.check_body_part([])


@pytest.mark.parametrize("body_part", ["HEAD", "BRAIN"])
def test_a_head_series_naming_its_part_is_refused(body_part: str) -> None:
    with pytest.raises(Unprocessable) as info:
        assemble_bytes(replicated_series("693_UNCR.dcm", BodyPartExamined=body_part))
    assert info.value.code == "unsupported_body_part"


def test_a_real_head_series_with_its_own_header_is_refused() -> None:
    """J2K_pixelrep_mismatch.dcm is a real head CT slice (oblique, JPEG 2000) whose
    header says HEAD; it is kept as it is."""
    with pytest.raises(Unprocessable) as info:
        assemble_bytes(replicated_series("J2K_pixelrep_mismatch.dcm", BodyPartExamined="HEAD"))
    assert info.value.code == "unsupported_body_part"
    assert info.value.details["body_part"] == "HEAD"


def test_one_instance_naming_another_part_refuses_the_series(small_blobs: list[bytes]) -> None:
    """The phantom says CHEST; one instance saying PELVIS is enough to refuse."""
    assemble_bytes([edited(b, BodyPartExamined="CHESTABDOMEN") for b in small_blobs])
    with pytest.raises(Unprocessable, match="PELVIS"):
        assemble_bytes([*small_blobs[:-1], edited(small_blobs[-1], BodyPartExamined="PELVIS")])


@pytest.mark.parametrize("name", ["693_UNCR.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_a_head_has_no_lungs(name: str) -> None:
    """Without BodyPartExamined a head series assembles; its sinus and mastoid air is
    far under the minimum, so the finding is not assessed."""
    volume = assemble_bytes(replicated_series(name))
    grid, _ = preprocess(volume, 3.0)
    lungs, _ = find_lungs(grid)
    total = lungs.total_ml(grid.voxel_ml)
    assert total < 50.0
    why = content.lungs_absent(total, 500.0)
    assert why is not None and why.reason == NotAssessedReason.no_lungs
    assert "500 mL" in why.message


def test_the_chest_phantom_has_lungs(small_blobs: list[bytes]) -> None:
    volume = assemble_bytes(small_blobs)
    grid, _ = preprocess(volume, 3.0)
    lungs, _ = find_lungs(grid)
    assert lungs.total_ml(grid.voxel_ml) > 3000.0
    assert content.lungs_absent(lungs.total_ml(grid.voxel_ml), 500.0) is None


def test_the_minimum_is_inclusive() -> None:
    assert content.lungs_absent(500.0, 500.0) is None
    assert content.lungs_absent(499.9, 500.0) is not None


def test_the_demo_card_gives_the_default_minimum() -> None:
    entry = load_entry(MODEL_DIR)
    assert entry.card is not None and entry.card.ct is not None
    assert entry.card.ct.min_lung_ml == 500.0
