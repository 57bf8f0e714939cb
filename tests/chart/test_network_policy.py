"""The NetworkPolicies, evaluated as Kubernetes does, on the rendered pods.

A connection from pod A to pod B on a port is allowed when A's egress allows it (or no Egress policy
selects A) and B's ingress allows it (or no Ingress policy selects B). The tests assert the matrix the
design asks for: default deny; each database reachable only from its own service, its migration Job and
the sagactl CronJobs (which reach the two databases and DNS, nothing else); the broker only from the two
services; the APIs from anywhere in the namespace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.chart import Rendered, render, rendered_variant


@dataclass(frozen=True)
class Peer:
    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    ports: dict[str, int] = field(default_factory=dict, hash=False)
    in_cluster: bool = True  # False: an address outside the pod network (API server, DNS on a node, internet)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def peer_matches(rule_peers: list[dict[str, Any]] | None, other: Peer) -> bool:
    if not rule_peers:
        return True
    for peer in rule_peers:
        if "ipBlock" in peer:
            if not other.in_cluster:
                return True
        elif other.in_cluster and "podSelector" in peer and "namespaceSelector" not in peer:
            if selects(peer["podSelector"], other.labels):
                return True
        elif other.in_cluster and "namespaceSelector" in peer:
            if selects(peer.get("podSelector", {}), other.labels):
                return True
    return False


def port_matches(rule_ports: list[dict[str, Any]] | None, target: Peer, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for rule_port in rule_ports:
        number = rule_port.get("port")
        if isinstance(number, str):
            number = target.ports.get(number)
        if rule_port.get("protocol", "TCP") == protocol and (number is None or number == port):
            return True
    return False


def allowed(rendered: Rendered, source: Peer, target: Peer, port: int, protocol: str = "TCP") -> bool:
    policies = [p["spec"] for p in rendered.of_kind("NetworkPolicy")]

    def direction_allows(kind: str, selected: Peer, other: Peer, peers_key: str, port_owner: Peer) -> bool:
        if not selected.in_cluster:
            return True
        relevant = [
            p for p in policies if kind in p.get("policyTypes", []) and selects(p["podSelector"], selected.labels)
        ]
        if not relevant:
            return True
        for policy in relevant:
            for rule in policy.get(kind.lower(), []) or []:
                if peer_matches(rule.get(peers_key), other) and port_matches(
                    rule.get("ports"), port_owner, port, protocol
                ):
                    return True
        return False

    return direction_allows("Egress", source, target, "to", target) and direction_allows(
        "Ingress", target, source, "from", target
    )


def pods(rendered: Rendered) -> dict[str, Peer]:
    found = {}
    for workload in rendered.workloads():
        ports = {
            p["name"]: p["containerPort"] for c in workload.containers() for p in c.get("ports", []) if "name" in p
        }
        found[workload.component] = Peer(workload.component, workload.labels, ports)
    # A pod of the same namespace that is not part of the release.
    found["intruder"] = Peer("intruder", {"app": "something-else"})
    found["outside"] = Peer("outside", in_cluster=False)
    return found


@pytest.fixture(scope="module")
def net() -> tuple[Rendered, dict[str, Peer]]:
    rendered = rendered_variant("defaults")
    return rendered, pods(rendered)


def reach(net: tuple[Rendered, dict[str, Peer]], source: str, target: str, port: int, protocol: str = "TCP") -> bool:
    rendered, peers = net
    return allowed(rendered, peers[source], peers[target], port, protocol)


EVERYONE = [
    "order-service",
    "customer-service",
    "order-migrate",
    "customer-migrate",
    "reconcile",
    "prune",
    "order-db",
    "customer-db",
    "rabbitmq",
    "jaeger",
    "prometheus",
    "grafana",
    "test",
    "intruder",
]


JOBS = ["reconcile", "prune"]


@pytest.mark.parametrize("key", ["order", "customer"])
def test_a_database_is_reachable_only_from_its_own_service_migrations_and_the_cronjobs(net: Any, key: str) -> None:
    allowed_from = {f"{key}-service", f"{key}-migrate", *JOBS}
    for source in EVERYONE:
        if source == f"{key}-db":
            continue
        assert reach(net, source, f"{key}-db", 5432) == (source in allowed_from), source


@pytest.mark.parametrize("job", JOBS)
def test_the_cronjobs_reach_both_databases_and_nothing_else(net: Any, job: str) -> None:
    for database in ("order-db", "customer-db"):
        assert reach(net, job, database, 5432), database
        assert not reach(net, job, database, 5433), "only PostgreSQL's port"
    assert reach(net, job, "outside", 53, "UDP"), "DNS"
    assert not reach(net, job, "rabbitmq", 5672), "sagactl reconcile and prune never touch the broker"
    assert not reach(net, job, "rabbitmq", 15672)
    assert not reach(net, job, "order-service", 8001)
    assert not reach(net, job, "customer-service", 8002)
    assert not reach(net, job, "jaeger", 4318)
    assert not reach(net, job, "outside", 443)
    for source in EVERYONE:
        assert not reach(net, source, job, 8001), f"{source}: nothing calls into a job pod"


def admits(rendered: Rendered, target: Peer, source: Peer, port: int) -> bool:
    """The ingress side only: some Ingress policy selecting the target has a rule that lets the source in."""
    for policy in (p["spec"] for p in rendered.of_kind("NetworkPolicy")):
        if "Ingress" in policy.get("policyTypes", []) and selects(policy["podSelector"], target.labels):
            for rule in policy.get("ingress") or []:
                if peer_matches(rule.get("from"), source) and port_matches(rule.get("ports"), target, port, "TCP"):
                    return True
    return False


def _job_peer(rendered: Rendered, job: str) -> Peer:
    """A pod of a CronJob the values switched off: its labels, had it been rendered."""
    labels = dict(rendered.workload("order-service").labels)
    return Peer(job, labels | {"app.kubernetes.io/component": job})


@pytest.mark.parametrize(("variant", "enabled"), [("external-collector", {"reconcile"}), ("single-broker", set())])
def test_a_switched_off_cronjob_gets_no_path(variant: str, enabled: set[str]) -> None:
    rendered = rendered_variant(variant)
    peers = pods(rendered)
    assert {job for job in JOBS if job in peers} == enabled
    policies = {p["metadata"]["name"] for p in rendered.of_kind("NetworkPolicy")}
    prefix = rendered.workload("order-service").owner["metadata"]["name"].removesuffix("order-service")
    for job in JOBS:
        assert (f"{prefix}{job}" in policies) == (job in enabled), job
        peer = peers.get(job, _job_peer(rendered, job))
        for database in ("order-db", "customer-db"):
            assert allowed(rendered, peer, peers[database], 5432) == (job in enabled), (job, database)
            # The database's own side, apart from the job pod's egress: it admits exactly the enabled jobs.
            assert admits(rendered, peers[database], peer, 5432) == (job in enabled), (job, database)
    for key in ("order", "customer"):
        assert allowed(rendered, peers[f"{key}-service"], peers[f"{key}-db"], 5432)
        assert allowed(rendered, peers[f"{key}-migrate"], peers[f"{key}-db"], 5432)


@pytest.mark.parametrize(("tls", "port", "closed"), [(False, 5672, 5671), (True, 5671, 5672)], ids=["amqp", "amqps"])
def test_the_broker_is_reachable_only_from_the_two_services(net: Any, tls: bool, port: int, closed: int) -> None:
    """On AMQP's port, or with tls.enabled on AMQPS's (5671), and then on AMQP's no more."""
    if tls:
        rendered = render({"tls": {"enabled": True}})
        net = (rendered, pods(rendered))
    for source in EVERYONE:
        if source == "rabbitmq":
            continue
        assert reach(net, source, "rabbitmq", port) == (source in {"order-service", "customer-service"}), source
        assert not reach(net, source, "rabbitmq", closed), source
    assert reach(net, "rabbitmq", "rabbitmq", 25672), "the nodes talk to each other"
    assert reach(net, "prometheus", "rabbitmq", 15692)
    assert not reach(net, "order-service", "rabbitmq", 15672), "not the management API"


