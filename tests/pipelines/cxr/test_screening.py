"""The screening before the model, with the demo model's committed OOD gate, on real
radiographs, edited copies, drawn images and fresh in-distribution phantoms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aidx.inference.assessment import NotAssessedReason, OodPolicy, OodStatus
from aidx.inference.card_sections import FRONTAL_VIEWS
from aidx.inference.ood import OodGate, gate_for
from aidx.inference.repository import load_entry
from aidx.pipelines.cxr.decode import decode_radiograph
from aidx.pipelines.cxr.preprocess import to_model_input
from aidx.pipelines.cxr.screening import Assessment, Screen, screen
from tests.conftest import MODELS, dicom_bytes
from tests.pipelines.cxr.dicom_copies import drawn_cr, edited, phantom_cr

PHANTOM_SEEDS = range(12)


@pytest.fixture(scope="module")
def gate() -> OodGate:
    entry = load_entry(MODELS / "cxr_pneumonia")
    assert entry.problem is None and entry.card is not None and entry.card.ood is not None
    found = gate_for(entry.directory, entry.card)
    assert found is not None
    return found


def assess(
    data: bytes, gate: OodGate | None, policy: OodPolicy = OodPolicy.not_assessed
) -> Assessment:
    radiograph = decode_radiograph(data)
    tensor, _ = to_model_input(radiograph.image01)
    return screen(radiograph, tensor, Screen(gate, FRONTAL_VIEWS, policy))


def reason(assessment: Assessment) -> NotAssessedReason | None:
    return assessment.not_assessed.reason if assessment.not_assessed else None


@pytest.mark.parametrize("seed", PHANTOM_SEEDS)
def test_in_distribution_phantoms_pass(seed: int, gate: OodGate, tmp_path: Path) -> None:
    photometric = "MONOCHROME1" if seed % 2 else "MONOCHROME2"
    data = phantom_cr(seed, tmp_path, photometric=photometric, window=seed % 3 != 0)
    assessment = assess(data, gate)
    assert assessment.not_assessed is None, assessment
    assert assessment.ood.status is OodStatus.in_distribution
    assert assessment.warnings == ()


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"])
def test_the_real_chest_crs_are_out_of_distribution_for_the_demo_model(
    name: str, gate: OodGate
) -> None:
    assessment = assess(dicom_bytes(name), gate)
    assert reason(assessment) is NotAssessedReason.out_of_distribution
    assert assessment.ood.score is not None and assessment.ood.threshold is not None
    assert assessment.ood.score > assessment.ood.threshold


def test_under_warn_the_real_chest_cr_is_scored_with_the_warning_first(gate: OodGate) -> None:
    assessment = assess(dicom_bytes("RG1_UNCR.dcm"), gate, OodPolicy.warn)
    assert assessment.not_assessed is None
    assert assessment.ood.status is OodStatus.out_of_distribution
    assert assessment.ood.policy is OodPolicy.warn
    assert assessment.warnings[0].startswith("OUT OF DISTRIBUTION")


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG3_UNCR.dcm"])
def test_without_body_part_an_image_unlike_a_chest_is_not_assessed(
    name: str, gate: OodGate
) -> None:
    data = edited(name, BodyPartExamined=None)
    for policy in OodPolicy:  # not a question of the OOD policy: nothing says it is a chest
        assert reason(assess(data, gate, policy)) is NotAssessedReason.not_chest


def test_a_lateral_copy_is_an_unsupported_view(gate: OodGate) -> None:
    data = edited("RG1_UNCR.dcm", ViewPosition="LL", PatientOrientation=["A", "F"])
    assert reason(assess(data, gate)) is NotAssessedReason.unsupported_view


def test_a_flat_grey_image_is_blank(gate: OodGate, tmp_path: Path) -> None:
    data = drawn_cr(np.full((512, 512), 0.5), tmp_path, "flat")
    assessment = assess(data, gate)
    assert reason(assessment) is NotAssessedReason.blank_image
    assert assessment.ood.status is OodStatus.out_of_distribution  # the gate agrees


def test_a_noise_image_is_out_of_distribution(gate: OodGate, tmp_path: Path) -> None:
    noise = np.random.default_rng(0).random((600, 600))
    assert reason(assess(drawn_cr(noise, tmp_path, "noise"), gate)) is (
        NotAssessedReason.out_of_distribution
    )


def test_a_ct_slice_labelled_as_a_chest_cr_is_out_of_distribution(gate: OodGate) -> None:
    data = edited("693_UNCR.dcm", Modality="CR", BodyPartExamined="CHEST")
    assert reason(assess(data, gate)) is NotAssessedReason.out_of_distribution


def test_without_a_gate_everything_says_uncalibrated(tmp_path: Path) -> None:
    phantom = assess(phantom_cr(0, tmp_path), None)
    assert phantom.not_assessed is None and phantom.ood.status is OodStatus.uncalibrated
    assert "uncalibrated" in phantom.warnings[0]
    real = assess(dicom_bytes("RG1_UNCR.dcm"), None)
    assert real.not_assessed is None and "uncalibrated" in real.warnings[0]
    # with nothing to confirm it from the image, a header without a body part is not enough
    headless = assess(edited("RG1_UNCR.dcm", BodyPartExamined=None), None)
    assert reason(headless) is NotAssessedReason.not_chest


def test_a_header_silent_on_the_view_is_said(gate: OodGate) -> None:
    data = edited("RG1_UNCR.dcm", ViewPosition=None, PatientOrientation=None)
    assessment = assess(data, gate, OodPolicy.warn)
    assert any("projection is not stated" in w for w in assessment.warnings)
