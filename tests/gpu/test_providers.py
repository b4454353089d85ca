"""Execution providers: options from settings, instance_group pinning, and, on a
machine with a CUDA device, CUDA against CPU for every model with stated tolerances.

The `gpu` tests run whenever the CUDA driver reports a device and are skipped only
when it reports none; a device whose CUDA provider fails to load fails them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from google.protobuf import text_format

from aidx.gpu.providers import (
    CPU,
    CUDA,
    TENSORRT,
    GpuOptions,
    Placement,
    cuda_device_count,
    cuda_options,
    device_name,
    placements,
    select_providers,
    tensorrt_options,
)
from aidx.inference.repository import ModelConfig, scan
from aidx.inference.settings import Role
from aidx.service.app import create_app

from ..conftest import MODELS, auth, make_settings

needs_cuda = pytest.mark.skipif(cuda_device_count() == 0, reason="no CUDA device present")
CUDA_TOLERANCE = 1e-3  # max|cuda - cpu| / max(max|cpu|, 1), as benchmarks/gpu_check.py


def config(text: str) -> ModelConfig:
    return text_format.Parse(text, ModelConfig())


def test_provider_options_come_from_settings(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        gpu_device_id=1,
        gpu_tensorrt=True,
        gpu_fp16=True,
        gpu_trt_engine_cache_dir=tmp_path / "trt",
        gpu_cudnn_conv_algo_search="HEURISTIC",
        gpu_mem_limit_bytes=2 * 1024**3,
    )
    options = GpuOptions.from_settings(settings.gpu)
    assert cuda_options(options, 1) == {
        "device_id": "1",
        "cudnn_conv_algo_search": "HEURISTIC",
        "arena_extend_strategy": "kSameAsRequested",
        "gpu_mem_limit": str(2 * 1024**3),
    }
    trt = tensorrt_options(options, 1)
    assert trt["trt_fp16_enable"] == "True" and trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "trt")


def test_instance_group_places_count_copies_on_each_listed_gpu() -> None:
    """Triton's rule: `count` per group, on each of its `gpus`; KIND_CPU on the CPU."""
    two_gpus = config("instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] } ]")
    cuda = [Placement("cuda", n) for n in (0, 0, 1, 1)]
    assert placements(two_gpus, "cuda") == cuda
    assert placements(two_gpus, "cpu") == [Placement("cpu", 0)] * 2  # AIDX_DEVICE=cpu wins
    mixed = config(
        "instance_group [ { count: 1 kind: KIND_GPU gpus: [ 1 ] }, { count: 2 kind: KIND_CPU } ]"
    )
    assert placements(mixed, "cuda") == [Placement("cuda", 1)] + [Placement("cpu", 0)] * 2
    auto = config("instance_group [ { kind: KIND_AUTO } ]")
    assert placements(auto, "cuda", 3) == [Placement("cuda", 3)]  # the default GPU
    assert placements(config(""), "cuda", 2) == [Placement("cuda", 2)]


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a CUDA device")
def test_without_a_gpu_auto_places_every_instance_on_the_cpu() -> None:
    two_gpus = config("instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] } ]")
    assert placements(two_gpus, "auto") == [Placement("cpu", 0)] * 2


def test_cpu_is_chosen_when_asked_and_names_the_device() -> None:
    assert select_providers("cpu") == [CPU]
    assert device_name(CPU) == "cpu"
    assert device_name(CUDA) == device_name(TENSORRT) == "cuda"


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a CUDA device")
def test_without_a_gpu_auto_serves_on_cpu_and_cuda_is_refused(tmp_path: Path) -> None:
    assert select_providers("auto") == [CPU]
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        select_providers("cuda")
    settings = make_settings(tmp_path, enabled_models=["cxr_pneumonia"], writeback=False)
    with TestClient(create_app(settings)) as client:
        (model,) = client.get("/v1/models", headers=auth(Role.engineer)).json()
    assert (model["provider"], model["device"]) == (CPU, "cpu")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("entry", scan(MODELS), ids=lambda e: e.name)
