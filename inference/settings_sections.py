"""The sections of the service's settings (settings.py), one per integration or
pipeline; each consumer receives its own section only. A field `<name>` of the section
`<section>` is set by AIDX_<SECTION>_<NAME>; every limit and timeout has its one
default here."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class Role(enum.StrEnum):
    radiologist = "radiologist"
    pathologist = "pathologist"
    lab = "lab"
    engineer = "engineer"
    admin = "admin"


class TritonProtocol(enum.StrEnum):
    http = "http"
    grpc = "grpc"


class CudnnConvAlgoSearch(enum.StrEnum):
    exhaustive = "EXHAUSTIVE"
    heuristic = "HEURISTIC"
    default = "DEFAULT"


class GpuSettings(BaseModel):
    """GPU execution (gpu/providers.py): onnxruntime's CUDA and TensorRT providers."""

    device_id: int = Field(default=0, ge=0)  # the default; instance_group `gpus` pins
    tensorrt: bool = False  # TensorRT EP first when the wheel and libraries have it
    fp16: bool = False  # TensorRT fp16 kernels
    trt_engine_cache_dir: Path | None = None  # built engines kept across restarts
    cudnn_conv_algo_search: CudnnConvAlgoSearch = CudnnConvAlgoSearch.exhaustive
    mem_limit_bytes: int | None = Field(default=None, gt=0)  # CUDA arena cap per session
    # CUDA/TensorRT sessions bind inputs and outputs (IO binding) instead of plain runs.
    io_binding: bool = True


class CpuSettings(BaseModel):
    # intra-op threads of each session; 0: one instance uses onnxruntime's default, several
    # split the cores between them (runtime.threads_per_instance)
    threads_per_instance: int = Field(default=0, ge=0)
    workers: int = Field(default=0, ge=0)  # decode/render pool; 0: one per core


class ShadowSettings(BaseModel):
    """Which version of a model serves and which runs beside it in shadow
    (inference/shadow.py). Precedence, for the serving version: `serving` here, then
    the version the model's card.md names, then config.pbtxt's version_policy; for the
    shadow: `versions` here (0: none), then the card's `shadow:`."""

    serving: dict[str, int] = Field(default_factory=dict)  # AIDX_SHADOW_SERVING
    versions: dict[str, int] = Field(default_factory=dict)  # AIDX_SHADOW_VERSIONS
    # Served batches waiting for the shadow; past this many, a batch is dropped (counted)
    # rather than ever slowing the serving path.
    queue_size: int = Field(default=64, ge=1)
    threads: int = Field(default=1, ge=0)  # the shadow session's intra-op threads
    nice: int = Field(default=10, ge=0, le=19)  # the shadow thread's lower CPU priority


class AccessSettings(BaseModel):
    """Beyond each route's roles: failed authentication throttled per client address,
    and who may mark a request STAT (X-Aidx-Priority: stat)."""

    # Past this many wrong keys from one address within the window, every request from
    # it is refused (429 auth_throttled) until the window has moved on.
    auth_failures_max: int = Field(default=10, ge=1)
    auth_failures_window_s: int = Field(default=60, ge=1)
    stat_roles: list[Role] = Field(default_factory=lambda: [Role.radiologist, Role.lab, Role.admin])


class TritonSettings(BaseModel):
    """Models on a Triton Inference Server (AIDX_BACKEND=triton, runtime_triton.py)."""

    url: str | None = None  # host:port (HTTP 8000, gRPC 8001), no scheme
    protocol: TritonProtocol = TritonProtocol.http
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. an API key; never logged
    timeout_s: float = Field(default=30.0, gt=0)  # connect and network timeout
    retries: int = Field(default=2, ge=0)  # on UNAVAILABLE and connection errors
    retry_backoff_s: float = Field(default=0.2, ge=0)
    poll_s: float = Field(default=5.0, gt=0)  # how often model readiness is re-read
    # Triton batches itself: aidx's batcher passes requests through without waiting
    # (0 us); None keeps config.pbtxt's max_queue_delay_microseconds.
    max_queue_delay_us: int | None = Field(default=0, ge=0)
    concurrency: int = Field(default=4, ge=1)  # requests in flight per model
    # Tensors through system shared memory instead of the request body. Only where aidx
    # and Triton share a host and its /dev/shm (one machine, or one pod / IPC namespace):
    # a server elsewhere refuses the regions and the model stays out of service
    # (triton_shm_unusable). Each model gets one region per request in flight (the
    # batcher's executors, at least `concurrency`), each bounded by config.pbtxt:
    # max_batch_size x the byte size of every input and output.
    shared_memory: bool = False


