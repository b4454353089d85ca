"""The monitoring shipped in deploy/: Prometheus's alerting rules pass `promtool check
rules` and their unit tests (drift, outbox, agreement, OOD alerts fire when they
should and not before), its configuration passes `promtool check config`, and the
Grafana dashboard parses, every panel's PromQL parses, and names only metrics the app
exports. promtool comes from Debian's prometheus package (`make peers`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from aidx.service.app import create_app
from aidx.service.container import Services

from ..conftest import make_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "aidx.json"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
             "summary": ("_count", "_sum")}  # fmt: skip
_METRIC = re.compile(r"\b((?:aidx|process)_[a-zA-Z0-9_]*)")


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `make peers` installs Debian's prometheus package"
    return subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Every series name the app's registry exports (counters with _total,
    histograms with _bucket, _count and _sum)."""
    settings = make_settings(
        tmp_path_factory.mktemp("monitoring"), enabled_models=["cxr_pneumonia"]
    )
    with TestClient(create_app(settings)) as client:
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        names: set[str] = set()
        for family in services.metrics.registry.collect():
            names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
        yield names


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
    ]


def _rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def test_the_rules_pass_promtool_check_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yml", cwd=RULES.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    unit_tests = yaml.safe_load((RULES.parent / "alerts_test.yml").read_text())["tests"]
    covered = {t["alertname"] for test in unit_tests for t in test["alert_rule_test"]}
    assert {"AidxInputDrift", "AidxOutboxBacklog", "AidxOutboxDeadEntries"} <= covered


def test_the_prometheus_configuration_passes_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]  # as compose mounts it
    config["rule_files"] = [str(RULES)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """Each panel's PromQL, its Grafana variables given values, as a recording rule
    that promtool parses."""
    exprs = _dashboard_exprs()
    assert len(exprs) >= 20
    rules = [
        {"record": f"aidx:panel_{i}", "expr": expr.replace("$__rate_interval", "5m")
         .replace("$model", ".*")}
        for i, (_, expr) in enumerate(exprs)
    ]  # fmt: skip
    (tmp_path / "panels.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]})
    )
    checked = promtool("check", "rules", "panels.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_and_rules_name_only_metrics_the_app_exports(exported: set[str]) -> None:
    assert {"aidx_feedback_answers", "aidx_feedback_group_answers", "aidx_reports_total",
            "aidx_turnaround_seconds_bucket", "aidx_outbox_entries", "aidx_drift_alert",
            "aidx_drift_psi", "aidx_shadow_agreement"} <= exported  # fmt: skip
    unknown = {
        (where, name)
        for where, expr in [*_dashboard_exprs(), *_rule_exprs()]
        for name in _METRIC.findall(expr)
        if name not in exported
    }
    assert unknown == set()


def test_compose_runs_prometheus_and_grafana_with_the_files_here() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), (name, source)
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert provisioned["url"] == "http://prometheus:9090"
    uids = {p["datasource"]["uid"] for p in _panels(json.loads(DASHBOARD.read_text()))
            if "datasource" in p}  # fmt: skip
    assert uids == {provisioned["uid"]}
