"""The cluster's monitoring pieces: the dashboard is valid JSON whose queries name only metrics
the roles export, and the kustomizations build (alone, and as a component of an overlay)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cqrs_common import metrics

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "knative" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard-shop.json"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}  # fmt: skip


def kubectl() -> str | None:
    venv = Path(shutil.which("python") or "").parent / "kubectl"
    return shutil.which("kubectl") or (str(venv) if venv.exists() else None)


def exported_names() -> set[str]:
    """Every sample name the roles can export (a labelled metric has no sample before its first
    use, so names come from the families and their types), the store gauges included."""
    metrics.register_outbox(lambda: metrics.OutboxStats(0, 0, 0.0))
    metrics.register_orders_logged(lambda: 0)
    metrics.register_orders_counted(lambda: 0)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",), "summary": ("", "_count", "_sum")}  # fmt: skip
    return {
        family.name + suffix
        for family in metrics.REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside strings, label
    matchers, grouping clauses and ranges that are not function calls or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group().lower() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_the_dashboard_is_grafana_json_with_a_panel_per_question() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("orders per second", "error", "lag", "outbox", "p99"):
        assert topic in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_dashboard_query_names_metrics_the_roles_export() -> None:
    known = exported_names()
    used = set().union(*(metric_names(e) for e in expressions()))
    assert used, "no metric names found: the parser is broken"
    assert used <= known, sorted(used - known)


def test_the_name_check_can_fail() -> None:
    assert metric_names('sum by (role) (rate(cqrs_nope_total{a="b(c)"}[5m]))') == {
        "cqrs_nope_total"
    }
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[1m])))") == {
        "x_bucket"
    }
    assert "cqrs_http_requests" not in exported_names()  # the counter is only ..._total


def _build(path: Path) -> list[dict]:
    tool = kubectl()
    if tool is None:
        pytest.skip("kubectl not installed")
    out = subprocess.run(
        [tool, "kustomize", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_the_monitoring_kustomization_builds() -> None:
    docs = _build(MONITORING)
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"PodMonitor", "ConfigMap"}
    config_map = kinds["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    json.loads(config_map["data"]["grafana-dashboard-shop.json"])
    monitor = kinds["PodMonitor"]
    assert monitor["metadata"]["namespace"] == "cqrs"
    services = monitor["spec"]["selector"]["matchExpressions"][0]["values"]
    base = REPO / "knative" / "base"
    for service in services:
        role = service.removeprefix("cqrs-")
        ksvc = yaml.safe_load((base / f"{role}.yaml").read_text())
        # the selector matches the label the role's pods carry
        assert ksvc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == service
    assert len(services) == 6


def test_the_component_adds_otel_and_scrape_settings_to_every_role(tmp_path: Path) -> None:
    shutil.copytree(REPO / "knative", tmp_path / "knative")
    overlay = tmp_path / "knative" / "overlays" / "observed"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../direct]\ncomponents: [../../monitoring/component]\n"
    )
    services = [
        d for d in _build(overlay) if d["kind"] == "Service" and "serving" in d["apiVersion"]
    ]
    assert len(services) == 6
    for ksvc in services:
        template = ksvc["spec"]["template"]
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318")
        assert "LOG_LEVEL" in env  # added to, not replaced
        assert template["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
