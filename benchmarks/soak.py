"""Soak: mixed load on a real `aidx serve` with real peers, a kill -9 in the middle.

CXR (a pydicom-data CR, fresh UIDs per request), CT (a synthetic 24-slice series,
fresh UIDs), labs ORU^R01 over MLLP, and one WSI job, against aidx writing back to a
real Orthanc (DICOMweb) and a real FHIR R4 server (tests/peers). First the mix's
capacity is measured (closed loop), then it is offered open-loop at --load (70%) of
that for --minutes; the server's RSS and open files are sampled every second; half-way
the server is killed with SIGKILL and started again on the same store (requests in
flight are retried with the same input: a retry must not duplicate anything).

At the end: errors (non-2xx answers and requests that failed after their retries),
RSS growth after warm-up in each half, open files, and the exactly-once count: every
CXR/CT report holds 2 objects in Orthanc (SR + SC/SEG) and 1 DiagnosticReport in the
FHIR server, and the outbox has nothing pending or failed.

    unshare -n bash -c 'ip link set lo up; python benchmarks/soak.py'   # 10 minutes
    python benchmarks/soak.py --smoke --out /tmp/soak.json              # ~30 s

It runs itself inside a private network namespace (unshare -n) when it is not in one
already. Prints one table and saves JSON (benchmarks/results/soak.json by default).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
from aidx.inference.settings import hash_key  # noqa: E402
from aidx.integrations.fhir.resources import REPORT_SYSTEM  # noqa: E402
from aidx.integrations.hl7.mllp import frame  # noqa: E402
from aidx.pipelines.ct import synthetic  # noqa: E402
from aidx.pipelines.wsi.phantom import make_layout, write_slide  # noqa: E402
from tests.integrations.hl7.messages import PANEL_20, oru  # noqa: E402
from tests.peers import FhirPeer, OrthancPeer, free_port, missing_peers  # noqa: E402

KEYS = {role: f"soak-{role}-key-0123456789abcdef" for role in
        ("radiologist", "pathologist", "lab", "engineer")}  # fmt: skip
MIX = ["cxr", "labs", "cxr", "labs", "ct", "labs"]  # one cycle of the offered load
ROUTES = {"cxr": ("/v1/cxr", "application/dicom"), "ct": ("/v1/ct", "application/zip")}
RETRY_WINDOW_S = 300.0  # a request the kill interrupted is sent again until then


def headers(role: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}", **extra}


# --- inputs: each request a distinct study ------------------------------------------


class Inputs:
    def __init__(self, work: Path) -> None:
        cr = get_testdata_file("RG1_UNCR.dcm")
        assert cr is not None, "pydicom-data is missing"
        self.cr = pydicom.dcmread(cr)
        phantom = synthetic.generate(np.random.default_rng(7), shape_kji=(24, 64, 80),
                                     spacing_mm=(5.0, 5.0, 10.0), n_lesions=1)  # fmt: skip
        paths = synthetic.write_series(phantom, work / "ct")
        self.ct = [pydicom.dcmread(p) for p in paths]
        self.labs = 0
        # cxr() and ct_zip() run in worker threads and re-stamp the same datasets: one
        # at a time, or a zip mixes two series' UIDs (aidx rightly refuses it: 422).
        self._stamping = threading.Lock()

    def cxr(self) -> tuple[bytes, str]:
        """A CR of a study of its own: (the file, its Study Instance UID)."""
        with self._stamping:
            return self._cxr()

    def _cxr(self) -> tuple[bytes, str]:
        ds = self.cr
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        out = io.BytesIO()
        ds.save_as(out)
        return out.getvalue(), str(ds.StudyInstanceUID)

    def ct_zip(self) -> tuple[bytes, str]:
        with self._stamping:
            return self._ct_zip()

    def _ct_zip(self) -> tuple[bytes, str]:
        import zipfile

        study, series = generate_uid(), generate_uid()
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for i, ds in enumerate(self.ct):
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                blob = io.BytesIO()
                ds.save_as(blob)
                archive.writestr(f"{i:03d}.dcm", blob.getvalue())
        return out.getvalue(), study

    def oru(self) -> bytes:
        self.labs += 1
        n = self.labs
        return oru(f"SOAK{n}", patients=((f"MRN-S{n % 50}", "F", [(f"SPC-S{n}", PANEL_20)]),))


# --- the server ---------------------------------------------------------------------


@dataclass
class Server:
    var: Path
    slides: Path
    orthanc: OrthancPeer
    fhir: FhirPeer
    port: int = field(default_factory=free_port)
    mllp_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_level: str = "warning"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        keys = [{"name": f"{r}-1", "role": r, "key_sha256": hash_key(k)} for r, k in KEYS.items()]
        return {
            **os.environ, "AIDX_MODE": "production", "AIDX_API_KEYS": json.dumps(keys),
            "AIDX_MODEL_REPOSITORY": str(ROOT / "models"), "AIDX_VAR_DIR": str(self.var),
            "AIDX_HOST": "127.0.0.1", "AIDX_PORT": str(self.port), "AIDX_OOD_POLICY": "warn",
            "AIDX_PACS_DICOMWEB_URL": self.orthanc.dicomweb,
            "AIDX_FHIR_BASE_URL": self.fhir.base_url,
            "AIDX_LABS_MLLP_PORT": str(self.mllp_port),
            "AIDX_WSI_SLIDE_ROOTS": json.dumps([str(self.slides)]),
            "AIDX_OUTBOX_POLL_S": "0.1", "AIDX_OUTBOX_BACKOFF_BASE_S": "0.2",
            "AIDX_OUTBOX_BACKOFF_MAX_S": "2", "AIDX_OUTBOX_LEASE_S": "5",
        }  # fmt: skip

    def start(self) -> None:
        log = (self.var.parent / "aidx.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aidx.service", "serve", "--log-level", self.log_level],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "aidx serve exited during start-up"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("aidx serve did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)

    def sample(self) -> tuple[float, int] | None:
        """(RSS in MiB, open files) of the server process, from /proc."""
        if self.process is None or self.process.poll() is not None:
            return None
        pid = self.process.pid
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss_kb = next(int(line.split()[1]) for line in status.splitlines()
                          if line.startswith("VmRSS:"))  # fmt: skip
            return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            return None


# --- the load -----------------------------------------------------------------------


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    ok: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    report_ids: dict[str, set[str]] = field(default_factory=lambda: {"cxr": set(), "ct": set()})
    studies: set[str] = field(default_factory=set)  # each answered CXR/CT request's study


async def mllp(port: int, message: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame(message))
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 60)
        return answer
    finally:
        writer.close()


async def one(kind: str, server: Server, inputs: Inputs, client: httpx.AsyncClient,
              tally: Tally) -> None:  # fmt: skip
    """One request, retried with the same input when the server is gone (the kill)."""
    study = None
    if kind == "cxr":
        body, study = await asyncio.to_thread(inputs.cxr)
    elif kind == "ct":
        body, study = await asyncio.to_thread(inputs.ct_zip)
    else:
        body = inputs.oru()
    tally.sent[kind] += 1
    give_up = time.monotonic() + RETRY_WINDOW_S
    while True:
        started = time.monotonic()
        try:
            ok, rid = await _send(kind, body, server, client)
        except (httpx.TransportError, OSError, asyncio.IncompleteReadError, TimeoutError):
            if time.monotonic() > give_up:
                tally.errors[f"{kind}: no answer within {RETRY_WINDOW_S} s of retries"] += 1
                return
            tally.retried += 1
            await asyncio.sleep(1.0)
            continue
        tally.latencies_ms.setdefault(kind, []).append((time.monotonic() - started) * 1000)
        if ok is True:
            tally.ok[kind] += 1
            if rid:
                tally.report_ids[kind].add(rid)
            if study:
                tally.studies.add(study)
        else:
            tally.errors[f"{kind}: {ok}"] += 1
        return


async def _send(kind: str, body: bytes, server: Server,
                client: httpx.AsyncClient) -> tuple[bool | str, str | None]:  # fmt: skip
    if kind == "labs":
        answer = await mllp(server.mllp_port, body)
        return (True if b"MSA|AA|" in answer else answer[:120].decode(errors="replace")), None
    path, media = ROUTES[kind]
    sent = headers("radiologist", **{"Content-Type": media})
    response = await client.post(f"{server.url}{path}", content=body, timeout=300, headers=sent)
    if response.status_code != 200:
        return f"{response.status_code} {response.text[:100]}", None
    return True, str(response.json()["id"])


async def closed_loop(server: Server, inputs: Inputs, seconds: float, tally: Tally) -> float:
    """The mix's capacity: requests per second with 2 clients always busy."""
    done = sum(tally.ok.values())
    ends = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:

        async def worker(offset: int) -> None:
            i = offset
            while time.monotonic() < ends:
                await one(MIX[i % len(MIX)], server, inputs, client, tally)
                i += 1

        started = time.monotonic()
        await asyncio.gather(worker(0), worker(3))
        elapsed = time.monotonic() - started
    assert not tally.errors, f"errors while measuring capacity: {dict(tally.errors)}"
    return (sum(tally.ok.values()) - done) / elapsed


