"""The model repository: Triton configs, cards and checksums."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from aidx.inference.repository import load_entry, scan
from aidx.inference.serving import ModelService, ModelState, batcher_config
from tests.conftest import MODELS, make_settings


def test_the_demo_model_config_is_a_valid_triton_config() -> None:
    (entry,) = [e for e in scan(MODELS) if e.name == "cxr_pneumonia"]
    assert entry.problem is None and entry.checks == {"sha256": True}
    assert entry.config.platform == "onnxruntime_onnx"
    config = batcher_config(entry.config)
    assert config.max_batch_size == entry.config.max_batch_size > 1
    assert config.priority_levels == 2


def test_a_checksum_mismatch_keeps_the_model_out_of_service(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(MODELS / "cxr_pneumonia", repo / "cxr_pneumonia")
    model = repo / "cxr_pneumonia" / "1" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    entry = load_entry(repo / "cxr_pneumonia")
    assert entry.problem is not None and "checksum mismatch" in entry.problem
    service = ModelService(make_settings(tmp_path, model_repository=repo))
    asyncio.run(service.start())
    served = service.models["cxr_pneumonia"]
    assert served.state is ModelState.unavailable and "checksum mismatch" in (served.reason or "")
    assert service.ready is False
    asyncio.run(service.stop())


def test_a_model_without_a_card_is_not_served(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(MODELS / "cxr_pneumonia", repo / "cxr_pneumonia")
    (repo / "cxr_pneumonia" / "card.md").unlink()
    assert "card.md is missing" in (load_entry(repo / "cxr_pneumonia").problem or "")


def test_the_batcher_runs_one_executor_per_model_copy(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(MODELS / "cxr_pneumonia", repo / "cxr_pneumonia")
    config = repo / "cxr_pneumonia" / "config.pbtxt"
    groups = "instance_group [ { count: 2 kind: KIND_CPU }, { count: 1 kind: KIND_AUTO } ]"
    text = config.read_text()
    start = text.index("instance_group")
    config.write_text(text[:start] + groups + text[text.index("]", start) + 1 :])

    async def copies_and_executors() -> tuple[int, int]:
        service = ModelService(make_settings(tmp_path, model_repository=repo, device="cpu"))
        await service.start()
        served = service.get_ready("cxr_pneumonia")
        assert served.batcher is not None and served.runtime is not None
        found = (len(served.runtime.instances), served.batcher.config.instance_count)  # type: ignore[union-attr]
        await service.stop()
        return found

    assert asyncio.run(copies_and_executors()) == (3, 3)
