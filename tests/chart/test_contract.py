"""The chart against the services' own code: what a template sets is what a service reads.

- every environment variable set on a service's containers is a settings field (or alias) of that service,
  a standard OTEL_* variable, or a PYTHON* one;
- the settings built from a container's rendered environment (with the Secrets' values put in) validate,
  in production mode, and the URLs in them point at this release's database and broker (the broker for
  `serve` only: the migration Jobs get no broker credentials);
- the operations CronJobs run `sagactl <command>` from the order-service image; every variable set on them
  is a `SagactlSettings` field alias, and the settings built from them hold the services' own database URLs
  and the order service's deadline;
- every probe path is a route of the service's app, every probe and Service port is the service's port;
- every name a template refers to (Secret, ConfigMap, ServiceAccount, Role, Service, host in a URL) exists.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic_settings import BaseSettings

from order_service.settings import OrderSettings
from saga_common.contract import topology
from saga_tools.sagactl import SagactlSettings, _parser
from tests.support.chart import ALL_VARIANTS, Rendered, Workload, rendered_variant
from tests.support.routes import answers, has_route
from tests.support.service_settings import OTEL_VARIABLES, PYTHON_VARIABLES, SETTINGS, settings_env_names


def service_containers(rendered: Rendered) -> list[tuple[str, Workload, dict[str, Any]]]:
    """(service name, workload, container) for every container running a service image: the Deployments and
    the migration Jobs' steps."""
    found = []
    for workload in rendered.workloads():
        service = {"order-migrate": "order-service", "customer-migrate": "customer-service"}.get(
            workload.component, workload.component
        )
        if service in SETTINGS:
            found.extend((service, workload, c) for c in workload.containers() if c["name"] != "wait-for-database")
    return found


def secret_value(rendered: Rendered, name: str, key: str) -> str | None:
    secret = rendered.find("Secret", name)
    if secret is None:
        return None
    return base64.b64decode(secret["data"][key]).decode()