@pytest.mark.parametrize(("api", "port"), [("order-service", 8001), ("customer-service", 8002)])
def test_the_apis_are_reachable_from_anywhere_in_the_namespace(net: Any, api: str, port: int) -> None:
    # Any pod of the namespace may call in; the release's own pods also need their egress to allow it, which
    # only the helm test pod and Prometheus have.
    for source in ("intruder", "test", "prometheus"):
        assert reach(net, source, api, port), source
    assert not reach(net, "intruder", api, 9999), "only the API port"
    assert not reach(net, "outside", api, port), "not from outside the cluster"


def test_everything_else_is_denied(net: Any) -> None:
    assert not reach(net, "order-service", "customer-service", 8002), "the services talk through the broker only"
    assert not reach(net, "order-db", "outside", 443)
    assert not reach(net, "order-service", "outside", 443)
    assert not reach(net, "intruder", "jaeger", 16686)
    assert not reach(net, "intruder", "grafana", 3000)
    assert not reach(net, "test", "order-db", 5432)


def test_the_paths_the_saga_needs_are_open(net: Any) -> None:
    for service in ("order-service", "customer-service"):
        assert reach(net, service, "jaeger", 4318)
        assert reach(net, "prometheus", service, 8001 if service == "order-service" else 8002)
        assert reach(net, "test", service, 8001 if service == "order-service" else 8002)
    assert reach(net, "grafana", "prometheus", 9090)
    assert reach(net, "grafana", "jaeger", 16686)
    assert reach(net, "prometheus", "outside", 6443), "the Kubernetes API, for pod discovery"
    assert not reach(net, "rabbitmq", "outside", 6443), "RabbitMQ 4.1+ forms its cluster without the Kubernetes API"
    for component in EVERYONE[:-1]:
        assert reach(net, component, "outside", 53, "UDP"), f"{component}: DNS"


def test_an_external_collector_gets_its_own_egress() -> None:
    rendered = rendered_variant("external-collector")
    peers = pods(rendered)
    assert allowed(rendered, peers["order-service"], peers["outside"], 4318)
    assert not allowed(rendered, peers["order-service"], peers["outside"], 443)
