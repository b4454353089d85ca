"""The inputs of `aidx models drift-reference`, per pipeline: each reference input
analysed as the service would (the model served by a ModelService, the pipeline's own
steps), as its drift observation (aidx.inference.drift). Inputs a pipeline refuses
are skipped and said."""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from rich.console import Console
from rich.progress import track

from aidx.inference.cpu_stage import CpuStage
from aidx.inference.drift import Observation, observation_of
from aidx.inference.errors import AidxError
from aidx.inference.model_card import Pipeline
from aidx.inference.reports import Report, ReportStore
from aidx.inference.serving import ModelService
from aidx.inference.settings import Settings

T = TypeVar("T")
In_contra = TypeVar("In_contra", contravariant=True)
Inputs = tuple[Iterator[Any], str]  # the inputs (as the service receives them), what they are
LAB_BATCH = 256  # specimens screened per call (one wave: each its own patient)


class NoReferenceInputs(ValueError):
    """The pipeline has no reference inputs of the kind asked for."""


class Analyser(Protocol[In_contra]):
    async def analyze(self, data: In_contra) -> Report: ...


def _tracked(items: Iterable[T], total: int | None, console: Console) -> Iterable[T]:
    return track(items, total=total, description="analysing", console=console)


MakeAnalyser = Callable[[ModelService, Settings, ReportStore], "Analyser[Any]"]


def _cxr(service: ModelService, settings: Settings, reports: ReportStore) -> Analyser[Any]:
    from aidx.pipelines.cxr.pipeline import CxrPipeline

    return CxrPipeline(service, reports, CpuStage(1), settings.ood_policy)


def _ct(service: ModelService, settings: Settings, reports: ReportStore) -> Analyser[Any]:
    from aidx.pipelines.ct.pipeline import CtPipeline

    return CtPipeline(service, reports, CpuStage(1), settings.ood_policy)


class _SlideReports:
    """The WSI pipeline as an analyser of reports (its evidence files are not kept)."""

    def __init__(self, service: ModelService) -> None:
        from aidx.pipelines.wsi.pipeline import WsiPipeline

        self.pipeline = WsiPipeline(service)

    async def analyze(self, data: Any) -> Report:
        return (await self.pipeline.analyze(data)).report


def _wsi(service: ModelService, settings: Settings, reports: ReportStore) -> Analyser[Any]:
    return _SlideReports(service)


@dataclass(frozen=True)
class ImagingInputs:
    """An imaging pipeline's reference inputs: its `drift_sets` module (with
    `folder_inputs(folder)` and `synthetic_inputs(seed, n)`, each giving the inputs
    and what they are) and how its pipeline is made (as the service makes it)."""

    package: str  # e.g. aidx.pipelines.cxr
    make: MakeAnalyser

    def inputs(self, dataset: Path | None, synthetic: int | None, seed: int) -> Inputs:
        sets = importlib.import_module(f"{self.package}.drift_sets")
        if dataset is not None:
            return cast(Inputs, sets.folder_inputs(dataset))
        return cast(Inputs, sets.synthetic_inputs(seed, synthetic or 0))


# imported on use: each pulls its own stack
IMAGING: dict[Pipeline, ImagingInputs] = {
    Pipeline.cxr: ImagingInputs("aidx.pipelines.cxr", _cxr),
    Pipeline.ct: ImagingInputs("aidx.pipelines.ct", _ct),
    Pipeline.wsi: ImagingInputs("aidx.pipelines.wsi", _wsi),
}


async def observations(
    pipeline: Pipeline,
    settings: Settings,
    *,
    dataset: Path | None,
    synthetic: int | None,
    seed: int,
    console: Console,
) -> tuple[list[Observation], str]:
    """The observations of the reference inputs and what they are (for the card)."""

    service = ModelService(settings)
    await service.start()
    try:
        imaging = IMAGING.get(pipeline)
        if imaging is not None:
            return await _imaging(imaging, service, settings, dataset, synthetic, seed, console)
        if pipeline is Pipeline.labs and synthetic is not None:
            return await _labs(service, settings, synthetic, seed, console)
        raise NoReferenceInputs(f"no {pipeline.value} reference inputs of that kind")
    finally:
        await service.stop()


async def _imaging(
    imaging: ImagingInputs,
    service: ModelService,
    settings: Settings,
    dataset: Path | None,
    synthetic: int | None,
    seed: int,
    console: Console,
) -> tuple[list[Observation], str]:
    inputs, what = imaging.inputs(dataset, synthetic, seed)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = imaging.make(service, settings, ReportStore(Path(tmp)))
        found = await _analysed(pipeline, inputs, synthetic, console)
    return found, what


async def _analysed(
    pipeline: Analyser[T], inputs: Iterator[T], total: int | None, console: Console
) -> list[Observation]:
    found: list[Observation] = []
    for data in _tracked(inputs, total, console):
        try:
            found.append(observation_of(await pipeline.analyze(data)))
        except AidxError as exc:
            console.print(f"[yellow]skipped an input: {exc.code}[/yellow]")
    return found


async def _labs(
    service: ModelService, settings: Settings, synthetic: int, seed: int, console: Console
) -> tuple[list[Observation], str]:
    """The recipe's held-out panels screened by the labs pipeline (a throwaway store:
    each specimen its own patient, so no history), the specimens the model scored."""
    from aidx.inference.store import create_store, init_store
    from aidx.pipelines.labs import drift_sets
    from aidx.pipelines.labs.catalogue import load_catalogue
    from aidx.pipelines.labs.drift import specimen_observation
    from aidx.pipelines.labs.screening import LabScreener
    from aidx.pipelines.labs.store import LabStore

    specimens, what = drift_sets.synthetic_inputs(seed, synthetic)
    found: list[Observation] = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_store(f"sqlite:///{tmp}/labs.db")
        init_store(engine)
        screener = LabScreener(load_catalogue(), LabStore(engine), service)
        batches = range(0, len(specimens), LAB_BATCH)
        for start in _tracked(batches, len(batches), console):
            outcomes = await screener.analyze(specimens[start : start + LAB_BATCH])
            found.extend(specimen_observation(o) for o in outcomes if o.anomaly is not None)
        engine.dispose()
    return found, what
