"""Prometheus, Grafana and Jaeger as the chart wires them.

- Prometheus's relabelling, run on the rendered pods as Kubernetes service discovery would present them,
  keeps exactly the two services' http ports (and RabbitMQ's metrics port) and gives every target the
  `service` and `pod` labels the dashboards and alert rules select on;
- `promtool check config` accepts the rendered prometheus.yml; `promtool check rules` the rules exactly as
  the chart's ConfigMap carries them;
- Grafana gets the data sources with the uids the dashboards use, and every dashboard of the project.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from saga_dev.chart import CHART_DIR
from tests.support.chart import ALL_VARIANTS, Rendered, rendered_variant, require_tool

DASHBOARDS = sorted((CHART_DIR / "files" / "grafana" / "dashboards").glob("*.json"))
RULES_FILE = CHART_DIR / "files" / "prometheus" / "alerts.yaml"


def prometheus_config(rendered: Rendered) -> dict[str, Any]:
    config_map = next(c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-prometheus"))
    return config_map["data"]


def sd_targets(rendered: Rendered) -> list[dict[str, str]]:
    """What kubernetes_sd_configs (role: pod) yields: one target per container port of every running pod."""
    namespace = rendered.objects[0]["metadata"]["namespace"]
    targets = []
    for workload in rendered.workloads():
        for index in range(workload.owner.get("spec", {}).get("replicas", 1) if workload.owner["kind"] != "Pod" else 1):
            labels = {
                f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v for k, v in workload.labels.items()
            }
            for container in workload.containers(init=False):
                for port in container.get("ports", []):
                    targets.append(
                        {
                            **labels,
                            "__address__": f"10.0.0.{index}:{port['containerPort']}",
                            "__meta_kubernetes_namespace": namespace,
                            "__meta_kubernetes_pod_name": f"{workload.owner['metadata']['name']}-{index}",
                            "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                            "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                            "__meta_kubernetes_pod_phase": "Succeeded"
                            if workload.owner["kind"] in {"Job", "Pod"}
                            else "Running",
                        }
                    )
    return targets


def relabel(labels: dict[str, str], configs: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus relabelling: keep, drop, replace (the actions the chart uses), anchored regexes."""
    labels = dict(labels)
    for config in configs:
        action = config.get("action", "replace")
        value = config.get("separator", ";").join(labels.get(name, "") for name in config.get("source_labels", []))
        regex = re.compile(f"^(?:{config.get('regex', '(.*)')})$")
        match = regex.match(value)
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            replacement = re.sub(r"\$\{?(\d+)\}?", r"\\\1", config.get("replacement", "$1"))
            labels[config["target_label"]] = match.expand(replacement)
    return labels


@pytest.mark.parametrize(
    "variant", [v for v in ALL_VARIANTS if rendered_variant(v).values.get("prometheus", {}).get("enabled", True)]
)
def test_prometheus_scrapes_both_services_with_service_and_pod_labels(variant: str) -> None:
    rendered = rendered_variant(variant)
    config = yaml.safe_load(prometheus_config(rendered)["prometheus.yml"])
    kept: dict[str, list[dict[str, str]]] = {}
    for job in config["scrape_configs"]:
        for target in sd_targets(rendered):
            result = relabel(target, job["relabel_configs"])
            if result is not None:
                kept.setdefault(job["job_name"], []).append(result)
    services = kept["saga-services"]
    assert {t["service"] for t in services} == {"order-service", "customer-service"}
    for target in services:
        workload = rendered.workload(target["service"])
        port = workload.containers()[0]["ports"][0]["containerPort"]
        assert target["__address__"].endswith(f":{port}"), "the http port, where /metrics is"
        assert target["pod"].startswith(workload.owner["metadata"]["name"])
    assert config["scrape_configs"][0]["metrics_path"] == "/metrics"
    rabbitmq = kept["rabbitmq"]
    assert {t["service"] for t in rabbitmq} == {"rabbitmq"} and all(
        t["__address__"].endswith(":15692") for t in rabbitmq
    )
    assert all(t.get("pod") for targets in kept.values() for t in targets)


def test_the_relabelling_simulation_drops_what_it_should() -> None:
    """Guard the simulation itself: a pod of another release, or a finished Job, is not scraped."""
    rendered = rendered_variant("defaults")
    job = yaml.safe_load(prometheus_config(rendered)["prometheus.yml"])["scrape_configs"][0]
    target = next(
        t
        for t in sd_targets(rendered)
        if t.get("__meta_kubernetes_pod_label_app_kubernetes_io_component") == "order-service"
    )
    assert relabel(target, job["relabel_configs"]) is not None
    assert (
        relabel({**target, "__meta_kubernetes_pod_label_app_kubernetes_io_instance": "other"}, job["relabel_configs"])
        is None
    )
    assert relabel({**target, "__meta_kubernetes_pod_phase": "Succeeded"}, job["relabel_configs"]) is None


