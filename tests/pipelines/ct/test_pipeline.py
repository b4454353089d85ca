"""The CT pipeline with the real model service: windows of concurrent studies share
the dynamic batcher's batches, and a deadline is kept."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from aidx.inference.cpu_stage import CpuStage
from aidx.inference.errors import DeadlineExceeded
from aidx.inference.reports import ReportStore
from aidx.inference.serving import ModelService
from aidx.pipelines.ct import synthetic
from aidx.pipelines.ct.pipeline import CtPipeline, window_config
from tests.conftest import make_settings

SHAPE = (68, 86, 114)
SPACING = (3.5, 3.5, 5.0)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[list[bytes]]:
    out = []
    for seed in range(3):
        phantom = synthetic.generate(np.random.default_rng(seed), SHAPE, SPACING)
        files = synthetic.write_series(phantom, tmp_path_factory.mktemp(f"study{seed}"))
        out.append([f.read_bytes() for f in files])
    return out


async def _with_pipeline(var: Path, work):  # type: ignore[no-untyped-def]
    settings = make_settings(var, enabled_models=["ct_pneumonia"])
    service = ModelService(settings)
    await service.start()
    cpu = CpuStage(2)
    cpu.start()
    try:
        return await work(CtPipeline(service, ReportStore(settings.reports_dir), cpu), service)
    finally:
        await cpu.stop()
        await service.stop()


def test_concurrent_studies_share_batches(studies: list[list[bytes]], tmp_path: Path) -> None:
    async def work(pipeline: CtPipeline, service: ModelService):  # type: ignore[no-untyped-def]
        window, _ = window_config(service.for_pipeline("ct"))
        reports = await asyncio.gather(*(pipeline.analyze(blobs) for blobs in studies))
        return window, reports

    window, reports = asyncio.run(_with_pipeline(tmp_path, work))
    assert len({r.id for r in reports}) == 3
    # Each study sends `sw_batch_size` windows per request; a bigger batch holds
    # windows of more than one study.
    assert max(r.timings.batch_size for r in reports) > window.sw_batch_size


def test_deadline_passes(studies: list[list[bytes]], tmp_path: Path) -> None:
    async def work(pipeline: CtPipeline, service: ModelService):  # type: ignore[no-untyped-def]
        return await pipeline.analyze(studies[0], timeout_s=0.001)

    with pytest.raises(DeadlineExceeded):
        asyncio.run(_with_pipeline(tmp_path, work))