def container_env(rendered: Rendered, workload: Workload, container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would build it, from the rendered objects."""
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = secret_value(rendered, ref["name"], ref["key"])
            assert value is not None, f"{workload.name}: {item['name']} refers to Secret {ref['name']}, not rendered"
            env[item["name"]] = value
        elif "fieldRef" in source:
            match = re.fullmatch(r"metadata\.labels\['(.+)'\]", source["fieldRef"]["fieldPath"])
            assert match, source
            env[item["name"]] = workload.labels[match.group(1)]
    return env


# ----------------------------------------------------------------------------------------------------------
# Environment variables


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_every_variable_a_template_sets_is_one_the_service_reads(variant: str) -> None:
    rendered = rendered_variant(variant)
    containers = service_containers(rendered)
    assert len(containers) >= 4
    for service, workload, container in containers:
        readable = settings_env_names(SETTINGS[service]) | OTEL_VARIABLES | PYTHON_VARIABLES
        names = [item["name"] for item in container.get("env", [])]
        assert len(names) == len(set(names)), f"{workload.name}: a variable is set twice"
        unknown = set(names) - readable
        assert not unknown, f"{workload.name}/{container['name']} sets variables {service} never reads: {unknown}"
        assert not container.get("envFrom"), "envFrom would hide which variables are set"


def test_the_extra_settings_value_reaches_a_real_field() -> None:
    rendered = rendered_variant("replicas")
    for _, workload, container in service_containers(rendered):
        if workload.owner["kind"] != "Deployment":
            continue
        env = container_env(rendered, workload, container)
        assert env["SAGA_CONSUMER_PREFETCH"] == "32"


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith(("SAGA_", "OTEL_")) or name in {"DATABASE_URL", "RABBITMQ_BROKER_URL"}:
            monkeypatch.delenv(name)
        elif name in settings_env_names(SagactlSettings):
            monkeypatch.delenv(name)
    return monkeypatch


def settings_from(env: dict[str, str], settings: type[BaseSettings], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The settings class built from exactly this environment (on top of a clean one)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        return settings()
    finally:
        for name in env:
            monkeypatch.delenv(name)


@pytest.mark.parametrize("variant", [v for v in ALL_VARIANTS if v != "existing-secrets"])
def test_the_settings_built_from_the_rendered_environment_are_valid(
    variant: str, clean_environment: pytest.MonkeyPatch
) -> None:
    rendered = rendered_variant(variant)
    namespace = rendered.objects[0]["metadata"]["namespace"]
    domain = rendered.values.get("clusterDomain", "cluster.local")
    rabbitmq = rendered.get("StatefulSet", _name(rendered, "rabbitmq"))
    for service, workload, container in service_containers(rendered):
        env = container_env(rendered, workload, container)
        settings = settings_from(env, SETTINGS[service], clean_environment)

        assert settings.environment == "production", "the cluster must refuse development passwords"
        if workload.owner["kind"] == "Deployment":
            assert env["OTEL_SERVICE_NAME"] == service == settings.service_name

        database = urlsplit(settings.database_url)
        db_service = rendered.get("Service", _name(rendered, f"{service.removesuffix('-service')}-db"))
        assert database.hostname == f"{db_service['metadata']['name']}.{namespace}.svc.{domain}"
        assert database.port == 5432
        db_env = {
            e["name"]: e for e in rendered.workload(f"{service.removesuffix('-service')}-db").containers()[0]["env"]
        }
        assert database.path == f"/{db_env['POSTGRES_DB']['value']}"
        password_ref = db_env["SAGA_DATABASE_OWNER_PASSWORD"]["valueFrom"]["secretKeyRef"]
        owner_password = secret_value(rendered, password_ref["name"], password_ref["key"])
        if workload.owner["kind"] == "Job":
            # The migrations (and the seed) run as the database's owner (which is not the superuser).
            assert database.username == db_env["SAGA_DATABASE_OWNER"]["value"] != db_env["POSTGRES_USER"]["value"]
            assert database.password == owner_password
        else:
            # The service connects as the role the migration grants data access to, never as the owner.
            migrate = next(
                c
                for w in rendered.workloads()
                if w.owner["kind"] == "Job" and w.component == f"{service.removesuffix('-service')}-migrate"
                for c in w.containers()
                if c.get("args", [None])[0] == "migrate"
            )
            migrate_env = {e["name"]: e for e in migrate["env"]}
            assert database.username == migrate_env["SAGA_SERVICE_DATABASE_ROLE"]["value"]
            assert database.username != db_env["POSTGRES_USER"]["value"]
            ref = migrate_env["SAGA_SERVICE_DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert database.password == secret_value(rendered, ref["name"], ref["key"]) != owner_password

        if workload.owner["kind"] != "Deployment":
            # migrate and seed never touch the broker: no credentials for it.
            assert "RABBITMQ_BROKER_URL" not in env, f"{workload.name}/{container['name']} gets broker credentials"
            continue
        settings.check_broker_secrets()  # what `serve` checks before it starts
        nodes = int(rabbitmq["spec"]["replicas"])
        assert len(settings.broker_urls) == nodes, "one URL per RabbitMQ node, to fail over between them"
        headless = rabbitmq["spec"]["serviceName"]
        # With tls.enabled AMQPS only (tests/chart/test_tls.py).
        scheme, port = ("amqps", 5671) if rendered.values.get("tls", {}).get("enabled") else ("amqp", 5672)
        for ordinal, url in enumerate(settings.broker_urls):
            parts = urlsplit(url)
            assert parts.hostname == f"{rabbitmq['metadata']['name']}-{ordinal}.{headless}.{namespace}.svc.{domain}"
            assert (parts.scheme, parts.port) == (scheme, port) and parts.username == service
            assert re.fullmatch(r"[A-Za-z0-9]{32}", parts.password or ""), "generated, URL-safe passwords"


def _name(rendered: Rendered, component: str) -> str:
    owners = [w.owner["metadata"]["name"] for w in rendered.workloads() if w.component == component]
    assert len(owners) == 1, component
    return owners[0]


def test_tracing_is_wired_only_when_there_is_somewhere_to_send_traces() -> None:
    def env_of(variant: str) -> dict[str, str]:
        rendered = rendered_variant(variant)
        workload = rendered.workload("order-service")
        return container_env(rendered, workload, workload.containers()[0])

    on = env_of("defaults")
    assert on["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://saga-jaeger.saga.svc.cluster.local:4318"
    assert on["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of("observability-off")
    external = env_of("external-collector")
    assert external["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector.observability:4318"
    assert external["OTEL_TRACES_SAMPLER_ARG"] == "0.25"


# ----------------------------------------------------------------------------------------------------------
# The operations CronJobs: sagactl


def cronjob_containers(rendered: Rendered) -> list[tuple[Workload, dict[str, Any]]]:
    """The sagactl container of each CronJob (not the init containers that wait for the databases)."""
    return [
        (w, c)
        for w in rendered.workloads()
        if w.owner["kind"] == "CronJob"
        for c in w.containers()
        if c.get("command") == ["sagactl"]
    ]


def _env_refs(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("valueFrom", {}).get("secretKeyRef", item.get("value")) for item in container["env"]}


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_every_variable_a_cronjob_sets_is_a_sagactl_setting(variant: str) -> None:
    rendered = rendered_variant(variant)
    readable = settings_env_names(SagactlSettings)
    for workload, container in cronjob_containers(rendered):
        names = [item["name"] for item in container.get("env", [])]
        assert len(names) == len(set(names)), f"{workload.name}: a variable is set twice"
        unknown = set(names) - readable
        assert not unknown, f"{workload.name}/{container['name']} sets variables sagactl never reads: {unknown}"
        assert not container.get("envFrom"), "envFrom would hide which variables are set"
        # Only the databases: no broker, no service URL (neither reconcile nor prune needs them).
        assert {"ORDER_DATABASE_URL", "CUSTOMER_DATABASE_URL"} <= set(names)
        assert not {"RABBITMQ_BROKER_URL", "ORDER_SERVICE_URL"} & set(names)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_the_cronjobs_run_sagactl_from_the_order_image(variant: str) -> None:
    import tomllib

    from saga_dev.chart import ROOT

    scripts = tomllib.loads((ROOT / "services" / "tools" / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sagactl"] == "saga_tools.sagactl:main"
    rendered = rendered_variant(variant)
    order_image = rendered.workload("order-service").containers()[0]["image"]
    for workload, container in cronjob_containers(rendered):
        assert container["command"] == ["sagactl"], workload.name
        args = _parser().parse_args(container["args"])
        assert args.command == workload.component == container["name"], workload.name
        assert not getattr(args, "dry_run", False), "a scheduled run that changes nothing is no run"
        assert container["image"] == order_image, "sagactl is installed in the order-service image only"


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_the_cronjobs_use_the_services_own_database_urls(variant: str) -> None:
    """ORDER_/CUSTOMER_DATABASE_URL come from the very Secret key each service reads its DATABASE_URL from
    (an existingSecret included)."""
    rendered = rendered_variant(variant)
    service_refs = {w.component: _env_refs(w.containers()[0])["DATABASE_URL"] for w in rendered.service_workloads()}
    found = cronjob_containers(rendered)
    for workload, container in found:
        refs = _env_refs(container)
        for service, ref in service_refs.items():
            name = f"{service.removesuffix('-service').upper()}_DATABASE_URL"
            assert refs[name] == ref, f"{workload.name}: {name} is not the {service}'s DATABASE_URL"
    existing = {s.get("existingSecret") for s in rendered.values.get("services", {}).values()} - {None}
    if existing and found:
        names = {ref["name"] for _, c in found for ref in _env_refs(c).values() if isinstance(ref, dict)}
        assert names == existing


@pytest.mark.parametrize("variant", [v for v in ALL_VARIANTS if v != "existing-secrets"])
def test_the_sagactl_settings_built_from_the_rendered_environment_are_the_chart_s(
    variant: str, clean_environment: pytest.MonkeyPatch
) -> None:
    rendered = rendered_variant(variant)
    values = chart_values(rendered)
    service_env = {w.component: container_env(rendered, w, w.containers()[0]) for w in rendered.service_workloads()}
    order = settings_from(service_env["order-service"], OrderSettings, clean_environment)
    for workload, container in cronjob_containers(rendered):
        env = container_env(rendered, workload, container)
        settings = settings_from(env, SagactlSettings, clean_environment)
        assert settings.order_database_url == service_env["order-service"]["DATABASE_URL"]
        assert settings.customer_database_url == service_env["customer-service"]["DATABASE_URL"]
        job = values["cronJobDefaults"] | values["cronJobs"][workload.component]
        if workload.component == "reconcile":
            # Orders pending past the deadline are reported: the same deadline as the order service's sweeper.
            assert settings.deadline_s == order.deadline_s
            assert settings.reconcile_grace_s == job["graceSeconds"]
        if workload.component == "prune":
            assert settings.outbox_retention_s == job["outboxRetentionSeconds"]
            assert settings.inbox_retention_s == job["inboxRetentionSeconds"]


def test_the_reconcile_job_follows_a_deadline_the_chart_sets(clean_environment: pytest.MonkeyPatch) -> None:
    rendered = rendered_variant("replicas")
    env = {e["name"]: e.get("value") for e in rendered.workload("reconcile").containers(init=False)[0]["env"]}
    order_env = {e["name"]: e.get("value") for e in rendered.workload("order-service").containers(init=False)[0]["env"]}
    assert env["SAGA_DEADLINE_S"] == order_env["SAGA_DEADLINE_S"] == "45"
    assert env["SAGA_RECONCILE_GRACE_S"] == "120"
    prune = {e["name"]: e.get("value") for e in rendered.workload("prune").containers(init=False)[0]["env"]}
    assert prune["SAGA_OUTBOX_RETENTION_S"] == "2592000", "whole seconds, never 2.592e+06"
    # Without a deadline in the chart, neither sets one: both fall back to the same code default.
    default = rendered_variant("defaults")
    assert "SAGA_DEADLINE_S" not in {e["name"] for e in default.workload("reconcile").containers(init=False)[0]["env"]}
    assert SagactlSettings().deadline_s == OrderSettings().deadline_s


def chart_values(rendered: Rendered) -> dict[str, Any]:
    from saga_dev.chart import chart

    return chart().merge_values(rendered.values)


# ----------------------------------------------------------------------------------------------------------
# Probes and ports


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert numbers, f"container {container['name']} has no port named {port!r}"
    return numbers[0]


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_probes_hit_real_routes_on_the_service_port(variant: str) -> None:
    rendered = rendered_variant(variant)
    for workload in rendered.service_workloads():
        container = workload.containers()[0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        port = int(env["SAGA_HTTP_PORT"])
        assert [p["containerPort"] for p in container["ports"]] == [port]
        assert {"livenessProbe", "readinessProbe", "startupProbe"} <= set(container)
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container[kind]["httpGet"]
            assert has_route(workload.component, "GET", probe["path"]), f"{workload.name} {kind} {probe['path']}"
            assert _port_number(container, probe["port"]) == port
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_probed_routes_answer_as_the_probes_expect() -> None:
    """Alive without a database or broker; not ready until the runtime started (the probes' whole point)."""
    for service in SETTINGS:
        assert answers(service, "GET", "/healthz") == 200
        assert answers(service, "GET", "/readyz") == 503
        assert answers(service, "GET", "/metrics") == 200
        assert answers(service, "GET", "/no-such-path") == 404


def test_the_image_defaults_match_the_settings_defaults(default: Rendered) -> None:
    """The port the chart sets is also the one the service would pick without it."""
    for workload in default.service_workloads():
        port = workload.containers()[0]["ports"][0]["containerPort"]
        assert SETTINGS[workload.component]().http_port == port


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_services_select_pods_and_target_their_ports(variant: str) -> None:
    rendered = rendered_variant(variant)
    for service in rendered.of_kind("Service"):
        selector = service["spec"]["selector"]
        pods = [w for w in rendered.workloads() if selector.items() <= w.labels.items()]
        pods = [w for w in pods if w.owner["kind"] in {"Deployment", "StatefulSet"}]
        assert pods, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for workload in pods:
                numbers = {
                    _port_number(c, port["targetPort"])
                    for c in workload.containers(init=False)
                    if isinstance(port["targetPort"], int)
                    or any(p.get("name") == port["targetPort"] for p in c.get("ports", []))
                }
                assert numbers, f"{service['metadata']['name']}:{port['name']} targets nothing in {workload.name}"
                if workload.component.endswith("-service"):
                    assert numbers == {port["port"]}, "the API Services keep the service's own port number"


# ----------------------------------------------------------------------------------------------------------
# References between objects


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_every_reference_resolves(variant: str) -> None:
    rendered = rendered_variant(variant)
    existing = {rendered.values.get("services", {}).get(k, {}).get("existingSecret") for k in ("order", "customer")} | {
        rendered.values.get(k, {}).get("existingSecret") for k in ("rabbitmq", "grafana", "auth")
    }
    existing.add(rendered.values.get("auth", {}).get("existingCertificateSecret"))
    existing |= {
        rendered.values.get("services", {}).get(k, {}).get("database", {}).get("existingSecret")
        for k in ("order", "customer")
    }
    existing.discard(None)

    def secret_has(name: str, key: str | None, where: str) -> None:
        if name in existing:
            return
        secret = rendered.find("Secret", name)
        assert secret is not None, f"{where}: Secret {name} is not rendered"
        if key is not None:
            assert key in secret["data"], f"{where}: Secret {name} has no key {key}"

    for workload in rendered.workloads():
        spec = workload.spec
        if "serviceAccountName" in spec:
            assert rendered.find("ServiceAccount", spec["serviceAccountName"]), workload.name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload.owner["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                config_map = rendered.find("ConfigMap", volume["configMap"]["name"])
                assert config_map is not None, f"{workload.name}: ConfigMap {volume['configMap']['name']}"
                for item in volume["configMap"].get("items", []):
                    assert item["key"] in (config_map.get("data") or {}), f"{workload.name}: key {item['key']}"
            if "secret" in volume:
                for item in volume["secret"].get("items", [{"key": None}]):
                    secret_has(volume["secret"]["secretName"], item["key"], workload.name)
        for container in workload.containers():
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, f"{workload.name}: volume {mount['name']}"
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret_has(ref["name"], ref["key"], f"{workload.name} {item['name']}")

    for binding in rendered.of_kind("RoleBinding"):
        assert rendered.find("Role", binding["roleRef"]["name"])
        for subject in binding["subjects"]:
            assert rendered.find("ServiceAccount", subject["name"])
    for statefulset in rendered.of_kind("StatefulSet"):
        headless = rendered.get("Service", statefulset["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        assert rendered.find(hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(selector.items() <= w.labels.items() for w in rendered.workloads()), pdb["metadata"]["name"]


HOST = re.compile(r"\b((?:[a-z0-9-]+\.)+?)([a-z0-9-]+)\.svc\.([a-z0-9.-]*[a-z])(?::(\d+))?")


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_every_in_cluster_host_and_port_exists(variant: str) -> None:
    """Every `<service>.<namespace>.svc.<domain>[:port]` (or `<pod>.<headless service>...`) the chart writes
    anywhere, Secrets included, names a rendered Service in this namespace, with that port."""
    rendered = rendered_variant(variant)
    namespace = rendered.objects[0]["metadata"]["namespace"]
    texts = _strings(rendered.objects)
    texts += [base64.b64decode(v).decode() for s in rendered.of_kind("Secret") for v in s.get("data", {}).values()]
    seen = 0
    for text in texts:
        for match in HOST.finditer(text):
            labels = match.group(1).rstrip(".").split(".")
            if (labels, match.group(2)) == (["kubernetes"], "default"):
                continue  # the API server, for RabbitMQ's peer discovery
            seen += 1
            assert match.group(2) == namespace, f"{match.group(0)} is not in namespace {namespace}"
            service = rendered.find("Service", labels[-1])
            assert service is not None, f"{match.group(0)}: no Service {labels[-1]}"
            if len(labels) == 2:  # a pod of a StatefulSet behind its headless Service
                pod, ordinal = labels[0].rsplit("-", 1)
                statefulset = next(s for s in rendered.of_kind("StatefulSet") if s["spec"]["serviceName"] == labels[-1])
                assert pod == statefulset["metadata"]["name"] and int(ordinal) < statefulset["spec"]["replicas"]
            if match.group(4):
                assert int(match.group(4)) in {p["port"] for p in service["spec"]["ports"]}, match.group(0)
    assert seen > 5


def test_the_broker_users_may_use_their_own_names_only(default: Rendered) -> None:
    """Each service's RabbitMQ user may publish to the saga's exchange and its own requeue exchange and consume its
    own work queue; nothing of the other service's, nothing to configure (the topology is in the definitions)."""
    import json

    config_map = default.get("ConfigMap", "saga-rabbitmq")
    definitions = json.loads(config_map["data"]["definitions.template.json"])
    settings = OrderSettings()
    users = {u["name"] for u in definitions["users"]}
    assert set(SETTINGS) <= users
    for permission in definitions["permissions"]:
        service = permission["user"]
        if service not in SETTINGS:
            continue
        own = topology.ServiceQueues(service, tuple(settings.retry_delays_ms))
        (other,) = set(topology.BINDINGS) - {service}
        theirs = topology.ServiceQueues(other, tuple(settings.retry_delays_ms))
        every = {settings.exchange, "amq.default", "amq.rabbitmq.trace", "other.queue"}
        for queues in (own, theirs):
            every |= {queues.work, queues.dead_letter, queues.requeue_exchange, *queues.parked}
        may = {
            kind: {name for name in every if re.fullmatch(permission[kind], name)}
            for kind in ("configure", "write", "read")
        }
        assert may == {
            "configure": set(),
            "write": {settings.exchange, own.requeue_exchange},
            "read": {own.work},
        }, service
