"""DICOM intake: a C-STORE SCP (pynetdicom) that the PACS routes studies to.

Each instance is written to var/incoming/<StudyInstanceUID>/<SOPInstanceUID>.dcm
(atomically, fsynced) before C-STORE success is answered; what cannot be stored
(garbage, no UIDs) is refused with a failure status and the good instances of the
same association are unaffected. A study is processed once it is stable (no new
instance for `stable_s`, like Orthanc's StableAge): each instance is routed by the
rules (routing.py) to its pipeline, whose report goes to the outbox; instances no
rule wants, or that the pipeline refuses, are moved to var/quarantine/ with the
reason logged (by UID, never patient data). Studies left on disk by a previous
process are picked up again at start (the outbox makes that idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from aidx.inference.dicom_input import read_dicom
from aidx.inference.errors import AidxError
from aidx.inference.files import atomic_write, make_folders
from aidx.inference.settings_sections import DicomSettings
from aidx.integrations.dicom.routing import FILE_PIPELINES, SERIES_PIPELINES, Rule, route

log = logging.getLogger(__name__)
_DEFAULTS = DicomSettings()  # one default per value: the settings' (AIDX_DICOM_*)
_UID = re.compile(r"^[0-9.]{1,64}$")
CANNOT_UNDERSTAND = 0xC210
OUT_OF_RESOURCES = 0xA700

# (pipeline, an instance's bytes or a whole series' instances (their files, for a
# FILE_PIPELINES series), when the first of them arrived in POSIX seconds) -> report
Analyze = Callable[[str, "bytes | list[bytes] | list[Path]", float], Awaitable[Any]]


class StoreScp:
    def __init__(
        self,
        var_dir: Path,
        *,
        ae_title: str,
        port: int,
        stable_s: float,
        rules: list[Rule],
        analyze: Analyze,
        host: str = _DEFAULTS.scp_host,
    ) -> None:
        self.incoming = var_dir / "incoming"
        self.quarantine = var_dir / "quarantine"
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.stable_s = stable_s
        self.rules = rules
        self.analyze = analyze
        self._last_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self.processed: list[str] = []  # study UIDs, for observability and tests

    # --- the SCP side (pynetdicom's threads) ---------------------------------------
    def _on_store(self, event: Any) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            study, sop = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
        except Exception as exc:
            log.warning("dicom intake: refused an unreadable instance (%s)", type(exc).__name__)
            return CANNOT_UNDERSTAND
        if not (_UID.match(study) and _UID.match(sop)):
            log.warning("dicom intake: refused an instance with malformed UIDs")
            return CANNOT_UNDERSTAND
        buffer = io.BytesIO()
        try:
            ds.save_as(buffer, enforce_file_format=True)
            atomic_write(self.incoming / study / f"{sop}.dcm", buffer.getvalue())
        except OSError:
            log.exception("dicom intake: could not store an instance")
            return OUT_OF_RESOURCES
        except Exception as exc:
            log.warning("dicom intake: refused an instance (%s)", type(exc).__name__)
            return CANNOT_UNDERSTAND
        with self._lock:
            self._last_seen[study] = time.monotonic()
        return 0x0000

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        make_folders(self.incoming)
        with self._lock:  # what a previous process left: process it again
            for study in self.incoming.iterdir():
                if study.is_dir():
                    self._last_seen.setdefault(study.name, time.monotonic())
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        handlers: list[Any] = [(evt.EVT_C_STORE, self._on_store)]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        self.port = self._server.server_address[1]
        self._task = asyncio.create_task(self._watch(), name="dicom-stability")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._server is not None:
            await asyncio.to_thread(self._server.shutdown)

    # --- stability and routing ------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.stable_s / 4))
            now = time.monotonic()
            with self._lock:
                stable = [s for s, t in self._last_seen.items() if now - t >= self.stable_s]
            for study in stable:
                try:
                    await self.process_study(study)
                except Exception:
                    log.exception("dicom intake: study processing failed; will retry")
                    with self._lock:
                        self._last_seen[study] = time.monotonic()
                    continue
                with self._lock:
                    if self._last_seen.get(study, now) <= now:  # nothing new meanwhile
                        self._last_seen.pop(study, None)

    async def process_study(self, study: str) -> None:
        folder = self.incoming / study
        series: dict[tuple[str, str], list[Path]] = {}
        for path in sorted(folder.glob("*.dcm")) if folder.is_dir() else []:
            data = await asyncio.to_thread(path.read_bytes)
            try:
                ds = read_dicom(data, stop_before_pixels=True)
            except AidxError as exc:  # damaged on disk: the shared code says how
                await asyncio.to_thread(self._quarantine, path, exc.code)
                continue
            rule = route(self.rules, ds)
            if rule is None:
                await asyncio.to_thread(self._quarantine, path, "no routing rule matches")
            elif rule.pipeline in SERIES_PIPELINES:  # analysed once its series is gathered
                key = (rule.pipeline, str(ds.get("SeriesInstanceUID", "")))
                series.setdefault(key, []).append(path)
            else:
                await self._analyze(rule.pipeline, [path], data)
        for (pipeline, _), paths in series.items():
            if pipeline in FILE_PIPELINES:  # e.g. a whole slide: its files, not in memory
                await self._analyze(pipeline, paths, paths)
                continue
            blobs = [await asyncio.to_thread(p.read_bytes) for p in paths]
            await self._analyze(pipeline, paths, blobs)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        self.processed.append(study)

    async def _analyze(
        self, pipeline: str, paths: list[Path], data: bytes | list[bytes] | list[Path]
    ) -> None:
        """Run one instance (or one whole series) through its pipeline; what the
        pipeline refuses is quarantined with the reason, the rest leaves incoming/. A
        failure of the service (busy, model down) is raised: the study is retried."""
        received_s = await asyncio.to_thread(_first_arrival, paths)
        try:
            await self.analyze(pipeline, data, received_s)
        except AidxError as exc:
            if not exc.refuses_input:
                raise
            for path in paths:
                await asyncio.to_thread(self._quarantine, path, f"{pipeline}: {exc.code}")
            return
        for path in paths:
            path.unlink()

    def _quarantine(self, path: Path, reason: str) -> None:
        target = self.quarantine / path.parent.name
        make_folders(target)
        shutil.move(str(path), target / path.name)
        atomic_write(target / f"{path.stem}.reason.txt", (reason + "\n").encode())
        log.info("dicom intake: quarantined %s (%s)", path.stem, reason)


def _first_arrival(paths: list[Path]) -> float:
    """When the first of `paths` arrived: each instance's file is written as it does."""
    return min(path.stat().st_mtime for path in paths)


def scp_from(dicom: DicomSettings, var_dir: Path, pipelines: dict[str, Any]) -> StoreScp | None:
    """The SCP the DICOM section asks for (None when its `scp_port` is unset), keeping
    studies under `var_dir`; `pipelines` maps a rule's pipeline name to an object with
    `analyze(bytes)`."""
    from aidx.integrations.dicom.routing import load_rules

    if dicom.scp_port is None:
        return None
    rules = load_rules(dicom.routing_rules)
    unknown = {r.pipeline for r in rules} - set(pipelines)
    if unknown:
        raise ValueError(f"routing rules name unknown pipelines: {sorted(unknown)}")

    async def analyze(
        pipeline: str, data: bytes | list[bytes] | list[Path], received_s: float
    ) -> Any:
        return await pipelines[pipeline].analyze(data, received_at=received_s)

    return StoreScp(var_dir, ae_title=dicom.ae_title, host=dicom.scp_host,
                    port=dicom.scp_port, stable_s=dicom.stable_s,
                    rules=rules, analyze=analyze)  # fmt: skip
