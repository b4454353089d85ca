"""Shadow models, on the real demo model: version 1 serves, and a candidate folder 2
beside it holds the same weights under its own card (so the two must agree on every
call and their scores correlate perfectly). The shadow runs on the same batches, its
comparison is stored and shown, it never writes anything back, the client's answer is
the same with and without it, and a full queue drops and counts."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from aidx.inference.metrics import ServiceMetrics
from aidx.inference.model_card import parse_card_text, render_card
from aidx.inference.repository import load_entry, scan
from aidx.inference.schema import outbox, shadow_batches
from aidx.inference.serving import ModelService
from aidx.inference.settings import Role
from aidx.inference.shadow import ShadowRunner
from aidx.inference.shadow_store import ShadowStore
from aidx.inference.store import create_store, init_store
from aidx.service.app import create_app
from tests.conftest import MODELS, auth, dicom_bytes, make_settings
from tests.waiting import wait_until

MODEL = "cxr_pneumonia"
CANDIDATE = {MODEL: 2}
CXR = {"Content-Type": "application/dicom", **auth(Role.radiologist)}


def with_candidate(root: Path) -> Path:
    """A repository holding the demo model and a candidate folder 2: version 1's files
    under a card of its own (version 2, its files' checksums), as a recipe writes it."""
    model = root / MODEL
    shutil.copytree(MODELS / MODEL, model)
    shutil.rmtree(model / "2", ignore_errors=True)  # the committed candidate's weights
    shutil.copytree(model / "1", model / "2")
    front, body = parse_card_text((model / "card.md").read_text())
    assert front.ood is not None
    files = {name.replace("1/", "2/", 1): sha for name, sha in front.files.items()}
    ood = front.ood.model_copy(update={"file": "2/ood.npz"})
    front = front.model_copy(update={"version": 2, "files": files, "ood": ood})
    (model / "2" / "card.md").write_text(render_card(front, body))
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return with_candidate(tmp_path / "models")


def test_the_card_names_the_serving_version_beside_a_candidate_folder(repo: Path) -> None:
    (entry,) = scan(repo, [MODEL])
    assert entry.version == 1 and entry.problem is None  # not the newest folder, 2
    candidate = load_entry(repo / MODEL, version=2)
    assert candidate.problem is None and candidate.checks == {"sha256": True}
    assert candidate.card is not None and candidate.card.version == 2  # its own card
    (chosen,) = scan(repo, [MODEL], serving={MODEL: 2})  # the setting wins
    assert chosen.version == 2 and chosen.card is not None and chosen.card.version == 2


def inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.uniform(-1024, 1024, (n, 1, 224, 224)).astype(np.float32)}


def test_the_shadow_runs_each_served_batch_and_its_comparison_is_stored(
    tmp_path: Path, repo: Path
) -> None:
    db = create_store(f"sqlite:///{tmp_path / 'aidx.db'}")
    init_store(db)
    store = ShadowStore(db)
    settings = make_settings(
        tmp_path, model_repository=repo, enabled_models=[MODEL], shadow_versions=CANDIDATE
    )

    async def serve() -> list[dict[str, np.ndarray]]:
        service = ModelService(settings, shadow_record=store.add)
        await service.start()
        outs = [(await service.infer(MODEL, inputs(3, seed))).outputs for seed in range(4)]
        served = service.find(MODEL)
        assert served.shadow is not None
        await asyncio.to_thread(served.shadow.drain)
        await service.stop()
        return outs

    outputs = asyncio.run(serve())
    (pair,) = store.summaries(MODEL)[MODEL]
    assert (pair.serving_version, pair.shadow_version) == (1, 2)
    assert pair.items == 12 and pair.batches >= 1
    assert pair.serving_s > 0 and pair.shadow_s > 0
    assert set(pair.labels) == {"Pneumonia", "Cardiomegaly"}
    served_scores = 1 / (1 + np.exp(-np.concatenate([o["logits"] for o in outputs])))
    v1_card = load_entry(repo / MODEL).card
    assert v1_card is not None
    for i, label in enumerate(v1_card.labels):
        tally = pair.labels[label.name]
        assert tally.n == tally.decided == 12
        # the same weights: every call agrees, the scores correlate perfectly
        assert tally.agree == 12 and tally.serving_only == tally.shadow_only == 0
        assert tally.correlation == pytest.approx(1.0, abs=1e-6)
        # the stored serving scores are the scores the callers got
        assert tally.sum_x == pytest.approx(served_scores[:, i].sum(), rel=1e-5)
        assert tally.both_present == int((served_scores[:, i] >= label.threshold).sum())
    db.dispose()


class Recording:
    def __init__(self) -> None:
        self.dropped: list[tuple[str, int, int]] = []

    def shadow_ran(self, batch: Any) -> None:
        raise AssertionError("nothing runs: the runner was never started")

    def shadow_dropped(self, model: str, serving: int, shadow: int) -> None:
        self.dropped.append((model, serving, shadow))