def test_promtool_accepts_the_rendered_config_and_rules(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "prometheus")
    data = prometheus_config(rendered_variant("defaults"))
    assert "alerts.yaml" in data, "the project's alert rules are in the ConfigMap"
    (tmp_path / "alerts.yaml").write_text(data["alerts.yaml"])
    config = yaml.safe_load(data["prometheus.yml"])
    assert config["rule_files"] == ["/etc/prometheus/alerts.yaml"]
    config["rule_files"] = [str(tmp_path / "alerts.yaml")]
    # Debian's promtool is built without Kubernetes discovery: check that block here, and the rest of the
    # file (globals, relabelling, rule files) with promtool, the discovery swapped for a static target.
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod", "namespaces": {"names": ["saga"]}}]
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    for command in (
        ["check", "rules", str(tmp_path / "alerts.yaml")],
        ["check", "config", str(tmp_path / "prometheus.yml")],
    ):
        result = subprocess.run([promtool, *command], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_in_the_chart_are_the_project_rules() -> None:
    data = prometheus_config(rendered_variant("defaults"))
    assert yaml.safe_load(data["alerts.yaml"]) == yaml.safe_load(RULES_FILE.read_text())
    # Every rule selects the services by the label the scrape config attaches.
    assert "service=" in data["alerts.yaml"]


def grafana_data(rendered: Rendered, suffix: str) -> dict[str, str]:
    return next(c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"].endswith(suffix))["data"] or {}


def test_grafana_provisions_the_data_sources_with_fixed_uids() -> None:
    rendered = rendered_variant("defaults")
    sources = yaml.safe_load(grafana_data(rendered, "-grafana")["datasources.yaml"])["datasources"]
    by_uid = {s["uid"]: s for s in sources}
    assert set(by_uid) == {"prometheus", "jaeger"}
    assert by_uid["prometheus"]["type"] == "prometheus" and by_uid["prometheus"]["isDefault"]
    assert by_uid["prometheus"]["url"] == "http://saga-prometheus.saga.svc.cluster.local:9090"
    assert by_uid["jaeger"]["type"] == "jaeger"
    assert by_uid["jaeger"]["url"] == "http://saga-jaeger.saga.svc.cluster.local:16686"


def test_grafana_without_jaeger_has_no_jaeger_data_source() -> None:
    rendered = rendered_variant("external-collector")
    assert not any(c["metadata"]["name"].endswith("-grafana") for c in rendered.of_kind("ConfigMap"))
    from tests.support.chart import render

    rendered = render({"jaeger": {"enabled": False}})
    sources = yaml.safe_load(grafana_data(rendered, "-grafana")["datasources.yaml"])["datasources"]
    assert [s["uid"] for s in sources] == ["prometheus"]


def _datasource_uids(node: Any) -> set[str]:
    found = set()
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict) and isinstance(source.get("uid"), str) and not source["uid"].startswith("$"):
            found.add(source["uid"])
        for value in node.values():
            found |= _datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            found |= _datasource_uids(value)
    return found


def test_every_dashboard_of_the_project_is_provisioned() -> None:
    rendered = rendered_variant("defaults")
    data = grafana_data(rendered, "-grafana-dashboards")
    assert set(data) == {path.name for path in DASHBOARDS}
    provider = yaml.safe_load(grafana_data(rendered, "-grafana")["dashboards.yaml"])["providers"][0]
    grafana = rendered.workload("grafana")
    mounts = {m["mountPath"]: m["name"] for m in grafana.containers()[0]["volumeMounts"]}
    assert mounts[provider["options"]["path"]] == "dashboards"
    for path in DASHBOARDS:
        dashboard = json.loads(data[path.name])
        assert dashboard == json.loads(path.read_text()), path.name
        unknown = _datasource_uids(dashboard) - {"prometheus", "jaeger", "-- Grafana --", "grafana"}
        assert not unknown, f"{path.name} uses data sources the chart does not provision: {unknown}"
    assert sum(len(text) for text in data.values()) < 900_000, "a ConfigMap holds at most 1 MiB"


def test_the_services_send_traces_to_the_jaeger_the_chart_runs() -> None:
    rendered = rendered_variant("defaults")
    jaeger = rendered.workload("jaeger")
    ports = {p["name"]: p["containerPort"] for p in jaeger.containers()[0]["ports"]}
    assert ports["otlp-http"] == 4318
    service = rendered.get("Service", "saga-jaeger")
    assert {p["port"] for p in service["spec"]["ports"]} >= {4318, 16686}
