"""The CT model's OOD gate: the committed reference on fresh chest phantoms and the
suite's phantom series (in distribution), on each drawn out-of-distribution kind
and on pydicom-data's real head, abdominal and MR slices as series (out); through
the pipeline under both policies (real DICOM, the real batcher and model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from aidx.inference.assessment import NotAssessedReason, OodPolicy, OodStatus
from aidx.inference.cpu_stage import CpuStage
from aidx.inference.model_card import load_card
from aidx.inference.ood import OodGate, gate_for
from aidx.inference.reports import ReportStore
from aidx.inference.repository import parse_config
from aidx.inference.serving import ModelService
from aidx.pipelines.ct import ood_sets, synthetic
from aidx.pipelines.ct.pipeline import CtPipeline
from aidx.pipelines.ct.preprocess import to_model_grid
from aidx.pipelines.ct.report import CtReport
from aidx.pipelines.ct.series import assemble_bytes
from tests.conftest import MODELS, make_settings
from tests.pipelines.ct.conftest import replicated_series

FOLDER = MODELS / "ct_pneumonia"


@pytest.fixture(scope="module")
def gate() -> OodGate:
    card = load_card(FOLDER / "card.md", parse_config(FOLDER / "config.pbtxt"))
    found = gate_for(FOLDER, card)
    assert found is not None and card.ood is not None
    assert card.ood.false_rejection_rate <= 0.05
    return found


def score(gate: OodGate, hu: np.ndarray, affine: np.ndarray) -> float:
    return gate.score(to_model_grid(hu.astype(np.float32), affine, ood_sets.SPACING_MM).image)


def test_fresh_chest_phantoms_are_in_distribution(gate: OodGate) -> None:
    scores = [score(gate, p.hu, p.affine_lps) for p in
              (ood_sets.chest_phantom(987_654, i) for i in range(6))]  # fmt: skip
    assert max(scores) <= gate.threshold, scores


def test_the_suite_phantom_series_is_in_distribution(
    gate: OodGate, small_blobs: list[bytes]
) -> None:
    volume = assemble_bytes(small_blobs)
    assert score(gate, volume.hu, volume.affine_lps) <= gate.threshold


@pytest.mark.parametrize("kind", list(ood_sets._DRAWN))
def test_each_drawn_kind_is_flagged(gate: OodGate, kind: str) -> None:
    draw, _ = ood_sets._DRAWN[kind]
    rng = np.random.default_rng([4321, len(kind)])
    scores = [score(gate, *draw(rng)) for _ in range(3)]
    assert min(scores) > gate.threshold, scores


@pytest.mark.parametrize(
    "name", ["693_UNCR.dcm", "J2K_pixelrep_mismatch.dcm", "explicit_VR-UN.dcm", "MR_small.dcm"]
)
def test_real_slices_of_other_parts_and_modalities_are_flagged(gate: OodGate, name: str) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None
    assert score(gate, *ood_sets.slice_series(Path(path), 12)) > gate.threshold


def analyse(var: Path, blobs: list[bytes], policy: OodPolicy) -> CtReport:
    async def work() -> CtReport:
        settings = make_settings(var, enabled_models=["ct_pneumonia"])
        service = ModelService(settings)
        await service.start()
        cpu = CpuStage(1)
        cpu.start()
        try:
            pipeline = CtPipeline(service, ReportStore(settings.reports_dir), cpu, policy)
            return await pipeline.analyze(blobs)
        finally:
            await cpu.stop()
            await service.stop()

    return asyncio.run(work())


@pytest.fixture(scope="module")
def noisy_series(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """A chest phantom with lungs but under 250 HU of noise: unlike the model's data."""
    phantom = synthetic.generate(
        np.random.default_rng(11), shape_kji=(24, 64, 80), spacing_mm=(5.0, 5.0, 10.0),
        noise_hu=250.0,
    )  # fmt: skip
    paths = synthetic.write_series(phantom, tmp_path_factory.mktemp("noisy"))
    return [p.read_bytes() for p in paths]


def test_a_series_out_of_distribution_is_not_assessed(
    noisy_series: list[bytes], tmp_path: Path
) -> None:
    report = analyse(tmp_path, noisy_series, OodPolicy.not_assessed)
    (finding,) = report.findings
    assert not finding.assessed and finding.probability is None and finding.present is None
    assert finding.not_assessed_reason is NotAssessedReason.out_of_distribution
    assert report.ood is not None and report.ood.status is OodStatus.out_of_distribution
    assert report.ood.score is not None and report.ood.threshold is not None
    assert report.ood.score > report.ood.threshold
    assert report.lesions == [] and report.timings.compute_ms == 0.0  # the model never ran


def test_under_warn_it_is_scored_with_the_warning_first(
    noisy_series: list[bytes], tmp_path: Path
) -> None:
    report = analyse(tmp_path, noisy_series, OodPolicy.warn)
    assert report.findings[0].assessed and report.not_assessed is None
    assert report.ood is not None and report.ood.status is OodStatus.out_of_distribution
    assert report.warnings[0].startswith("OUT OF DISTRIBUTION: the series")


def test_the_phantom_series_is_assessed_under_the_default_policy(
    small_blobs: list[bytes], tmp_path: Path
) -> None:
    report = analyse(tmp_path, small_blobs, OodPolicy.not_assessed)
    assert report.findings[0].assessed and report.not_assessed is None
    assert report.ood is not None and report.ood.status is OodStatus.in_distribution
    assert report.warnings == []


def test_a_head_series_gives_no_lungs_first_and_is_out_of_distribution(
    tmp_path: Path,
) -> None:
    report = analyse(tmp_path, replicated_series("693_UNCR.dcm"), OodPolicy.warn)
    assert report.not_assessed is not None
    assert report.not_assessed.reason is NotAssessedReason.no_lungs
    assert report.ood is not None and report.ood.status is OodStatus.out_of_distribution
