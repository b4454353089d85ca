"""The one pipeline contract: what every pipeline (CXR, CT, WSI, labs) offers the
layers above it. A pipeline turns one input of the kind it accepts into its typed
report; saving, write-back and audit are the analysis step's, not the pipeline's
(aidx.adapters.analysis)."""

from __future__ import annotations

from typing import Protocol, TypeVar

InputT = TypeVar("InputT", contravariant=True)
ResultT = TypeVar("ResultT", covariant=True)


class Pipeline(Protocol[InputT, ResultT]):
    """`name` is the pipeline's key (model cards' `pipeline:`, routing rules, report
    `pipeline` field); `analyze` takes one input and returns the pipeline's report.

    Accepted inputs: CXR `bytes` (one DICOM instance), CT `Sequence[bytes]` (a
    series), WSI `SlideRequest` (a slide path and its analysis parameters), labs
    `Sequence[SpecimenIn]`."""

    @property
    def name(self) -> str: ...

    async def analyze(
        self, data: InputT, *, priority: int | None = None, timeout_s: float | None = None
    ) -> ResultT: ...