def test_cuda_outputs_match_cpu(entry: object) -> None:
    from aidx.inference.runtime import session_options

    path = str(entry.model_path)  # type: ignore[attr-defined]
    cpu = ort.InferenceSession(path, session_options(), providers=[CPU])
    gpu = ort.InferenceSession(path, session_options(), providers=select_providers("cuda")[-2:])
    assert gpu.get_providers()[0] == CUDA  # no silent fallback
    rng = np.random.default_rng(0)
    feed = {}
    for i in cpu.get_inputs():
        shape = [4 if not isinstance(d, int) else d for d in i.shape]
        if "uint8" in i.type:
            feed[i.name] = rng.integers(0, 256, shape).astype(np.uint8)
        else:
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
    for ref, got in zip(cpu.run(None, feed), gpu.run(None, feed), strict=True):
        scale = max(float(np.max(np.abs(ref))), 1.0)
        assert float(np.max(np.abs(got - ref))) / scale <= CUDA_TOLERANCE


@pytest.mark.gpu
@needs_cuda
def test_models_report_the_gpu_provider_actually_in_use(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, device="cuda", writeback=False)
    with TestClient(create_app(settings)) as client:
        models = {
            m["name"]: m for m in client.get("/v1/models", headers=auth(Role.engineer)).json()
        }
    assert models["cxr_pneumonia"]["provider"] == CUDA
    assert models["cxr_pneumonia"]["device"] == "cuda"
    assert models["labs_anomaly"]["provider"] == CPU  # its instance_group says KIND_CPU


def _copy_with_instances(tmp_path: Path, group: str) -> Path:
    from ..inference.test_runtime import with_instances

    return with_instances(tmp_path, group) / "cxr_pneumonia"


@pytest.mark.gpu
@needs_cuda
def test_gpu_instances_run_through_io_binding_and_match_cpu(tmp_path: Path) -> None:
    from aidx.inference.repository import load_entry
    from aidx.inference.runtime import OnnxModel, run_bound

    folder = _copy_with_instances(tmp_path, "{ count: 2 kind: KIND_GPU gpus: [ 0 ] }")
    entry = load_entry(folder)
    model = OnnxModel(entry, device="cuda")
    assert [i.placement for i in model.instances] == [Placement("cuda", 0)] * 2
    assert all(i.provider == CUDA and i.bind_outputs_on == "cuda" for i in model.instances)
    assert (model.provider, model.device) == (CUDA, "cuda")
    x = np.random.default_rng(1).uniform(-1024, 1024, (4, 1, 224, 224)).astype(np.float32)
    cpu = ort.InferenceSession(str(entry.model_path), providers=[CPU])
    want = cpu.run(model.output_names, {"image": x})
    for instance in model.instances:  # each copy, through IO binding on the GPU
        got = instance.run(model.output_names, {"image": x})
        plain = instance.session.run(model.output_names, {"image": x})
        for ref, bound, unbound in zip(want, got, plain, strict=True):
            scale = max(float(np.max(np.abs(ref))), 1.0)
            assert float(np.max(np.abs(bound - ref))) / scale <= CUDA_TOLERANCE
            np.testing.assert_allclose(bound, unbound, rtol=1e-5, atol=1e-5)
    # Outputs bound on the host from a CUDA session: the same values.
    on_host = run_bound(model.instances[0].session, model.output_names, {"image": x}, "cpu")
    for ref, got in zip(want, on_host, strict=True):
        scale = max(float(np.max(np.abs(ref))), 1.0)
        assert float(np.max(np.abs(got - ref))) / scale <= CUDA_TOLERANCE


@pytest.mark.gpu
@pytest.mark.skipif(cuda_device_count() < 2, reason="fewer than two CUDA devices")
def test_instances_are_placed_on_each_listed_gpu(tmp_path: Path) -> None:
    from aidx.inference.repository import load_entry
    from aidx.inference.runtime import OnnxModel

    folder = _copy_with_instances(tmp_path, "{ count: 1 kind: KIND_GPU gpus: [ 0, 1 ] }")
    model = OnnxModel(load_entry(folder), device="auto")
    assert [i.describe()["device_id"] for i in model.instances] == [0, 1]
    assert all(i.provider == CUDA for i in model.instances)
