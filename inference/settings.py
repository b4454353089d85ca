"""Service settings, read once from the environment (prefix AIDX_) or a .env file.

The service's own values sit at the top (mode, keys, models, storage, limits); each
integration and pipeline has its own section (`settings.pacs`, `settings.triton`, ...,
in settings_sections.py) and receives that section alone. Variable names stay flat:
AIDX_<SECTION>_<FIELD> sets `settings.<section>.<field>` (AIDX_PACS_DICOMWEB_URL is
`settings.pacs.dicomweb_url`), by pydantic-settings' nested delimiter "_" split once.
Keywords take the same flat names (`Settings(pacs_dicomweb_url=...)`, as tests do)
or whole sections (`Settings(pacs={"dicomweb_url": ...})`).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aidx.inference.assessment import OodPolicy
from aidx.inference.key_policy import WELL_KNOWN_HASHES
from aidx.inference.key_policy import hash_key as hash_key  # re-exported
from aidx.inference.settings_sections import (
    AccessSettings,
    CpuSettings,
    CtSettings,
    DicomSettings,
    DriftSettings,
    EmrSettings,
    FhirSettings,
    GpuSettings,
    HttpSettings,
    ImageLimits,
    LabsSettings,
    OutboxSettings,
    PacsSettings,
    Role,
    ShadowSettings,
    TritonSettings,
    UiSettings,
    WsiSettings,
)


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


class ApiKey(BaseModel):
    """One client's key. Only its SHA-256 is configured; the key itself never is."""

    name: str
    role: Role
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AIDX_",
        env_file=".env",
        extra="ignore",
        # AIDX_PACS_DICOMWEB_URL -> pacs.dicomweb_url: split at the first "_" after the
        # section's name only, so field names keep their underscores.
        env_nested_delimiter="_",
        env_nested_max_split=1,
        # a refusal never echoes what was given (AIDX_DEV_API_KEY, a key's hash)
        hide_input_in_errors=True,
    )

    mode: Mode = Mode.production
    host: str = "127.0.0.1"
    port: int = 8000
    # KServe v2 over gRPC (Triton's GRPCInferenceService; Triton's own port is 8001),
    # on `host` beside HTTP. None: no gRPC listener.
    grpc_port: int | None = Field(default=None, ge=1, le=65535)
    model_repository: Path = Path("models")
    enabled_models: list[str] | None = None  # None: every model in the repository
    # Which model serves a pipeline when several could, e.g. {"cxr": "xrv_densenet"}.
    pipeline_models: dict[str, str] = Field(default_factory=dict)
    # An input out of a model's distribution: findings not assessed, or (a site's
    # choice) scored under a prominent warning.
    ood_policy: OodPolicy = OodPolicy.not_assessed
    device: Device = Device.auto
    # Where models run: in-process, or on a Triton Inference Server (runtime_triton.py).
    backend: Backend = Backend.onnxruntime
    var_dir: Path = Path("var")
    api_keys: list[ApiKey] = Field(default_factory=list)
    # A development-only plain key, e.g. for `make run` on a workstation.
    dev_api_key: str | None = None
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    default_deadline_ms: int = Field(default=30_000, gt=0)
    # How long a stop waits for open requests: a client that never finishes cannot hold it.
    shutdown_timeout_s: int = Field(default=10, ge=1)
    warmup: bool = True
    database_url: str | None = None  # default: SQLite at var/aidx.db
    # Writeback: findings to the PACS and the EMR through the durable outbox. With no
    # PACS / EMR configured, objects go to a folder under var/outbox/.
    writeback: bool = True

    access: AccessSettings = Field(default_factory=AccessSettings)
    gpu: GpuSettings = Field(default_factory=GpuSettings)
    cpu: CpuSettings = Field(default_factory=CpuSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    image: ImageLimits = Field(default_factory=ImageLimits)
    ct: CtSettings = Field(default_factory=CtSettings)
    wsi: WsiSettings = Field(default_factory=WsiSettings)
    labs: LabsSettings = Field(default_factory=LabsSettings)
    pacs: PacsSettings = Field(default_factory=PacsSettings)
    fhir: FhirSettings = Field(default_factory=FhirSettings)
    emr: EmrSettings = Field(default_factory=EmrSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    dicom: DicomSettings = Field(default_factory=DicomSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)

    @classmethod
    def sections(cls) -> dict[str, type[BaseModel]]:
        """Section name -> its model, e.g. "pacs" -> PacsSettings."""
        return {
            name: field.annotation
            for name, field in cls.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        }

    @model_validator(mode="before")
    @classmethod
    def _sections_from_flat_keywords(cls, data: Any) -> Any:
        """A flat keyword (`pacs_dicomweb_url=...`) into its section, as the environment's
        AIDX_PACS_DICOMWEB_URL goes; keywords come first, so they win over the environment."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for section, model in cls.sections().items():
            prefix = f"{section}_"
            flat = {
                key[len(prefix) :]: key
                for key in data
                if key.startswith(prefix) and key[len(prefix) :] in model.model_fields
            }
            if not flat:
                continue
            current = data.get(section) or {}
            if isinstance(current, BaseModel):
                current = current.model_dump(exclude_unset=True)
            data[section] = {**current, **{name: data.pop(key) for name, key in flat.items()}}
        return data

    @model_validator(mode="after")
    def _triton_needs_a_url(self) -> Settings:
        if self.backend is Backend.triton and not self.triton.url:
            raise ValueError("AIDX_BACKEND=triton needs AIDX_TRITON_URL (host:port)")
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
        weak = [k.name for k in self.api_keys if k.key_sha256 in WELL_KNOWN_HASHES]
        if weak:
            raise ValueError(
                f"API key {weak[0]!r} is a well-known default; choose a random key "
                "(`aidx keys new`)"
            )
        return self

    @model_validator(mode="after")
    def _one_key_per_client(self) -> Settings:
        """The same key under two entries would make one client the other (the last
        entry won, silently): refused, naming the entries and never the key."""
        first: dict[str, ApiKey] = {}
        for key in self.api_keys:
            seen = first.setdefault(key.key_sha256, key)
            if seen is not key:
                raise ValueError(
                    f"API keys {seen.name!r} ({seen.role.value}) and {key.name!r} "
                    f"({key.role.value}) are the same key; give each client its own"
                )
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

    @property
    def outbox_dir(self) -> Path:
        """Where objects go when no PACS / EMR is configured (one folder per destination)."""
        return self.var_dir / "outbox"