def test_a_full_queue_drops_the_batch_and_counts_it_without_waiting(repo: Path) -> None:
    serving, candidate = load_entry(repo / MODEL), load_entry(repo / MODEL, version=2)
    seen, metrics = Recording(), ServiceMetrics()
    runner = ShadowRunner(serving, candidate, lambda x: x, queue_size=2, observer=seen)
    batch = inputs(1, 0)
    assert [runner.offer(batch, {}, 0.01) for _ in range(5)] == [True, True, False, False, False]
    assert runner.dropped == 3 and seen.dropped == [(MODEL, 1, 2)] * 3
    for model, s, t in seen.dropped:
        metrics.shadow_dropped(model, s, t)
    text = metrics.registry.get_sample_value(
        "aidx_shadow_dropped_total", {"model": MODEL, "serving": "1", "shadow": "2"}
    )
    assert text == 3.0
    runner.stop()  # never started: what waits is discarded


@dataclass
class Run:
    answer: dict[str, Any]
    outbox: list[tuple[str, str, str | None]]  # destination, kind, report id
    sink_files: dict[str, int]  # objects written per destination folder
    shadow_api: dict[str, Any]
    metrics: str
    stored_batches: int


def delivered(client: TestClient) -> tuple[int, int]:
    """Objects delivered to the PACS and the EMR (their folders here)."""
    found = client.get("/v1/outbox", headers=auth(Role.engineer)).json()["destinations"]
    return tuple(found.get(d, {}).get("delivered", 0) for d in ("pacs", "emr"))  # type: ignore[return-value]


def analyse_once(var: Path, repo: Path, shadow: dict[str, int]) -> Run:
    settings = make_settings(
        var, model_repository=repo, enabled_models=[MODEL], outbox_poll_s=0.05,
        shadow_versions=shadow,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/cxr", content=dicom_bytes("RG1_UNCR.dcm"), headers=CXR)
        assert answer.status_code == 200
        svc = client.app.state.services  # type: ignore[attr-defined]
        runner = svc.models.find(MODEL).shadow
        if runner is not None:
            runner.drain()
        wait_until(lambda: delivered(client) == (2, 1), what="the write-back")
        api = client.get(f"/v1/models/{MODEL}/shadow", headers=auth(Role.engineer))
        assert api.status_code == 200
        forbidden = client.get(f"/v1/models/{MODEL}/shadow", headers=auth(Role.radiologist))
        assert forbidden.status_code == 403
        with svc.db.connect() as conn:
            rows = conn.execute(select(outbox.c.destination, outbox.c.kind, outbox.c.report_id))
            stored = conn.execute(select(shadow_batches.c.seq)).all()
            run = Run(
                answer.json(), sorted(tuple(r) for r in rows),  # type: ignore[misc]
                {d.name: len(list(d.iterdir())) for d in (var / "outbox").iterdir()},
                api.json(), client.get("/metrics").text, len(stored),
            )  # fmt: skip
    return run


def test_the_answer_and_the_write_back_are_the_serving_versions_alone(
    tmp_path: Path, repo: Path
) -> None:
    plain = analyse_once(tmp_path / "plain", repo, {})
    shadowed = analyse_once(tmp_path / "shadowed", repo, CANDIDATE)
    for run in (plain, shadowed):
        run.answer.pop("timings")
        run.answer.pop("created_at", None)
        run.answer.pop("turnaround")  # its times of day
    assert shadowed.answer == plain.answer  # the client cannot tell a shadow ran
    assert shadowed.answer["model"]["version"] == 1
    report = shadowed.answer["id"]
    # the outbox holds the serving report's objects, the same as without a shadow
    assert shadowed.outbox == plain.outbox
    assert {rid for _, _, rid in shadowed.outbox} == {report}
    assert shadowed.sink_files == plain.sink_files
    # ... while the shadow's comparison is stored and shown
    assert (plain.stored_batches, shadowed.stored_batches) == (0, 1)
    api = shadowed.shadow_api
    assert (api["state"], api["serving_version"], api["shadow_version"]) == ("running", 1, 2)
    (pair,) = api["stored"]
    assert pair["items"] == 1 and pair["agreement"] == {"rate": 1.0, "count": 2, "n": 2}
    assert pair["labels"]["Pneumonia"]["score_correlation"]["n"] == 1
    assert api["running"]["dropped"] == 0
    assert plain.shadow_api["state"] == "off" and plain.shadow_api["stored"] == []
    assert 'aidx_shadow_decisions{model="cxr_pneumonia",serving="1",shadow="2"} 2.0' in (
        shadowed.metrics
    )
    assert 'aidx_shadow_latency_seconds_count{model="cxr_pneumonia",role="shadow",version="2"}' in (
        shadowed.metrics
    )


def test_a_candidate_that_cannot_load_leaves_the_serving_version_serving(
    tmp_path: Path, repo: Path
) -> None:
    model = repo / MODEL / "2" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")  # its checksum no longer matches
    settings = make_settings(
        tmp_path, model_repository=repo, enabled_models=[MODEL], shadow_versions=CANDIDATE
    )

    async def load() -> None:
        service = ModelService(settings)
        await service.start()
        served = service.get_ready(MODEL)
        assert served.shadow is None and "checksum mismatch" in (served.shadow_reason or "")
        await service.stop()

    asyncio.run(load())


def test_the_committed_candidate_is_its_recipes_and_the_card_keeps_version_1_serving() -> None:
    (entry,) = scan(MODELS, [MODEL])
    assert entry.version == 1 and entry.problem is None
    candidate = load_entry(MODELS / MODEL, version=2)
    assert candidate.problem is None and candidate.checks == {"sha256": True}
    assert candidate.card is not None and candidate.card.version == 2
    assert candidate.card.cxr is not None and len(candidate.card.cxr.labels) == 2