async def open_loop(server: Server, inputs: Inputs, rate: float, seconds: float, tally: Tally,
                    at_half: Callable[[], Awaitable[None]]) -> None:  # fmt: skip
    """Requests at `rate`/s whatever the answers' pace; `at_half` runs half-way."""
    async with httpx.AsyncClient() as client:
        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        halved = False
        i = 0
        while (now := time.monotonic()) - started < seconds:
            if not halved and now - started >= seconds / 2:
                halved = True
                await at_half()
            due = started + i / rate
            if due > now:
                await asyncio.sleep(due - now)
            task = asyncio.create_task(one(MIX[i % len(MIX)], server, inputs, client, tally))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.gather(*tasks)


async def sampler(server: Server, samples: list[dict[str, float]], phase: list[str]) -> None:
    """RSS and open files every second; the outbox's pending entries every 5 s."""
    started = time.monotonic()
    tick = 0
    while True:
        found = server.sample()
        if found is not None:
            row = {"t_s": round(time.monotonic() - started, 1), "rss_mib": found[0],
                   "open_files": found[1], "phase": phase[0]}  # fmt: skip
            if tick % 5 == 0:
                row["outbox_pending"] = await outbox_pending(server)
            samples.append(row)
        tick += 1
        await asyncio.sleep(1.0)