class CtSettings(BaseModel):
    """POST /v1/ct: a series' limits. A zip's members are counted by the bytes actually
    unpacked, never by the sizes its own directory declares."""

    # a 512 x 512 x 600 series is about 315 MB uncompressed
    max_upload_bytes: int = Field(default=1 << 30, gt=0)
    max_instances: int = Field(default=4096, ge=1)
    # unpacked / packed bytes of a zip member: DICOM packs 2-10x, an air-filled slice
    # rarely past 50x; deflate's own ceiling (about 1032x) is a bomb
    max_compression_ratio: float = Field(default=200.0, ge=1.0)


class HttpSettings(BaseModel):
    """What one HTTP request may cost before any route sees it (service/limits.py,
    service/http_protocol.py). The upload routes have their own body limits
    (AIDX_MAX_UPLOAD_BYTES, AIDX_CT_MAX_UPLOAD_BYTES, AIDX_WSI_MAX_UPLOAD_BYTES)."""

    max_body_bytes: int = Field(default=64 * 1024, gt=0)  # every other route's body (JSON)
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)  # request line and headers
    max_headers: int = Field(default=100, ge=8)
    header_timeout_s: float = Field(default=10.0, gt=0)  # a request's head, once connected
    keep_alive_timeout_s: int = Field(default=5, ge=1)  # an idle connection between requests
    # A body must keep coming: waits for it may total this, plus one second per
    # `body_min_rate_bytes_s` bytes received (a slow-loris upload is cut off: 408).
    body_timeout_s: float = Field(default=30.0, gt=0)
    body_min_rate_bytes_s: int = Field(default=64 * 1024, gt=0)


class ImageLimits(BaseModel):
    """Pixels a DICOM image may hold, read from its header (and its JPEG / JPEG 2000
    codestream header) before anything is decoded: a few kilobytes of JPEG 2000 can
    declare gigabytes of pixels. Frozen: pipelines share one instance."""

    model_config = ConfigDict(frozen=True)

    # the largest chest detectors are about 4300 x 4300; 25 M is 5000 x 5000
    max_frame_pixels: int = Field(default=25_000_000, gt=0)
    max_frames: int = Field(default=4096, ge=1)  # frames of one instance
    # all frames of an instance or a CT series: 512 x 512 x 2048 (2 GiB as float32)
    max_total_pixels: int = Field(default=512 * 512 * 2048, gt=0)


class UploadRetention(enum.StrEnum):
    """What becomes of an uploaded slide once its job has ended (succeeded, failed or
    cancelled): deleted (its results stay), or kept under var/wsi/uploads/."""

    delete_when_done = "delete_when_done"
    keep = "keep"


class WsiSettings(BaseModel):
    """Whole slides: submitted paths must lie under one of `slide_roots` (after
    resolving links)."""

    slide_roots: list[Path] = Field(default_factory=list)
    max_upload_bytes: int = Field(default=8 * 1024**3, gt=0)
    # a DICOM WSI series pulled from the PACS or received by C-STORE: all its instances
    dicom_max_bytes: int = Field(default=8 * 1024**3, gt=0)
    dicom_max_instances: int = Field(default=256, ge=1)
    max_regions: int = Field(default=10, ge=1, le=1000)
    readers: int = Field(default=0, ge=0)  # tile reader threads per job; 0: cores / 2
    max_running_jobs: int = Field(default=1, ge=1)
    upload_retention: UploadRetention = UploadRetention.delete_when_done
    # Uploads a dead replica left (pipelines/wsi/upload_sweep.py): at start-up and every
    # `upload_sweep_s`, those not written for `upload_stale_s` whose job has ended, or
    # that no job names, are deleted; a queued or running job's never.
    upload_stale_s: float = Field(default=6 * 3600.0, gt=0)
    upload_sweep_s: float = Field(default=600.0, gt=0)
    # the slide viewer's encoded DeepZoom tiles kept in memory (a viewer going back gets
    # them without a read); 0: none kept
    deepzoom_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # Replicas sharing the store: each refreshes its jobs' heartbeat every interval, and
    # fails (`interrupted`) any job whose heartbeat is older than the stale limit: its
    # replica died. The limit spans missed beats, not one slow write.
    job_heartbeat_s: float = Field(default=10.0, gt=0)
    job_stale_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _stale_spans_missed_beats(self) -> WsiSettings:
        if self.job_stale_s < 2 * self.job_heartbeat_s:
            raise ValueError(
                "AIDX_WSI_JOB_STALE_S must be at least twice AIDX_WSI_JOB_HEARTBEAT_S, "
                "or a live replica's jobs could be failed between two heartbeats"
            )
        return self


