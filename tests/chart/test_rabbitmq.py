"""The RabbitMQ cluster's configuration, checked with RabbitMQ's own pieces where the machine has them.

- the init script runs here (the same `erl` RabbitMQ runs on) and writes definitions whose password hashes
  verify against the passwords, in RabbitMQ's salted SHA-256 format;
- every key of rabbitmq.conf is one RabbitMQ's configuration schema knows;
- the node names, the peer-discovery settings and the headless Service agree.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from saga_dev.system_packages import fix_for
from tests.support.chart import ALL_VARIANTS, Rendered, render, rendered_variant, require_tool

RABBITMQ_LIB = Path("/usr/lib/rabbitmq/lib")
# The configuration must boot the chart's default (4.1) and the broker the cluster tier runs (Debian 12's
# 3.10, whose schemas this machine has): no key newer than 3.10.


def rabbitmq(rendered: Rendered) -> tuple[dict, dict, Rendered]:
    statefulset = next(s for s in rendered.of_kind("StatefulSet") if s["metadata"]["name"].endswith("-rabbitmq"))
    config_map = rendered.get("ConfigMap", statefulset["metadata"]["name"])
    return statefulset, config_map["data"], rendered


def verifies(password: str, password_hash: str) -> bool:
    raw = base64.b64decode(password_hash)
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


def test_the_init_script_writes_definitions_that_rabbitmq_can_verify(tmp_path: Path) -> None:
    require_tool("erl", "rabbitmq-server")
    statefulset, data, rendered = rabbitmq(rendered_variant("defaults"))
    init = statefulset["spec"]["template"]["spec"]["initContainers"][0]
    (tmp_path / "scripts").mkdir()
    (tmp_path / "home").mkdir()
    for key in ("write-definitions.sh", "definitions.template.json"):
        (tmp_path / "scripts" / key).write_text(data[key])
    (tmp_path / "cookie").write_text("secret-cookie")
    env = {"PATH": os.environ["PATH"]}
    passwords = {}
    for item in init["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            passwords[item["name"]] = base64.b64decode(rendered.get("Secret", ref["name"])["data"][ref["key"]]).decode()
    env.update(passwords)
    env.update(
        HOME=str(tmp_path / "home"),
        COOKIE_SOURCE=str(tmp_path / "cookie"),
        DEFINITIONS_TEMPLATE=str(tmp_path / "scripts" / "definitions.template.json"),
        DEFINITIONS_FILE=str(tmp_path / "definitions.json"),
    )
    result = subprocess.run(
        ["sh", str(tmp_path / "scripts" / "write-definitions.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    cookie = tmp_path / "home" / ".erlang.cookie"
    assert cookie.read_text() == "secret-cookie"
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o600, "Erlang refuses a cookie others can read"

    definitions = json.loads((tmp_path / "definitions.json").read_text())
    users = {u["name"]: u for u in definitions["users"]}
    assert set(users) == {"admin", "order-service", "customer-service"}
    assert verifies(passwords["ADMIN_PASSWORD"], users["admin"]["password_hash"])
    assert verifies(passwords["ORDER_SERVICE_PASSWORD"], users["order-service"]["password_hash"])
    assert verifies(passwords["CUSTOMER_SERVICE_PASSWORD"], users["customer-service"]["password_hash"])
    assert not verifies("wrong", users["admin"]["password_hash"])
    assert all(u["hashing_algorithm"] == "rabbit_password_hashing_sha256" for u in users.values())
    assert users["admin"]["tags"] == ["administrator"] and users["order-service"]["tags"] == []
    assert definitions["vhosts"][0]["metadata"]["default_queue_type"] == "quorum"
    # The service users' passwords are the ones in the services' broker URLs.
    for service in ("order-service", "customer-service"):
        url = base64.b64decode(rendered.get("Secret", f"saga-{service}")["data"]["rabbitmq-url"]).decode()
        assert f"amqp://{service}:{passwords[service.upper().replace('-', '_') + '_PASSWORD']}@" in url


def _schema_keys() -> list[re.Pattern[str]]:
    patterns = []
    for schema in RABBITMQ_LIB.glob("rabbitmq_server-*/plugins/*/priv/**/*.schema"):
        for key in re.findall(r'\{mapping,\s*"([^"]+)"', schema.read_text(errors="replace")):
            patterns.append(re.compile("^" + re.sub(r"\\\$[a-z_]+", r"[^.]+", re.escape(key)) + "$"))
    return patterns


@pytest.mark.parametrize("tls", [False, True], ids=["amqp", "amqps"])
def test_every_rabbitmq_conf_key_is_known_to_rabbitmq(tls: bool) -> None:
    if not list(RABBITMQ_LIB.glob("rabbitmq_server-*")):
        pytest.fail(f"RabbitMQ's configuration schemas are not in {RABBITMQ_LIB}: {fix_for('rabbitmq-server')}")
    patterns = _schema_keys()
    _, data, _ = rabbitmq(render({"tls": {"enabled": True}}) if tls else rendered_variant("defaults"))
    lines = [line for line in data["rabbitmq.conf"].splitlines() if "=" in line and not line.startswith("#")]
    keys = [line.split("=", 1)[0].strip() for line in lines]
    assert len(keys) > 10
    unknown = [key for key in keys if not any(p.match(key) for p in patterns)]
    assert not unknown, f"keys RabbitMQ's schema does not know: {unknown}"
    assert data["enabled_plugins"].strip() == "[rabbitmq_management,rabbitmq_prometheus]."


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_node_names_and_peer_discovery_agree(variant: str) -> None:
    """Every node names the node of ordinal 0 as its seed, by the pod's DNS name under the headless Service
    (which answers for pods not ready yet), and the node names are those names."""
    statefulset, data, rendered = rabbitmq(rendered_variant(variant))
    conf = dict(line.split(" = ", 1) for line in data["rabbitmq.conf"].splitlines() if " = " in line)
    assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
    assert not [key for key in conf if key.startswith("cluster_formation.k8s.")], "no Kubernetes API"
    headless = rendered.get("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["publishNotReadyAddresses"] is True, "peers must find nodes that are not ready yet"
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RABBITMQ_USE_LONGNAME"] == "true"
    namespace = statefulset["metadata"]["namespace"]
    domain = rendered.values.get("clusterDomain", "cluster.local")
    assert env["RABBITMQ_NODENAME"] == f"rabbit@$(POD_NAME).{headless['metadata']['name']}.{namespace}.svc.{domain}"
    seed = env["RABBITMQ_NODENAME"].replace("$(POD_NAME)", f"{statefulset['metadata']['name']}-0")
    assert conf["cluster_formation.classic_config.nodes.1"] == seed
    assert (
        int(conf["cluster_formation.discovery_retry_limit"]) * int(conf["cluster_formation.discovery_retry_interval"])
        >= 60_000
    )
    assert container["command"] == ["sh", "/scripts/run.sh"] and "exec rabbitmq-server" in data["run.sh"]
    # A new node other than the seed boots only once the seed runs (3.10's discovery lock deadlocked without).
    assert f'seed="{seed}"' in data["run.sh"] and '--node "$seed" check_running' in data["run.sh"]
    assert conf["definitions.local.path"].startswith(
        next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "definitions")
    )
    roles = {role["metadata"]["name"] for role in rendered.of_kind("Role")}
    assert statefulset["metadata"]["name"] not in roles, "RabbitMQ needs no access to the Kubernetes API"
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    assert "serviceAccountName" not in statefulset["spec"]["template"]["spec"]
    assert statefulset["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize(("limit", "expected"), [("768Mi", 805306368), ("1Gi", 1073741824), ("500M", 500000000)])
def test_the_memory_watermark_is_a_fraction_of_the_container_limit(limit: str, expected: int) -> None:
    _, data, _ = rabbitmq(render({"rabbitmq": {"resources": {"limits": {"memory": limit, "cpu": "1"}}}}))
    conf = dict(line.split(" = ", 1) for line in data["rabbitmq.conf"].splitlines() if " = " in line)
    assert int(conf["total_memory_available_override_value"]) == expected


def _settings(settings_class: type, env: dict[str, object]) -> object:
    """A service's settings as it reads them from the environment the chart gives it."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, str(value))
        return settings_class()


