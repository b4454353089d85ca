"""Service settings, read once from the environment (prefix AIDX_) or a .env file."""

from __future__ import annotations

import enum
import hashlib
from pathlib import Path

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Mode(enum.StrEnum):
    development = "development"
    production = "production"


class Device(enum.StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Backend(enum.StrEnum):
    onnxruntime = "onnxruntime"  # in-process (the embedded default)
    triton = "triton"  # a Triton Inference Server through tritonclient


class TritonProtocol(enum.StrEnum):
    http = "http"
    grpc = "grpc"


class CudnnConvAlgoSearch(enum.StrEnum):
    exhaustive = "EXHAUSTIVE"
    heuristic = "HEURISTIC"
    default = "DEFAULT"


class Role(enum.StrEnum):
    radiologist = "radiologist"
    pathologist = "pathologist"
    lab = "lab"
    engineer = "engineer"
    admin = "admin"


# Keys that must never guard a hospital service: placeholders people paste from docs.
_WEAK_KEYS = {"", "changeme", "change-me", "secret", "password", "aidx", "test", "dev", "admin"}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(BaseModel):
    """One client's key. Only its SHA-256 is configured; the key itself never is."""

    name: str
    role: Role
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIDX_", env_file=".env", extra="ignore")

    mode: Mode = Mode.production
    host: str = "127.0.0.1"
    port: int = 8000
    model_repository: Path = Path("models")
    enabled_models: list[str] | None = None  # None: every model in the repository
    # Which model serves a pipeline when several could, e.g. {"cxr": "xrv_densenet"}.
    pipeline_models: dict[str, str] = Field(default_factory=dict)
    device: Device = Device.auto
    # GPU execution (gpu/providers.py): onnxruntime's CUDA and TensorRT providers.
    gpu_device_id: int = Field(default=0, ge=0)  # the default; instance_group `gpus` pins
    gpu_tensorrt: bool = False  # TensorRT EP first when the wheel and libraries have it
    gpu_fp16: bool = False  # TensorRT fp16 kernels
    gpu_trt_engine_cache_dir: Path | None = None  # built engines kept across restarts
    gpu_cudnn_conv_algo_search: CudnnConvAlgoSearch = CudnnConvAlgoSearch.exhaustive
    gpu_mem_limit_bytes: int | None = Field(default=None, gt=0)  # CUDA arena cap per session
    # CUDA/TensorRT sessions bind inputs and outputs (IO binding) instead of plain runs.
    gpu_io_binding: bool = True
    # Where models run: in-process, or on a Triton Inference Server (runtime_triton.py).
    backend: Backend = Backend.onnxruntime
    triton_url: str | None = None  # host:port (HTTP 8000, gRPC 8001), no scheme
    triton_protocol: TritonProtocol = TritonProtocol.http
    triton_headers: dict[str, str] = Field(default_factory=dict)  # e.g. an API key; never logged
    triton_timeout_s: float = Field(default=30.0, gt=0)  # connect and network timeout
    triton_retries: int = Field(default=2, ge=0)  # on UNAVAILABLE and connection errors
    triton_retry_backoff_s: float = Field(default=0.2, ge=0)
    triton_poll_s: float = Field(default=5.0, gt=0)  # how often model readiness is re-read
    # Triton batches itself: aidx's batcher passes requests through without waiting
    # (0 us); None keeps config.pbtxt's max_queue_delay_microseconds.
    triton_max_queue_delay_us: int | None = Field(default=0, ge=0)
    triton_concurrency: int = Field(default=4, ge=1)  # requests in flight per model
    # Tensors through system shared memory instead of the request body. Only where aidx
    # and Triton share a host and its /dev/shm (one machine, or one pod / IPC namespace):
    # a server elsewhere refuses the regions and the model stays out of service
    # (triton_shm_unusable). Each model gets one region per request in flight (the
    # batcher's executors, at least triton_concurrency), each bounded by config.pbtxt:
    # max_batch_size x the byte size of every input and output.
    triton_shared_memory: bool = False
    # intra-op threads of each session; 0: one instance uses onnxruntime's default, several
    # split the cores between them (runtime.threads_per_instance)
    cpu_threads_per_instance: int = Field(default=0, ge=0)
    cpu_workers: int = Field(default=0, ge=0)  # decode/render pool; 0: one per core
    var_dir: Path = Path("var")
    api_keys: list[ApiKey] = Field(default_factory=list)
    # A development-only plain key, e.g. for `make run` on a workstation.
    dev_api_key: str | None = None
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    default_deadline_ms: int = Field(default=30_000, gt=0)
    warmup: bool = True
    database_url: str | None = None  # default: SQLite at var/aidx.db
    # Lab screening: the HL7 v2 MLLP listener's port on 127.0.0.1 (None: no listener)
    # and the analyte catalogue (None: the one shipped in aidx.pipelines.labs).
    labs_mllp_port: int | None = Field(default=None, ge=0, le=65535)
    labs_catalogue: Path | None = None
    # Whole slides: submitted paths must lie under one of these (after resolving links).
    wsi_slide_roots: list[Path] = Field(default_factory=list)
    wsi_max_upload_bytes: int = Field(default=8 * 1024**3, gt=0)
    wsi_max_regions: int = Field(default=10, ge=1, le=1000)
    wsi_readers: int = Field(default=0, ge=0)  # tile reader threads per job; 0: cores / 2
    wsi_max_running_jobs: int = Field(default=1, ge=1)
    # Replicas sharing the store: each refreshes its jobs' heartbeat every interval, and
    # fails (`interrupted`) any job whose heartbeat is older than the stale limit: its
    # replica died. The limit spans missed beats, not one slow write.
    wsi_job_heartbeat_s: float = Field(default=10.0, gt=0)
    wsi_job_stale_s: float = Field(default=30.0, gt=0)
    # Writeback (integrations/): findings to the PACS and the EMR through the durable
    # outbox. With no PACS / EMR configured, objects go to a folder under var/outbox/.
    writeback: bool = True
    pacs_dicomweb_url: str | None = None  # STOW-RS and QIDO/WADO-RS base, e.g. .../dicom-web
    pacs_dicom_host: str | None = None  # C-STORE SCU peer (used when no DICOMweb URL)
    pacs_dicom_port: int | None = Field(default=None, ge=1, le=65535)
    pacs_ae_title: str = "PACS"
    fhir_base_url: str | None = None  # e.g. https://emr.example/fhir/R4
    fhir_bearer_token: str | None = None
    fhir_patient_identifier_system: str = "urn:aidx:patient-id"
    outbox_backoff_base_s: float = Field(default=2.0, gt=0)
    outbox_backoff_max_s: float = Field(default=300.0, gt=0)
    outbox_max_attempts: int = Field(default=20, ge=1)
    outbox_poll_s: float = Field(default=1.0, gt=0)
    # How long a claimed entry is a worker's: after a crash, its entries wait this long.
    outbox_lease_s: float = Field(default=120.0, gt=0)
    # DICOM intake: a C-STORE SCP on 127.0.0.1 (None: off), study stability, routing.
    dicom_ae_title: str = "AIDX"
    dicom_scp_port: int | None = Field(default=None, ge=0, le=65535)
    dicom_stable_s: float = Field(default=10.0, gt=0)
    dicom_routing_rules: Path | None = None  # YAML; None: the shipped chest rules
    # HL7 v2 ORU^R01 of each report to the EMR over MLLP (None: not sent).
    emr_mllp_host: str | None = None
    emr_mllp_port: int | None = Field(default=None, ge=1, le=65535)
    emr_mllp_ack_timeout_s: float = Field(default=30.0, gt=0)
    emr_hl7_receiving_application: str = "EMR"
    emr_hl7_receiving_facility: str = "HOSPITAL"

    @model_validator(mode="after")
    def _triton_needs_a_url(self) -> Settings:
        if self.backend is Backend.triton and not self.triton_url:
            raise ValueError("AIDX_BACKEND=triton needs AIDX_TRITON_URL (host:port)")
        return self

    @model_validator(mode="after")
    def _stale_spans_missed_beats(self) -> Settings:
        if self.wsi_job_stale_s < 2 * self.wsi_job_heartbeat_s:
            raise ValueError(
                "AIDX_WSI_JOB_STALE_S must be at least twice AIDX_WSI_JOB_HEARTBEAT_S, "
                "or a live replica's jobs could be failed between two heartbeats"
            )
        return self

    @model_validator(mode="after")
    def _refuse_insecure_defaults(self) -> Settings:
        if self.mode is Mode.development:
            return self
        if self.dev_api_key is not None:
            raise ValueError("AIDX_DEV_API_KEY is for development mode only")
        if not self.api_keys:
            raise ValueError(
                "no API keys configured: set AIDX_API_KEYS (name, role, key_sha256) "
                "or run with AIDX_MODE=development"
            )
        weak = {hash_key(k) for k in _WEAK_KEYS}
        if any(k.key_sha256 in weak for k in self.api_keys):
            raise ValueError("a configured API key is a well-known default; choose a random key")
        return self

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'aidx.db'}"

    @property
    def reports_dir(self) -> Path:
        return self.var_dir / "reports"

    @property
    def audit_log(self) -> Path:
        return self.var_dir / "audit.log"