class LabsSettings(BaseModel):
    """Lab screening: the HL7 v2 MLLP listener (None port: no listener), the analyte
    catalogue (None: the one shipped in aidx.pipelines.labs), the live alert stream."""

    mllp_host: str = "127.0.0.1"
    mllp_port: int | None = Field(default=None, ge=0, le=65535)
    mllp_max_frame_bytes: int = Field(default=1 << 20, gt=0)
    mllp_frame_timeout_s: float = Field(default=5.0, gt=0)  # a message's frame, once begun
    mllp_idle_timeout_s: float = Field(default=300.0, gt=0)  # a silent connection is closed
    catalogue: Path | None = None
    stream_keepalive_s: float = Field(default=15.0, gt=0)  # a comment when nothing happens
    # a stream ends after this; EventSource reconnects with Last-Event-ID
    stream_max_s: float = Field(default=300.0, gt=0)
    stream_replay_max: int = Field(default=1000, ge=1)  # alerts replayed on a reconnect


class PacsSettings(BaseModel):
    """The PACS: findings to it (STOW-RS, or C-STORE without a DICOMweb URL), studies
    pulled from it (QIDO/WADO-RS)."""

    dicomweb_url: str | None = None  # STOW-RS and QIDO/WADO-RS base, e.g. .../dicom-web
    dicom_host: str | None = None  # C-STORE SCU peer (used when no DICOMweb URL)
    dicom_port: int | None = Field(default=None, ge=1, le=65535)
    ae_title: str = "PACS"
    # Reaching the PACS: a DICOMweb connection, a C-STORE association and its replies.
    connect_timeout_s: float = Field(default=10.0, gt=0)
    stow_timeout_s: float = Field(default=60.0, gt=0)  # one STOW-RS request, in all
    read_timeout_s: float = Field(default=120.0, gt=0)  # between bytes of a QIDO/WADO answer


class FhirSettings(BaseModel):
    base_url: str | None = None  # e.g. https://emr.example/fhir/R4
    bearer_token: str | None = None
    patient_identifier_system: str = "urn:aidx:patient-id"
    timeout_s: float = Field(default=30.0, gt=0)  # one transaction bundle's request


class EmrSettings(BaseModel):
    """HL7 v2 ORU^R01 of each report to the EMR over MLLP (None host or port: not sent)."""

    mllp_host: str | None = None
    mllp_port: int | None = Field(default=None, ge=1, le=65535)
    mllp_ack_timeout_s: float = Field(default=30.0, gt=0)
    hl7_receiving_application: str = "EMR"
    hl7_receiving_facility: str = "HOSPITAL"


class OutboxSettings(BaseModel):
    """Delivery of outgoing objects: retries with exponential backoff."""

    backoff_base_s: float = Field(default=2.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=20, ge=1)
    poll_s: float = Field(default=1.0, gt=0)
    # How long a claimed entry is a worker's: after a crash, its entries wait this long.
    lease_s: float = Field(default=120.0, gt=0)


class DicomSettings(BaseModel):
    """DICOM intake: a C-STORE SCP (None port: off), study stability, routing; the
    AE title is also the calling AE of C-STORE write-back."""

    ae_title: str = "AIDX"
    scp_host: str = "127.0.0.1"
    scp_port: int | None = Field(default=None, ge=0, le=65535)
    stable_s: float = Field(default=10.0, gt=0)  # a study is complete after this quiet
    routing_rules: Path | None = None  # YAML; None: the shipped chest rules


class UiSettings(BaseModel):
    """The review workspace at /ui/: how long a sign-in lasts (the session cookie's
    Max-Age and the server's own expiry of it)."""

    session_ttl_s: int = Field(default=8 * 3600, ge=60, le=7 * 24 * 3600)
    # Read-only share links (QR codes) to one report: how long one lasts unless asked
    # for less, the longest allowed, and the secret that signs them (every replica must
    # share it; unset: one kept in var/share.key). What identifies the patient on the
    # shared page: nothing, or the last four characters of the patient id.
    share_ttl_s: int = Field(default=72 * 3600, ge=60)
    share_max_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    share_secret: SecretStr | None = None
    share_identifier: Literal["none", "masked_id"] = "masked_id"
    # The address patients' phones reach aidx at (e.g. https://aidx.hospital.vn); unset:
    # the address the request came in on.
    public_base_url: str | None = None


class DriftSettings(BaseModel):
    """Drift monitoring (inference/drift.py): the windows each model's recent
    observations are compared in, and when a feature counts as drifting."""

    enabled: bool = True  # observe every analysed input (a few values, no model pass)
    window_count: int = Field(default=500, ge=10)  # the last N observations of a model
    window_days: float = Field(default=1.0, gt=0)  # and those of the last D days
    max_day_observations: int = Field(default=5000, ge=10)  # the day window's newest, at most
    # Fewer observations of a feature: no alert. PSI on 10 bins has a noise floor of about
    # 9 / n (0.09 at 100): smaller windows need the test's p-value to hold alerts back.
    min_window: int = Field(default=100, ge=1)
    psi_alert: float = Field(default=0.25, gt=0)  # PSI at or above: a major shift
    p_alert: float = Field(default=0.01, gt=0, lt=1)  # and the two-sample test below this
