"""The one table that turns an engine error's kind into an HTTP status covers every
AidxError subclass in the codebase, and each answers the status clients saw before
the table existed."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import aidx
from aidx.inference.errors import AidxError, ErrorKind
from aidx.service.handlers import HTTP_STATUS

# What each error answered when the status still lived on the class: it must not move.
STATUS_BEFORE = {
    "aidx.inference.errors.AidxError": 500,
    "aidx.inference.errors.BadRequest": 400,
    "aidx.inference.errors.Unauthorized": 401,
    "aidx.inference.errors.Forbidden": 403,
    "aidx.inference.errors.NotFound": 404,
    "aidx.inference.errors.PayloadTooLarge": 413,
    "aidx.inference.errors.UnsupportedMediaType": 415,
    "aidx.inference.errors.Unprocessable": 422,
    "aidx.inference.errors.QueueFull": 429,
    "aidx.inference.errors.ModelUnavailable": 503,
    "aidx.inference.errors.DeadlineExceeded": 504,
    "aidx.inference.batcher.BatchSizeMismatch": 500,
    "aidx.inference.repository.RepositoryError": 500,
    "aidx.inference.triton_connection.TritonUnavailable": 503,
    "aidx.inference.runtime_triton.TritonModelMismatch": 503,
    "aidx.inference.triton_connection.TritonError": 502,
    "aidx.inference.triton_shm.TritonSharedMemoryUnusable": 503,
    "aidx.integrations.dicom.pull.PacsUnreachable": 503,
    "aidx.integrations.dicom.pull.PacsError": 502,
    "aidx.integrations.dicom.pull.PullUnavailable": 503,
    "aidx.integrations.hl7.message.Hl7Error": 400,
    "aidx.integrations.outbox.store.OutboxConflict": 409,
    "aidx.pipelines.labs.catalogue.CatalogueError": 500,
    "aidx.pipelines.labs.fhir.FhirError": 422,
    "aidx.pipelines.labs.store.Conflict": 409,
    "aidx.pipelines.wsi.slide.SlideReadError": 422,
    "aidx.inference.model_card.CardError": 500,  # new: raised at load, keeps a model out
    "aidx.service.access.AuthThrottled": 429,  # new: too many wrong keys from one address
}


def every_error_class() -> Iterator[type[AidxError]]:
    for module in pkgutil.walk_packages(aidx.__path__, "aidx."):
        importlib.import_module(module.name)  # a subclass exists once its module is loaded
    seen: list[type[AidxError]] = [AidxError]
    while seen:
        cls = seen.pop()
        yield cls
        seen.extend(cls.__subclasses__())


def test_every_error_class_has_a_status_in_the_one_table() -> None:
    found = {f"{c.__module__}.{c.__qualname__}": c for c in every_error_class()}
    for name, cls in found.items():
        assert isinstance(cls.kind, ErrorKind), name
        assert cls.kind in HTTP_STATUS, f"{name}: kind {cls.kind} has no HTTP status"
        assert "status" not in vars(cls), f"{name} sets a status; set its kind instead"
    answered = {name: HTTP_STATUS[cls.kind] for name, cls in found.items()}
    assert answered == STATUS_BEFORE


def test_the_table_maps_every_kind_and_only_service_failures_are_not_refusals() -> None:
    assert set(HTTP_STATUS) == set(ErrorKind)
    for kind, status in HTTP_STATUS.items():
        # What pull skips and the C-STORE intake quarantines: 4xx except "busy" (429).
        assert kind.refuses_input == (status < 500 and status != 429), kind
