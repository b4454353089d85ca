"""Nested settings: every AIDX_* variable keeps its name and lands in its section;
flat keywords still work; each limit and timeout has one default."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from aidx.gpu.providers import GpuOptions
from aidx.inference.assessment import OodPolicy
from aidx.inference.runtime_triton import TritonOptions
from aidx.inference.settings import ApiKey, Backend, Device, Mode, Role, Settings
from aidx.inference.settings_sections import (
    CudnnConvAlgoSearch,
    DicomSettings,
    GpuSettings,
    OutboxSettings,
    TritonProtocol,
    TritonSettings,
    UploadRetention,
)
from aidx.integrations.dicom.scp import StoreScp
from aidx.integrations.outbox.worker import Backoff, OutboxWorker

SHA = "a" * 64
KEYS = f'[{{"name": "pacs", "role": "radiologist", "key_sha256": "{SHA}"}}]'
PACS_KEY = ApiKey(name="pacs", role=Role.radiologist, key_sha256=SHA)

# (variable, where it lands, a value to set it to, what that value reads as)
VARIABLES: list[tuple[str, str, str, Any]] = [
    ("AIDX_MODE", "mode", "development", Mode.development),
    ("AIDX_HOST", "host", "0.0.0.0", "0.0.0.0"),
    ("AIDX_PORT", "port", "9000", 9000),
    ("AIDX_MODEL_REPOSITORY", "model_repository", "/srv/models", Path("/srv/models")),
    ("AIDX_ENABLED_MODELS", "enabled_models", '["cxr_pneumonia"]', ["cxr_pneumonia"]),
    ("AIDX_PIPELINE_MODELS", "pipeline_models", '{"cxr": "xrv"}', {"cxr": "xrv"}),
    ("AIDX_OOD_POLICY", "ood_policy", "warn", OodPolicy.warn),
    ("AIDX_GRPC_PORT", "grpc_port", "8001", 8001),
    ("AIDX_DEVICE", "device", "cpu", Device.cpu),
    ("AIDX_BACKEND", "backend", "triton", Backend.triton),
    ("AIDX_VAR_DIR", "var_dir", "/srv/var", Path("/srv/var")),
    ("AIDX_API_KEYS", "api_keys", KEYS, [PACS_KEY]),
    ("AIDX_DEV_API_KEY", "dev_api_key", "a-development-key", "a-development-key"),
    ("AIDX_MAX_UPLOAD_BYTES", "max_upload_bytes", "1000", 1000),
    ("AIDX_DEFAULT_DEADLINE_MS", "default_deadline_ms", "5000", 5000),
    ("AIDX_SHUTDOWN_TIMEOUT_S", "shutdown_timeout_s", "20", 20),
    ("AIDX_WARMUP", "warmup", "false", False),
    ("AIDX_DATABASE_URL", "database_url", "postgresql://db/aidx", "postgresql://db/aidx"),
    ("AIDX_WRITEBACK", "writeback", "false", False),
    ("AIDX_ACCESS_AUTH_FAILURES_MAX", "access.auth_failures_max", "5", 5),
    ("AIDX_ACCESS_AUTH_FAILURES_WINDOW_S", "access.auth_failures_window_s", "30", 30),
    ("AIDX_ACCESS_STAT_ROLES", "access.stat_roles", '["radiologist"]', [Role.radiologist]),
    ("AIDX_GPU_DEVICE_ID", "gpu.device_id", "1", 1),
    ("AIDX_GPU_TENSORRT", "gpu.tensorrt", "true", True),
    ("AIDX_GPU_FP16", "gpu.fp16", "true", True),
    ("AIDX_GPU_TRT_ENGINE_CACHE_DIR", "gpu.trt_engine_cache_dir", "/trt", Path("/trt")),
    ("AIDX_GPU_CUDNN_CONV_ALGO_SEARCH", "gpu.cudnn_conv_algo_search", "HEURISTIC",
     CudnnConvAlgoSearch.heuristic),
    ("AIDX_GPU_MEM_LIMIT_BYTES", "gpu.mem_limit_bytes", "2147483648", 2147483648),
    ("AIDX_GPU_IO_BINDING", "gpu.io_binding", "false", False),
    ("AIDX_CPU_THREADS_PER_INSTANCE", "cpu.threads_per_instance", "3", 3),
    ("AIDX_CPU_WORKERS", "cpu.workers", "6", 6),
    ("AIDX_TRITON_URL", "triton.url", "triton:8001", "triton:8001"),
    ("AIDX_TRITON_PROTOCOL", "triton.protocol", "grpc", TritonProtocol.grpc),
    ("AIDX_TRITON_HEADERS", "triton.headers", '{"triton-access-token": "k"}',
     {"triton-access-token": "k"}),
    ("AIDX_TRITON_TIMEOUT_S", "triton.timeout_s", "7.5", 7.5),
    ("AIDX_TRITON_RETRIES", "triton.retries", "5", 5),
    ("AIDX_TRITON_RETRY_BACKOFF_S", "triton.retry_backoff_s", "0.5", 0.5),
    ("AIDX_TRITON_POLL_S", "triton.poll_s", "2", 2.0),
    ("AIDX_TRITON_MAX_QUEUE_DELAY_US", "triton.max_queue_delay_us", "100", 100),
    ("AIDX_TRITON_CONCURRENCY", "triton.concurrency", "8", 8),
    ("AIDX_TRITON_SHARED_MEMORY", "triton.shared_memory", "true", True),
    ("AIDX_CT_MAX_UPLOAD_BYTES", "ct.max_upload_bytes", "2048", 2048),
    ("AIDX_CT_MAX_INSTANCES", "ct.max_instances", "100", 100),
    ("AIDX_CT_MAX_COMPRESSION_RATIO", "ct.max_compression_ratio", "50", 50.0),
    ("AIDX_HTTP_MAX_BODY_BYTES", "http.max_body_bytes", "4096", 4096),
    ("AIDX_HTTP_MAX_HEADER_BYTES", "http.max_header_bytes", "8192", 8192),
    ("AIDX_HTTP_MAX_HEADERS", "http.max_headers", "50", 50),
    ("AIDX_HTTP_HEADER_TIMEOUT_S", "http.header_timeout_s", "3", 3.0),
    ("AIDX_HTTP_KEEP_ALIVE_TIMEOUT_S", "http.keep_alive_timeout_s", "2", 2),
    ("AIDX_HTTP_BODY_TIMEOUT_S", "http.body_timeout_s", "7", 7.0),
    ("AIDX_HTTP_BODY_MIN_RATE_BYTES_S", "http.body_min_rate_bytes_s", "1000", 1000),
    ("AIDX_IMAGE_MAX_FRAME_PIXELS", "image.max_frame_pixels", "1000000", 1_000_000),
    ("AIDX_IMAGE_MAX_FRAMES", "image.max_frames", "10", 10),
    ("AIDX_IMAGE_MAX_TOTAL_PIXELS", "image.max_total_pixels", "5000000", 5_000_000),
    ("AIDX_WSI_SLIDE_ROOTS", "wsi.slide_roots", '["/data/slides"]', [Path("/data/slides")]),
    ("AIDX_WSI_MAX_UPLOAD_BYTES", "wsi.max_upload_bytes", "1024", 1024),
    ("AIDX_WSI_DICOM_MAX_BYTES", "wsi.dicom_max_bytes", "2048", 2048),
    ("AIDX_WSI_DICOM_MAX_INSTANCES", "wsi.dicom_max_instances", "16", 16),
    ("AIDX_WSI_MAX_REGIONS", "wsi.max_regions", "20", 20),
    ("AIDX_WSI_READERS", "wsi.readers", "4", 4),
    ("AIDX_WSI_MAX_RUNNING_JOBS", "wsi.max_running_jobs", "2", 2),
    ("AIDX_WSI_JOB_HEARTBEAT_S", "wsi.job_heartbeat_s", "5", 5.0),
    ("AIDX_WSI_JOB_STALE_S", "wsi.job_stale_s", "60", 60.0),
    ("AIDX_WSI_UPLOAD_RETENTION", "wsi.upload_retention", "keep", UploadRetention.keep),
    ("AIDX_WSI_UPLOAD_STALE_S", "wsi.upload_stale_s", "7200", 7200.0),
    ("AIDX_WSI_UPLOAD_SWEEP_S", "wsi.upload_sweep_s", "60", 60.0),
    ("AIDX_WSI_DEEPZOOM_CACHE_BYTES", "wsi.deepzoom_cache_bytes", "0", 0),
    ("AIDX_LABS_MLLP_HOST", "labs.mllp_host", "0.0.0.0", "0.0.0.0"),
    ("AIDX_LABS_MLLP_PORT", "labs.mllp_port", "2575", 2575),
    ("AIDX_LABS_MLLP_MAX_FRAME_BYTES", "labs.mllp_max_frame_bytes", "4096", 4096),
    ("AIDX_LABS_MLLP_FRAME_TIMEOUT_S", "labs.mllp_frame_timeout_s", "2", 2.0),
    ("AIDX_LABS_MLLP_IDLE_TIMEOUT_S", "labs.mllp_idle_timeout_s", "60", 60.0),
    ("AIDX_LABS_CATALOGUE", "labs.catalogue", "/etc/analytes.yaml", Path("/etc/analytes.yaml")),
    ("AIDX_LABS_STREAM_KEEPALIVE_S", "labs.stream_keepalive_s", "5", 5.0),
    ("AIDX_LABS_STREAM_MAX_S", "labs.stream_max_s", "600", 600.0),
    ("AIDX_LABS_STREAM_REPLAY_MAX", "labs.stream_replay_max", "50", 50),
    ("AIDX_PACS_DICOMWEB_URL", "pacs.dicomweb_url", "http://pacs/dicom-web",
     "http://pacs/dicom-web"),
    ("AIDX_PACS_DICOM_HOST", "pacs.dicom_host", "pacs.example", "pacs.example"),
    ("AIDX_PACS_DICOM_PORT", "pacs.dicom_port", "11112", 11112),
    ("AIDX_PACS_AE_TITLE", "pacs.ae_title", "ORTHANC", "ORTHANC"),
    ("AIDX_PACS_CONNECT_TIMEOUT_S", "pacs.connect_timeout_s", "3", 3.0),
    ("AIDX_PACS_STOW_TIMEOUT_S", "pacs.stow_timeout_s", "90", 90.0),
    ("AIDX_PACS_READ_TIMEOUT_S", "pacs.read_timeout_s", "240", 240.0),
    ("AIDX_FHIR_BASE_URL", "fhir.base_url", "https://emr/fhir/R4", "https://emr/fhir/R4"),
    ("AIDX_FHIR_BEARER_TOKEN", "fhir.bearer_token", "token", "token"),
    ("AIDX_FHIR_PATIENT_IDENTIFIER_SYSTEM", "fhir.patient_identifier_system", "urn:x", "urn:x"),
    ("AIDX_FHIR_TIMEOUT_S", "fhir.timeout_s", "15", 15.0),
    ("AIDX_EMR_MLLP_HOST", "emr.mllp_host", "emr.example", "emr.example"),
    ("AIDX_EMR_MLLP_PORT", "emr.mllp_port", "2576", 2576),
    ("AIDX_EMR_MLLP_ACK_TIMEOUT_S", "emr.mllp_ack_timeout_s", "12", 12.0),
    ("AIDX_EMR_HL7_RECEIVING_APPLICATION", "emr.hl7_receiving_application", "RIS", "RIS"),
    ("AIDX_EMR_HL7_RECEIVING_FACILITY", "emr.hl7_receiving_facility", "WARD", "WARD"),
    ("AIDX_OUTBOX_BACKOFF_BASE_S", "outbox.backoff_base_s", "3", 3.0),
    ("AIDX_OUTBOX_BACKOFF_MAX_S", "outbox.backoff_max_s", "60", 60.0),
    ("AIDX_OUTBOX_MAX_ATTEMPTS", "outbox.max_attempts", "7", 7),
    ("AIDX_OUTBOX_POLL_S", "outbox.poll_s", "0.5", 0.5),
    ("AIDX_OUTBOX_LEASE_S", "outbox.lease_s", "30", 30.0),
    ("AIDX_DICOM_AE_TITLE", "dicom.ae_title", "AIDX2", "AIDX2"),
    ("AIDX_DICOM_SCP_HOST", "dicom.scp_host", "0.0.0.0", "0.0.0.0"),
    ("AIDX_DICOM_SCP_PORT", "dicom.scp_port", "11113", 11113),
    ("AIDX_DICOM_STABLE_S", "dicom.stable_s", "4", 4.0),
    ("AIDX_DICOM_ROUTING_RULES", "dicom.routing_rules", "/etc/rules.yaml", Path("/etc/rules.yaml")),
    ("AIDX_UI_SESSION_TTL_S", "ui.session_ttl_s", "3600", 3600),
    ("AIDX_UI_SHARE_TTL_S", "ui.share_ttl_s", "7200", 7200),
    ("AIDX_UI_SHARE_MAX_TTL_S", "ui.share_max_ttl_s", "86400", 86400),
    ("AIDX_UI_SHARE_SECRET", "ui.share_secret", "s3cret", SecretStr("s3cret")),
    ("AIDX_UI_SHARE_IDENTIFIER", "ui.share_identifier", "none", "none"),
    ("AIDX_UI_PUBLIC_BASE_URL", "ui.public_base_url", "https://a.example", "https://a.example"),
    ("AIDX_DRIFT_ENABLED", "drift.enabled", "false", False),
    ("AIDX_DRIFT_WINDOW_COUNT", "drift.window_count", "200", 200),
    ("AIDX_DRIFT_WINDOW_DAYS", "drift.window_days", "7", 7.0),
    ("AIDX_DRIFT_MAX_DAY_OBSERVATIONS", "drift.max_day_observations", "20000", 20000),
    ("AIDX_DRIFT_MIN_WINDOW", "drift.min_window", "50", 50),
    ("AIDX_DRIFT_PSI_ALERT", "drift.psi_alert", "0.2", 0.2),
    ("AIDX_DRIFT_P_ALERT", "drift.p_alert", "0.001", 0.001),
    ("AIDX_SHADOW_SERVING", "shadow.serving", '{"cxr_pneumonia": 1}', {"cxr_pneumonia": 1}),
    ("AIDX_SHADOW_VERSIONS", "shadow.versions", '{"cxr_pneumonia": 2}', {"cxr_pneumonia": 2}),
    ("AIDX_SHADOW_QUEUE_SIZE", "shadow.queue_size", "8", 8),
    ("AIDX_SHADOW_THREADS", "shadow.threads", "2", 2),
    ("AIDX_SHADOW_NICE", "shadow.nice", "5", 5),
]  # fmt: skip
# Settings that were constants in the code before they were sections' fields.
NEW = {
    "AIDX_SHUTDOWN_TIMEOUT_S", "AIDX_CT_MAX_UPLOAD_BYTES", "AIDX_CT_MAX_INSTANCES",
    "AIDX_LABS_MLLP_HOST", "AIDX_LABS_MLLP_MAX_FRAME_BYTES", "AIDX_LABS_MLLP_FRAME_TIMEOUT_S",
    "AIDX_LABS_MLLP_IDLE_TIMEOUT_S", "AIDX_LABS_STREAM_KEEPALIVE_S", "AIDX_LABS_STREAM_MAX_S",
    "AIDX_LABS_STREAM_REPLAY_MAX", "AIDX_PACS_CONNECT_TIMEOUT_S", "AIDX_PACS_STOW_TIMEOUT_S",
    "AIDX_PACS_READ_TIMEOUT_S", "AIDX_FHIR_TIMEOUT_S", "AIDX_DICOM_SCP_HOST",
}  # fmt: skip
IDS = [row[0] for row in VARIABLES]


def at(settings: BaseModel, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def leaf_paths(model: type[BaseModel], sections: dict[str, type[BaseModel]]) -> set[str]:
    paths = set()
    for name in model.model_fields:
        section = sections.get(name)
        paths |= {f"{name}.{f}" for f in section.model_fields} if section else {name}
    return paths


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean environment in development mode (no keys needed)."""
    import os

    for name in [n for n in os.environ if n.startswith("AIDX_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AIDX_MODE", "development")
    monkeypatch.setenv("AIDX_TRITON_URL", "triton:8000")  # so AIDX_BACKEND=triton is valid
    return monkeypatch


@pytest.mark.parametrize(("variable", "path", "raw", "expected"), VARIABLES, ids=IDS)
def test_every_variable_lands_in_its_section(
    env: pytest.MonkeyPatch, variable: str, path: str, raw: str, expected: Any
) -> None:
    env.setenv(variable, raw)
    assert at(Settings(_env_file=None), path) == expected  # type: ignore[call-arg]


@pytest.mark.parametrize(("variable", "path", "raw", "expected"), VARIABLES, ids=IDS)
def test_a_flat_keyword_sets_what_its_variable_sets(
    env: pytest.MonkeyPatch, variable: str, path: str, raw: str, expected: Any
) -> None:
    keyword = variable.removeprefix("AIDX_").lower()
    assert at(Settings(_env_file=None, **{keyword: expected}), path) == expected  # type: ignore[arg-type]


def test_the_variables_name_every_setting_once() -> None:
    assert sorted(path for _, path, _, _ in VARIABLES) == sorted(
        leaf_paths(Settings, Settings.sections())
    )
    for variable, path, _, _ in VARIABLES:  # the name is the path, "." read as "_"
        assert variable == "AIDX_" + path.replace(".", "_").upper()
    assert set(IDS) >= NEW


def test_no_top_level_setting_could_be_read_as_a_section() -> None:
    sections = Settings.sections()
    for name in Settings.model_fields:
        assert not any(name.startswith(f"{s}_") for s in sections), name


def test_defaults_did_not_move(env: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.ct.max_upload_bytes, settings.ct.max_instances) == (1 << 30, 4096)
    assert (settings.labs.mllp_host, settings.dicom.scp_host) == ("127.0.0.1", "127.0.0.1")
    assert settings.labs.stream_keepalive_s == 15 and settings.labs.stream_max_s == 300
    assert settings.labs.stream_replay_max == 1000
    assert settings.pacs.connect_timeout_s == 10  # the one PACS connect timeout
    assert (settings.pacs.stow_timeout_s, settings.pacs.read_timeout_s) == (60, 120)
    assert settings.fhir.timeout_s == 30 and settings.shutdown_timeout_s == 10


def test_a_keyword_wins_over_the_environment_and_sections_merge(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("AIDX_PACS_AE_TITLE", "FROM-ENV")
    env.setenv("AIDX_PACS_DICOM_PORT", "104")
    assert Settings(pacs_ae_title="KW").pacs.ae_title == "KW"  # type: ignore[call-arg]
    merged = Settings(pacs={"dicomweb_url": "http://pacs"})  # type: ignore[call-arg, arg-type]
    assert (merged.pacs.dicomweb_url, merged.pacs.ae_title) == ("http://pacs", "FROM-ENV")
    both = Settings(pacs={"dicom_port": 11112}, pacs_ae_title="KW")  # type: ignore[call-arg, arg-type]
    assert (both.pacs.dicom_port, both.pacs.ae_title) == (11112, "KW")


def test_a_dotenv_file_uses_the_same_names(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("AIDX_PACS_DICOMWEB_URL=http://pacs/dicom-web\nAIDX_WSI_READERS=3\n")
    settings = Settings(_env_file=dotenv)  # type: ignore[call-arg]
    assert settings.pacs.dicomweb_url == "http://pacs/dicom-web" and settings.wsi.readers == 3


@pytest.mark.parametrize(
    ("variables", "refusal"),
    [
        ({"AIDX_MODE": "production"}, "no API keys configured"),
        ({"AIDX_MODE": "production", "AIDX_API_KEYS": KEYS, "AIDX_DEV_API_KEY": "d" * 40},
         "development mode only"),
        ({"AIDX_BACKEND": "triton", "AIDX_TRITON_URL": ""}, "needs AIDX_TRITON_URL"),
        ({"AIDX_WSI_JOB_HEARTBEAT_S": "20"}, "at least twice AIDX_WSI_JOB_HEARTBEAT_S"),
    ],
)  # fmt: skip
def test_refusals_still_hold_with_sections(
    env: pytest.MonkeyPatch, variables: dict[str, str], refusal: str
) -> None:
    for name, value in variables.items():
        env.setenv(name, value)
    with pytest.raises(ValidationError, match=refusal):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_option_classes_default_to_the_settings() -> None:
    outbox, triton, gpu = OutboxSettings(), TritonSettings(), GpuSettings()
    assert Backoff() == Backoff(outbox.backoff_base_s, outbox.backoff_max_s, outbox.max_attempts)
    worker = inspect.signature(OutboxWorker).parameters
    assert (worker["poll_s"].default, worker["lease_s"].default) == (outbox.poll_s, outbox.lease_s)
    options = TritonOptions.from_settings(triton.model_copy(update={"url": "t:1"}), port=1)
    assert TritonOptions(url="t:1", region_prefix=options.region_prefix) == options
    assert GpuOptions() == GpuOptions.from_settings(gpu)  # gpu/ cannot import the settings
    assert inspect.signature(StoreScp).parameters["host"].default == DicomSettings().scp_host