@pytest.mark.parametrize(
    ("defaults", "per_service"),
    [
        ({}, {}),
        ({"SAGA_RETRY_DELAYS_MS": "[250, 4000]", "SAGA_DELIVERY_LIMIT": "7"}, {}),
        ({"SAGA_QUEUE_TYPE": "classic", "SAGA_EXCHANGE": "shop.events"}, {}),
        # Each service's queues follow its own settings (it is the one that consumes them).
        (
            {"SAGA_DELIVERY_LIMIT": 3},
            {
                "order": {"SAGA_QUEUE_TYPE": "classic", "SAGA_RETRY_DELAYS_MS": "[100, 200, 300, 400]"},
                "customer": {"SAGA_RETRY_DELAYS_MS": "[1000]"},
            },
        ),
    ],
    ids=["defaults", "retry-delays-and-delivery-limit", "classic-queues-and-exchange", "per-service"],
)
def test_the_definitions_carry_the_topology_and_the_least_privileges_the_code_declares(
    defaults: dict, per_service: dict
) -> None:
    """The chart's topology and permissions are the ones saga_common.contract.topology computes from the services' own
    settings (what a service would declare in development), so the services can run with `passive`."""
    from customer_service.settings import CustomerSettings
    from order_service.settings import OrderSettings
    from saga_common.contract.topology import CUSTOMER_SERVICE, ORDER_SERVICE
    from saga_common.runtime import topology_from

    values: dict = {"serviceDefaults": {"settings": defaults}} if defaults else {}
    if per_service:
        values["services"] = {key: {"settings": settings} for key, settings in per_service.items()}
    rendered = render(values)
    _, data, _ = rabbitmq(rendered)
    definitions = json.loads(data["definitions.template.json"])

    def canonical(entries: list) -> list:
        return sorted(json.dumps(entry, sort_keys=True) for entry in entries)

    expected: dict[str, list] = {"exchanges": [], "queues": [], "bindings": []}
    wanted = []
    services = (("order", ORDER_SERVICE, OrderSettings), ("customer", CUSTOMER_SERVICE, CustomerSettings))
    for key, service, settings_class in services:
        topology = topology_from(_settings(settings_class, defaults | per_service.get(key, {})))
        code = topology.definitions()
        # This service's part, by its own settings: its requeue exchange, its queues and what is bound to them.
        queues, requeue = topology.queue_arguments(service), topology.queues(service).requeue_exchange
        expected["exchanges"] += [e for e in code["exchanges"] if e["name"] == requeue]
        expected["queues"] += [q for q in code["queues"] if q["name"] in queues]
        expected["bindings"] += [b for b in code["bindings"] if b["destination"] in queues]
        wanted.append(topology.permissions(service, service))
    expected["exchanges"] += [e for e in code["exchanges"] if e["name"] == topology.exchange]
    for section in ("exchanges", "queues", "bindings"):
        assert canonical(definitions[section]) == canonical(expected[section]), section
        if not per_service:
            # One set of settings for both: all that the code declares, nothing else.
            assert canonical(definitions[section]) == canonical(code[section]), section
    service_permissions = [p for p in definitions["permissions"] if p["user"] != "admin"]
    assert canonical(service_permissions) == canonical([permission for permission, _ in wanted])
    assert canonical(definitions["topic_permissions"]) == canonical([topic for _, topic in wanted])
    for workload in rendered.service_workloads():
        env = {e["name"]: e.get("value") for e in workload.containers(init=False)[0]["env"]}
        assert env["SAGA_BROKER_TOPOLOGY"] == "passive"