async def outbox_pending(server: Server) -> dict[str, int] | None:
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(f"{server.url}/v1/outbox", headers=headers("engineer"))
        return {d: int(c.get("pending", 0)) for d, c in answer.json()["destinations"].items()}
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def rss_growth(samples: list[dict], phase: str, warmup: float) -> dict[str, float] | None:  # type: ignore[type-arg]
    """RSS at the end of a phase against RSS once its first `warmup` fraction is past."""
    rows = [s for s in samples if s["phase"] == phase]
    if len(rows) < 4:
        return None
    after = rows[int(len(rows) * warmup) :]
    base = statistics.median(r["rss_mib"] for r in after[: max(1, len(after) // 10)])
    end = statistics.median(r["rss_mib"] for r in after[-max(1, len(after) // 10) :])
    return {"warm_rss_mib": round(base, 1), "end_rss_mib": round(end, 1),
            "growth_pct": round(100 * (end - base) / base, 2),
            "max_open_files": max(r["open_files"] for r in rows)}  # fmt: skip


def wsi_slide(root: Path) -> Path:
    layout = make_layout(1, 2048, 1536, mpp=0.5, n_suspicious=1, n_lymphoid=0)
    return write_slide(root / "soak.svs", layout)


async def wsi_job(server: Server) -> tuple[str, str | None]:
    """The job's final state and its report's id."""
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.post(f"{server.url}/v1/wsi/jobs", json={"slide_path": "soak.svs"},
                                   headers=headers("pathologist"))  # fmt: skip
        if answer.status_code != 202:
            return f"submit: {answer.status_code} {answer.text[:100]}", None
        job_url = f"{server.url}/v1/wsi/jobs/{answer.json()['id']}"
        for _ in range(600):
            job = (await client.get(job_url, headers=headers("pathologist"))).json()
            if job["state"] not in ("queued", "running"):
                return str(job["state"]), (job.get("report") or {}).get("id")
            await asyncio.sleep(1.0)
    return "timed out", None


def outbox_state(server: Server) -> dict[str, dict[str, object]]:
    answer = httpx.get(f"{server.url}/v1/outbox", headers=headers("engineer"), timeout=60)
    return dict(answer.json()["destinations"])


def pending(state: dict[str, dict[str, object]]) -> int:
    return sum(int(d.get("pending", 0)) for d in state.values())  # type: ignore[call-overload]


def drain(server: Server, wait_s: float) -> dict[str, object]:
    """Wait until the outbox has nothing pending (or `wait_s` passed): how long it took,
    what was pending when the load stopped, and the objects delivered per second."""
    started = time.monotonic()
    state = outbox_state(server)
    at_start = {name: d.get("pending", 0) for name, d in state.items()}
    while pending(state) and time.monotonic() - started < wait_s:
        time.sleep(0.5)
        state = outbox_state(server)
    took = time.monotonic() - started
    return {"drained": not pending(state), "drain_s": round(took, 1),
            "pending_at_start": at_start,
            "objects_per_s": round((sum(at_start.values()) - pending(state)) / took, 2)
            if took > 0 else None,
            "outbox": state}  # fmt: skip


def orthanc_instances(server: Server) -> list[tuple[str, str]]:
    """(Study Instance UID, SOP Instance UID) of every instance Orthanc holds (QIDO-RS)."""
    found = httpx.get(f"{server.orthanc.dicomweb}/instances", timeout=120,
                      params={"includefield": "0020000D", "limit": "100000"})  # fmt: skip
    found.raise_for_status()
    rows = found.json() if found.content else []
    return [(r["0020000D"]["Value"][0], r["00080018"]["Value"][0]) for r in rows]


def fhir_report_identifiers(server: Server) -> list[str]:
    """The aidx report identifier of every DiagnosticReport the FHIR server holds."""
    values: list[str] = []
    offset = 0
    while True:
        page = httpx.get(f"{server.fhir.base_url}/DiagnosticReport", timeout=120,
                         params={"_count": "500", "_offset": str(offset)}).json()  # fmt: skip
        entries = page.get("entry", [])
        for entry in entries:
            values += [i["value"] for i in entry["resource"].get("identifier", [])
                       if i.get("system") == REPORT_SYSTEM]  # fmt: skip
        if not entries:  # a server may cap _count below 500: read until a page is empty
            return values
        offset += len(entries)


def tally_of(expected: set[str], found: list[str]) -> dict[str, object]:
    """Each expected key found once? Missing, duplicated and unexpected keys."""
    counts = Counter(found)
    return {"expected": len(expected), "found": len(counts),
            "missing": len(expected - set(counts)),
            "duplicated": sum(1 for n in counts.values() if n > 1),
            "unexpected": len(set(counts) - expected)}  # fmt: skip


def exactly_once(server: Server, tally: Tally, wsi_reports: set[str],
                 drain_s: float) -> dict[str, object]:  # fmt: skip
    """PACS: each answered CXR/CT study holds exactly its 2 objects (SR + SC or SEG),
    each SOP Instance UID once. EMR: one DiagnosticReport per report identifier (CXR,
    CT and the slide's). The outbox: nothing pending, nothing dead."""
    drained = drain(server, drain_s)
    instances = orthanc_instances(server)
    per_study = Counter(study for study, _ in instances)
    pacs = tally_of(tally.studies, list(per_study))
    pacs["duplicated"] = sum(1 for n in per_study.values() if n > 2)  # a study's 2, and more
    pacs["instances"] = len(instances)
    pacs["studies_not_2"] = sum(1 for s in tally.studies if per_study.get(s, 0) != 2)
    pacs["duplicated_sop_uids"] = sum(1 for n in Counter(u for _, u in instances).values()
                                      if n > 1)  # fmt: skip
    reports = tally.report_ids["cxr"] | tally.report_ids["ct"] | wsi_reports
    emr = tally_of(reports, fhir_report_identifiers(server))
    outbox = drained["outbox"]
    failed = sum(int(d.get("failed", 0)) for d in outbox.values())  # type: ignore[attr-defined]
    ok = (drained["drained"] and not failed and not pacs["studies_not_2"]
          and not pacs["duplicated_sop_uids"] and not pacs["unexpected"]
          and not emr["missing"] and not emr["duplicated"] and not emr["unexpected"])  # fmt: skip
    return {"ok": bool(ok), "pacs": pacs, "emr": emr, "outbox_failed": failed, **drained}


async def soak(server: Server, inputs: Inputs, args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    samples: list[dict[str, float]] = []
    phase = ["capacity"]
    sampling = asyncio.create_task(sampler(server, samples, phase))
    tally = Tally()  # the capacity's reports are written back too: counted alike
    capacity = await closed_loop(server, inputs, args.capacity_s, tally)
    rate = capacity * args.load
    wsi: dict[str, asyncio.Task[tuple[str, str | None]]] = {}
    phase[0] = "first half"
    restart_s: list[float] = []

    async def kill_and_restart() -> None:
        phase[0] = "restart"
        began = time.monotonic()
        server.kill()
        await asyncio.to_thread(server.start)
        restart_s.append(time.monotonic() - began)
        phase[0] = "second half"
        wsi["task"] = asyncio.create_task(wsi_job(server))

    await open_loop(server, inputs, rate, args.minutes * 60, tally, kill_and_restart)
    wsi_state, wsi_report = await wsi["task"] if "task" in wsi else ("not submitted", None)
    phase[0] = "drain"
    wsi_reports = {wsi_report} if wsi_state == "succeeded" and wsi_report else set()
    check = await asyncio.to_thread(exactly_once, server, tally, wsi_reports, args.drain_s)
    sampling.cancel()
    return {
        "capacity_req_s": round(capacity, 2), "offered_req_s": round(rate, 2),
        "minutes": args.minutes, "sent": dict(tally.sent), "ok": dict(tally.ok),
        "errors": dict(tally.errors), "retried_after_kill": tally.retried,
        "restart_s": round(restart_s[0], 1) if restart_s else None, "wsi_job": wsi_state,
        "p50_ms": {k: round(statistics.median(v), 1) for k, v in tally.latencies_ms.items()},
        "rss": {p: rss_growth(samples, p, args.warmup) for p in ("first half", "second half")},
        "exactly_once": check, "samples": samples,
    }  # fmt: skip


def print_table(result: dict) -> None:  # type: ignore[type-arg]
    print(f"capacity {result['capacity_req_s']} req/s; offered {result['offered_req_s']} req/s "
          f"for {result['minutes']} min; restart after kill -9: "
          f"{result['restart_s']} s")  # fmt: skip
    print(f"{'kind':6} {'sent':>6} {'ok':>6} {'p50 ms':>9}")
    for kind in ("cxr", "ct", "labs"):
        print(f"{kind:6} {result['sent'].get(kind, 0):>6} {result['ok'].get(kind, 0):>6} "
              f"{result['p50_ms'].get(kind, float('nan')):>9}")  # fmt: skip
    print(f"wsi job: {result['wsi_job']}; errors: {result['errors'] or 0}; "
          f"requests retried across the kill: {result['retried_after_kill']}")  # fmt: skip
    for phase, rss in result["rss"].items():
        print(f"RSS {phase}: {rss}")
    once = result["exactly_once"]
    print(f"drain: {'empty' if once['drained'] else 'NOT empty'} after {once['drain_s']} s "
          f"({once['objects_per_s']} objects/s; pending when the load stopped: "
          f"{once['pending_at_start']}); outbox failed {once['outbox_failed']}")  # fmt: skip
    print(f"{'where':5} {'expected':>9} {'found':>6} {'missing':>8} {'duplicated':>11} "
          f"{'unexpected':>11}")  # fmt: skip
    for where, label in (("pacs", "studies"), ("emr", "reports")):
        c = once[where]
        print(f"{where:5} {c['expected']:>9} {c['found']:>6} {c['missing']:>8} "
              f"{c['duplicated']:>11} {c['unexpected']:>11}  ({label})")  # fmt: skip
    pacs = once["pacs"]
    print(f"PACS: {pacs['instances']} instances; studies without exactly 2 objects: "
          f"{pacs['studies_not_2']}; SOP Instance UIDs held twice: "
          f"{pacs['duplicated_sop_uids']}")  # fmt: skip
    print(f"exactly once: {once['ok']}")


def in_private_netns() -> None:
    """Re-run this script under `unshare -n` (loopback only) unless already there."""
    if os.environ.get("AIDX_SOAK_NETNS") == "1" or shutil.which("unshare") is None:
        return
    command = f"ip link set lo up && exec {sys.executable} " + " ".join(f"'{a}'" for a in sys.argv)
    env = {**os.environ, "AIDX_SOAK_NETNS": "1"}
    raise SystemExit(subprocess.call(["unshare", "-n", "bash", "-c", command], env=env))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--load", type=float, default=0.7, help="fraction of capacity")
    parser.add_argument("--capacity-s", type=float, default=30.0, help="capacity measurement")
    parser.add_argument("--warmup", type=float, default=0.25, help="fraction of each half")
    parser.add_argument("--drain-s", type=float, default=600.0,
                        help="the most seconds to wait for the outbox to empty")  # fmt: skip
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/soak.json")
    parser.add_argument("--smoke", action="store_true", help="~30 s, to prove it runs")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, store)")
    parser.add_argument("--server-log-level", default="warning")
    args = parser.parse_args()
    if args.smoke:
        args.minutes, args.capacity_s = 0.25, 4.0
    out = args.out or (None if args.smoke else ROOT / "benchmarks" / "results" / "soak.json")
    missing = missing_peers()
    if missing:
        raise SystemExit(f"real peers are not installed ({', '.join(missing)}): make peers")
    in_private_netns()
    work = Path(tempfile.mkdtemp(prefix="aidx-soak-"))
    orthanc = OrthancPeer(work / "orthanc").start()
    fhir = FhirPeer(work / "fhir").start()
    server = Server(work / "var", work / "slides", orthanc, fhir, log_level=args.server_log_level)
    try:
        wsi_slide(server.slides)
        inputs = Inputs(work)
        server.start()
        result = asyncio.run(soak(server, inputs, args))
    finally:
        server.stop()
        fhir.stop()
        orthanc.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": {"cpu_count": os.cpu_count()},
                                   "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                   **result}, indent=2))  # fmt: skip
        print(f"saved {out}")
    if result["errors"] or not result["exactly_once"]["ok"]:
        raise SystemExit("soak: errors or objects not delivered exactly once")


if __name__ == "__main__":
    main()
