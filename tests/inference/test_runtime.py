"""The in-process runtime: one session per instance_group instance, lent out one caller
at a time, cores split between them, and the IO-binding path against plain runs."""

from __future__ import annotations

import queue
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from aidx.gpu.providers import CPU, GpuOptions, Placement
from aidx.inference.repository import ModelEntry, load_entry
from aidx.inference.runtime import (
    Instance,
    OnnxModel,
    Pool,
    cpu_count,
    make_instance,
    run_bound,
    threads_per_instance,
)
from aidx.inference.settings import Role
from aidx.service.app import create_app

from ..conftest import MODELS, auth, make_settings

MODEL = "cxr_pneumonia"


def with_instances(tmp_path: Path, group: str) -> Path:
    """A copy of the demo model whose config.pbtxt has `group` as its instance_group."""
    repo = tmp_path / "models"
    shutil.copytree(MODELS / MODEL, repo / MODEL)
    config = repo / MODEL / "config.pbtxt"
    text = config.read_text()
    start = text.index("instance_group")
    end = text.index("]", start) + 1
    config.write_text(text[:start] + f"instance_group [ {group} ]" + text[end:])
    return repo


def images(batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1024, 1024, (batch, 1, 224, 224)).astype(np.float32)


@pytest.fixture(scope="module")
def entry() -> ModelEntry:
    return load_entry(MODELS / MODEL)


@pytest.fixture(scope="module")
def session(entry: ModelEntry) -> ort.InferenceSession:
    return ort.InferenceSession(str(entry.model_path), providers=[CPU])


def test_several_instances_split_the_cores_unless_told() -> None:
    assert threads_per_instance(0, 1, cores=8) == 0  # one instance: onnxruntime's default
    assert threads_per_instance(0, 2, cores=8) == 4
    assert threads_per_instance(0, 3, cores=2) == 1  # never fewer than one
    assert threads_per_instance(3, 4, cores=2) == 3  # AIDX_CPU_THREADS_PER_INSTANCE wins


def test_each_cpu_instance_is_its_own_session_with_its_share_of_the_cores(
    tmp_path: Path,
) -> None:
    repo = with_instances(tmp_path, "{ count: 3 kind: KIND_CPU }")
    model = OnnxModel(load_entry(repo / MODEL), device="auto")
    assert len(model.instances) == 3
    assert len({id(i.session) for i in model.instances}) == 3
    for instance in model.instances:
        assert instance.provider == CPU and instance.bind_outputs_on is None
        threads = instance.session.get_session_options().intra_op_num_threads
        assert threads == max(1, cpu_count() // 3)
    assert (model.provider, model.device) == (CPU, "cpu")


def test_concurrent_runs_across_instances_give_the_reference_outputs(
    tmp_path: Path, session: ort.InferenceSession
) -> None:
    repo = with_instances(tmp_path, "{ count: 2 kind: KIND_CPU }")
    model = OnnxModel(load_entry(repo / MODEL), device="cpu")
    batches = [images(1 + i % 3, seed=i) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: model.run({"image": x}), batches))
    for x, out in zip(batches, got, strict=True):
        want = session.run(["logits", "cam"], {"image": x})
        np.testing.assert_allclose(out["logits"], want[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["cam"], want[1], rtol=1e-5, atol=1e-5)


def test_a_gpu_config_on_a_cpu_only_setting_makes_count_cpu_copies(tmp_path: Path) -> None:
    """AIDX_DEVICE=cpu wins over KIND_GPU; `count` copies, not count per listed GPU."""
    repo = with_instances(tmp_path, "{ count: 2 kind: KIND_GPU gpus: [ 0, 1 ] }")
    model = OnnxModel(load_entry(repo / MODEL), device="cpu")
    assert [i.placement for i in model.instances] == [Placement("cpu", 0)] * 2


def test_the_pool_lends_each_item_to_one_borrower_at_a_time() -> None:
    pool = Pool(["a", "b"])
    got: list[str] = []

    def borrow_one() -> None:
        with pool.borrow() as item:
            got.append(item)

    with pool.borrow() as first, pool.borrow() as second:
        assert {first, second} == {"a", "b"}
        with pytest.raises(queue.Empty), pool.borrow(timeout_s=0.05):
            pass
        waiter = threading.Thread(target=borrow_one)
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive() and not got  # nothing free: it waits
    waiter.join(5)
    assert got and got[0] in {"a", "b"}


@pytest.mark.parametrize("batch", [1, 5])
def test_io_binding_gives_the_outputs_of_a_plain_run(
    session: ort.InferenceSession, batch: int
) -> None:
    names = [o.name for o in session.get_outputs()]
    x = images(batch, seed=batch)
    plain = session.run(names, {"image": x})
    bound = run_bound(session, names, {"image": x}, "cpu")
    for a, b in zip(bound, plain, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    # A strided view is bound from a contiguous copy, with the same answer.
    strided = np.repeat(x, 2, axis=-1)[..., ::2]
    assert not strided.flags.c_contiguous
    again = run_bound(session, names, {"image": strided}, "cpu")
    for a, b in zip(again, plain, strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_instance_with_binding_runs_through_it(
    entry: ModelEntry, session: ort.InferenceSession
) -> None:
    instance = Instance(session, Placement("cpu", 0), CPU, bind_outputs_on="cpu")
    x = images(2, seed=3)
    for a, b in zip(
        instance.run(["logits", "cam"], {"image": x}),
        session.run(["logits", "cam"], {"image": x}),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert instance.describe()["io_binding"] is True
    # IO binding is for CUDA/TensorRT sessions: a CPU session keeps the plain run.
    plain = make_instance(entry, Placement("cpu", 0), 1, GpuOptions(io_binding=True))
    assert plain.bind_outputs_on is None


def test_models_report_each_instance_and_its_provider(tmp_path: Path) -> None:
    repo = with_instances(tmp_path, "{ count: 2 kind: KIND_CPU }")
    settings = make_settings(
        tmp_path, model_repository=repo, enabled_models=[MODEL], writeback=False
    )
    with TestClient(create_app(settings)) as client:
        (model,) = client.get("/v1/models", headers=auth(Role.engineer)).json()
    assert (model["state"], model["provider"], model["device"]) == ("ready", CPU, "cpu")
    assert (
        model["instances"]
        == [{"provider": CPU, "device": "cpu", "device_id": None, "io_binding": False}] * 2
    )
