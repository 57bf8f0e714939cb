"""TLS as a chart option on every hop to PostgreSQL and RabbitMQ (issue 25; docs/security.md#tls).

With tls.enabled: every DATABASE_URL a pod gets (the services', the migrations' owner URL, sagactl's) says
sslmode=verify-full with an sslrootcert that is the CA mounted into that very container; every broker URL is
amqps on 5671 with a mounted cafile; RabbitMQ has an AMQPS listener and no plain one; PostgreSQL runs ssl=on
with a certificate and key from its own mounts, in a mode it accepts, and refuses TCP without TLS; the
generated certificate names every host the URLs use and chains to the CA beside it; tls.existingSecret
replaces what the chart generates. Off (the default), nothing of it is rendered.
"""

from __future__ import annotations

import base64
import functools
import posixpath
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.chart import OTHER_RELEASE, OTHER_RELEASE_VALUES, Rendered, Workload, render, rendered_variant

TLS = {"tls": {"enabled": True}}
EXISTING = "shop-tls-from-cert-manager"
EXISTING_API = "shop-api-tls-from-cert-manager"
# Value sets with TLS on: the names and the number of nodes change what the certificate must cover.
RENDERS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "tls": (TLS, {}),
    "tls-five-nodes-no-cronjobs": (
        {**TLS, "rabbitmq": {"replicas": 5}, "cronJobDefaults": {"enabled": False}},
        {},
    ),
    "tls-other-release": ({**TLS, **OTHER_RELEASE_VALUES}, OTHER_RELEASE),
    "tls-existing-secret": (
        {"tls": {"enabled": True, "existingSecret": EXISTING, "existingApiSecret": EXISTING_API}},
        {},
    ),
}
GENERATED = [name for name in RENDERS if name != "tls-existing-secret"]


@functools.cache
def rendered(name: str) -> Rendered:
    values, release = RENDERS[name]
    return render(values, **release)


def _secret(rendered: Rendered, name: str, key: str) -> str:
    return base64.b64decode(rendered.get("Secret", name)["data"][key]).decode()


def _tls_secret_name(rendered: Rendered) -> str:
    """The Secret every TLS volume refers to (one for the whole release)."""
    names = {
        volume["secret"]["secretName"]
        for workload in rendered.workloads()
        for volume in workload.spec.get("volumes", [])
        if volume["name"] in {"tls", "tls-ca"}
    }
    assert len(names) == 1, names
    return names.pop()


def mounted(workload: Workload, container: dict[str, Any], path: str) -> tuple[str, str, dict[str, Any]]:
    """What a file path in a container is: (kind, name, source) of the Secret or ConfigMap key mounted there,
    source being dict(key=..., volume=...). Fails when nothing mounted provides that file."""
    volumes = {volume["name"]: volume for volume in workload.spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        directory = mount["mountPath"].rstrip("/")
        if posixpath.dirname(path) != directory or "subPath" in mount:
            continue
        volume = volumes[mount["name"]]
        kind = "Secret" if "secret" in volume else "ConfigMap" if "configMap" in volume else None
        if kind is None:
            continue
        source = volume["secret"] if kind == "Secret" else volume["configMap"]
        items = {item["path"]: item["key"] for item in source.get("items", [])}
        filename = posixpath.basename(path)
        key = items.get(filename) if items else filename
        if key is not None:
            name = source["secretName"] if kind == "Secret" else source["name"]
            return kind, name, {"key": key, "volume": volume, "mount": mount}
    raise AssertionError(f"{workload.name}/{container['name']}: nothing mounted provides {path}")


def _value(rendered: Rendered, item: dict[str, Any]) -> str | None:
    if "value" in item:
        return item["value"]
    ref = (item.get("valueFrom") or {}).get("secretKeyRef")
    if ref and rendered.find("Secret", ref["name"]) is not None:
        return _secret(rendered, ref["name"], ref["key"])
    return None


def urls(rendered: Rendered, pattern: str) -> list[tuple[Workload, dict[str, Any], str]]:
    """(workload, container, URL) for every environment variable whose name matches, URL lists split."""
    found = []
    for workload in rendered.workloads():
        for container in workload.containers():
            for item in container.get("env", []):
                if re.fullmatch(pattern, item["name"]):
                    value = _value(rendered, item)
                    assert value is not None, f"{workload.name}: {item['name']} from a Secret not rendered"
                    found.extend((workload, container, url) for url in value.split(","))
    return found


def _query(url: str) -> dict[str, str]:
    query = parse_qs(urlsplit(url).query, strict_parsing=True)
    assert all(len(values) == 1 for values in query.values()), url
    return {key: values[0] for key, values in query.items()}


def _assert_the_tls_ca(rendered: Rendered, workload: Workload, container: dict[str, Any], path: str) -> None:
    kind, name, source = mounted(workload, container, path)
    assert (kind, name, source["key"]) == ("Secret", _tls_secret_name(rendered), "ca.crt"), (workload.name, path)
    assert source["mount"].get("readOnly") is True, workload.name
    # A client pod gets the CA and nothing else of the Secret (never the server's private key).
    assert [item["key"] for item in source["volume"]["secret"]["items"]] == ["ca.crt"], workload.name


# ----------------------------------------------------------------------------------------------------------
# The URLs


@pytest.mark.parametrize("name", RENDERS)
def test_every_database_url_verifies_the_full_chain_and_host_against_the_mounted_ca(name: str) -> None:
    rendered_ = rendered(name)
    found = urls(rendered_, r"([A-Z]+_)?DATABASE_URL")
    assert found
    clients = {workload.owner["kind"] for workload, _, _ in found}
    cronjobs = rendered_.of_kind("CronJob")
    assert clients == {"Deployment", "Job"} | ({"CronJob"} if cronjobs else set()), clients
    owners = set()
    for workload, container, url in found:
        parts = urlsplit(url)
        assert parts.scheme == "postgresql" and parts.port == 5432, url
        query = _query(url)
        assert query["sslmode"] == "verify-full", f"{workload.name}: {parts.hostname} {query}"
        _assert_the_tls_ca(rendered_, workload, container, query["sslrootcert"])
        owners.add((workload.component, parts.username))
    # The migrations' owner URL and the services' role URL are both covered.
    assert ("order-migrate", "order") in owners and ("order-service", "order_service") in owners, owners


@pytest.mark.parametrize("name", GENERATED)
def test_every_broker_url_is_amqps_on_5671_with_the_mounted_ca(name: str) -> None:
    rendered_ = rendered(name)
    found = urls(rendered_, "RABBITMQ_BROKER_URL")
    rabbitmq = next(s for s in rendered_.of_kind("StatefulSet") if s["metadata"]["name"].endswith("-rabbitmq"))
    nodes = int(rabbitmq["spec"]["replicas"])
    assert len(found) == 2 * nodes, "both services, one URL per node"
    for workload, container, url in found:
        parts = urlsplit(url)
        assert (parts.scheme, parts.port) == ("amqps", 5671), url.replace(parts.password or "", "***")
        assert parts.hostname and parts.hostname.startswith(f"{rabbitmq['metadata']['name']}-")
        _assert_the_tls_ca(rendered_, workload, container, _query(url)["cafile"])


# ----------------------------------------------------------------------------------------------------------
# The servers


def _rabbitmq(rendered: Rendered) -> tuple[Workload, dict[str, str]]:
    workload = rendered.workload("rabbitmq")
    conf = rendered.get("ConfigMap", workload.owner["metadata"]["name"])["data"]["rabbitmq.conf"]
    settings = dict(line.split(" = ", 1) for line in conf.splitlines() if " = " in line and not line.startswith("#"))
    return workload, settings


@pytest.mark.parametrize("name", ["tls", "tls-existing-secret"])
def test_rabbitmq_listens_on_amqps_only_with_its_mounted_certificate(name: str) -> None:
    rendered_ = rendered(name)
    workload, conf = _rabbitmq(rendered_)
    assert conf["listeners.ssl.default"] == "5671"
    assert conf["listeners.tcp"] == "none", "no plain AMQP listener"
    assert not [key for key in conf if key.startswith("listeners.tcp.")], conf
    container = workload.containers(init=False)[0]
    secret = _tls_secret_name(rendered_)
    for option, key in (("cacertfile", "ca.crt"), ("certfile", "tls.crt"), ("keyfile", "tls.key")):
        kind, source_name, source = mounted(workload, container, conf[f"ssl_options.{option}"])
        assert (kind, source_name, source["key"]) == ("Secret", secret, key), option
    # The management UI and the metrics stay on their ports; inter-node traffic is untouched.
    assert conf["management.tcp.port"] == "15672" and conf["prometheus.tcp.port"] == "15692"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["amqps"] == 5671 and 5672 not in ports.values(), ports
    for probe in ("startupProbe", "readinessProbe"):
        assert ports[container[probe]["tcpSocket"]["port"]] == 5671, probe
    assert container["livenessProbe"]["exec"]["command"][0] == "rabbitmq-diagnostics"
    for service in rendered_.of_kind("Service"):
        if service["spec"]["selector"].get("app.kubernetes.io/component") == "rabbitmq":
            numbers = {port["port"] for port in service["spec"]["ports"]}
            assert 5671 in numbers and 5672 not in numbers, service["metadata"]["name"]
            assert {p["targetPort"] for p in service["spec"]["ports"] if p["port"] == 5671} == {"amqps"}


def test_the_network_policies_open_5671_and_no_longer_5672() -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in rendered("tls").of_kind("NetworkPolicy")}

    def ports(rules: list[dict[str, Any]], component: str) -> set[int]:
        found = set()
        for rule in rules:
            peers = rule.get("to", rule.get("from", []))
            labels = [p.get("podSelector", {}).get("matchLabels", {}) for p in peers]
            if any(label.get("app.kubernetes.io/component") == component for label in labels):
                found.update(port["port"] for port in rule.get("ports", []))
        return found

    for service in ("saga-order-service", "saga-customer-service"):
        assert ports(policies[service]["egress"], "rabbitmq") == {5671}, service
    ingress = [rule for rule in policies["saga-rabbitmq"]["ingress"] if rule.get("ports")]
    assert {port["port"] for rule in ingress for port in rule["ports"]} == {5671, 15692}
    numbers = {
        port["port"]
        for policy in policies.values()
        for rule in [*policy.get("ingress", []), *policy.get("egress", [])]
        for port in rule.get("ports", [])
    }
    assert 5671 in numbers and 5672 not in numbers, numbers


@pytest.mark.parametrize("name", ["tls", "tls-existing-secret"])
def test_postgresql_runs_ssl_with_a_key_it_accepts_and_refuses_tcp_without_tls(name: str) -> None:
    rendered_ = rendered(name)
    secret = _tls_secret_name(rendered_)
    for key in ("order", "customer"):
        workload = rendered_.workload(f"{key}-db")
        container = workload.containers()[0]
        args = container["args"]
        assert args[0] == "postgres", "the image's entrypoint runs its initdb for `postgres` only"
        options = dict(args[i + 1].split("=", 1) for i, arg in enumerate(args) if arg == "-c")
        assert options["ssl"] == "on"
        for option, expected in (("ssl_cert_file", "tls.crt"), ("ssl_key_file", "tls.key")):
            kind, source_name, source = mounted(workload, container, options[option])
            assert (kind, source_name, source["key"]) == ("Secret", secret, expected), option
        # PostgreSQL refuses a key others may read, or one owned by a user other than itself or root. The
        # kubelet writes the files as root, group-owned by fsGroup: the group must be postgres's (999).
        _, _, source = mounted(workload, container, options["ssl_key_file"])
        mode = source["volume"]["secret"]["defaultMode"]
        assert mode & 0o037 == 0 and mode & 0o040, oct(mode)
        assert workload.spec["securityContext"]["fsGroup"] == workload.spec["securityContext"]["runAsGroup"] == 999
        assert [item["key"] for item in source["volume"]["secret"]["items"]] == ["tls.crt", "tls.key"]
        # TCP only over TLS: every TCP line of pg_hba.conf is hostssl, or a hostnossl that rejects.
        kind, config_map, source = mounted(workload, container, options["hba_file"])
        hba = rendered_.get(kind, config_map)["data"][source["key"]]
        lines = [line.split() for line in hba.splitlines() if line.strip() and not line.startswith("#")]
        assert ["local", "all", "all", "trust"] in lines, "the image's init scripts use the local socket"
        for line in lines:
            assert line[0] in {"local", "hostssl", "hostnossl"}, line
            if line[0] == "hostnossl":
                assert line[-1] == "reject", line
        assert ["hostssl", "all", "all", "all", "scram-sha-256"] in lines


# ----------------------------------------------------------------------------------------------------------
# The certificates


def _certificate(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


@pytest.mark.parametrize("name", GENERATED)
def test_the_generated_certificate_names_every_host_of_the_urls_and_chains_to_the_ca(name: str) -> None:
    rendered_ = rendered(name)
    secret = rendered_.get("Secret", _tls_secret_name(rendered_))
    assert secret["type"] == "kubernetes.io/tls" and set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    name_of = secret["metadata"]["name"]
    ca = _certificate(_secret(rendered_, name_of, "ca.crt"))
    server = _certificate(_secret(rendered_, name_of, "tls.crt"))
    hosts = {urlsplit(url).hostname for _, _, url in urls(rendered_, r"([A-Z]+_)?DATABASE_URL|RABBITMQ_BROKER_URL")}
    sans = set(
        server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    )
    assert hosts and hosts <= sans, f"not in the certificate: {hosts - sans}"
    assert len(hosts) == 2 + int(rendered_.workload("rabbitmq").owner["spec"]["replicas"])
    # It chains to the CA beside it, which is a CA, and it is a server certificate.
    server.verify_directly_issued_by(ca)
    assert server.issuer == ca.subject != server.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    # The key is the certificate's; the CA's own key is in a Secret of its own, which no pod mounts.
    key = serialization.load_pem_private_key(_secret(rendered_, name_of, "tls.key").encode(), None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == server.public_key().public_bytes(*spki)
    ca_secret = f"{name_of}-ca"
    assert _secret(rendered_, ca_secret, "ca.crt") == _secret(rendered_, name_of, "ca.crt")
    ca_key = serialization.load_pem_private_key(_secret(rendered_, ca_secret, "ca.key").encode(), None)
    assert ca_key.public_key().public_bytes(*spki) == ca.public_key().public_bytes(*spki)
    # The names it was issued for, which an upgrade compares to re-issue it when they change.
    assert set(secret["metadata"]["annotations"]["saga/dns-names"].split(",")) == sans


@pytest.mark.parametrize("name", GENERATED)
def test_only_the_servers_read_the_private_key_and_no_pod_reads_the_ca_key(name: str) -> None:
    rendered_ = rendered(name)
    tls_secret = _tls_secret_name(rendered_)
    readers: dict[str, set[str]] = {}
    for workload in rendered_.workloads():
        for volume in workload.spec.get("volumes", []):
            source = volume.get("secret") or {}
            assert source.get("secretName") != f"{tls_secret}-ca", f"{workload.name} mounts the CA's key"
            if source.get("secretName") == tls_secret:
                readers.setdefault(workload.component, set()).update(item["key"] for item in source["items"])
        for container in workload.containers():
            for item in container.get("env", []):
                ref = (item.get("valueFrom") or {}).get("secretKeyRef") or {}
                assert ref.get("name") not in {tls_secret, f"{tls_secret}-ca"}, workload.name
    servers = {component: keys for component, keys in readers.items() if "tls.key" in keys}
    assert servers == {
        "order-db": {"tls.crt", "tls.key"},
        "customer-db": {"tls.crt", "tls.key"},
        "rabbitmq": {"ca.crt", "tls.crt", "tls.key"},
    }
    clients = {component for component, keys in readers.items() if keys == {"ca.crt"}}
    expected = {"order-service", "customer-service", "order-migrate", "customer-migrate"}
    expected |= {job["metadata"]["labels"]["app.kubernetes.io/component"] for job in rendered_.of_kind("CronJob")}
    assert clients == expected and set(readers) == clients | set(servers)


# ----------------------------------------------------------------------------------------------------------
# tls.existingSecret, the default, NOTES.txt


def test_an_existing_secret_is_mounted_and_nothing_is_generated() -> None:
    rendered_ = rendered("tls-existing-secret")
    assert _tls_secret_name(rendered_) == EXISTING
    # The same Secrets as with TLS off: none with a certificate or key of the chart's.
    names = {secret["metadata"]["name"] for secret in rendered_.of_kind("Secret")}
    assert names == {secret["metadata"]["name"] for secret in rendered_variant("defaults").of_kind("Secret")}
    for secret in rendered_.of_kind("Secret"):
        assert not {"ca.crt", "ca.key", "tls.crt", "tls.key"} & set(secret["data"]), secret["metadata"]["name"]
    assert rendered_.find("Secret", "saga-tls") is None and rendered_.find("Secret", "saga-tls-ca") is None
    mounting = {
        w.component for w in rendered_.workloads() for v in w.spec.get("volumes", []) if v["name"] in {"tls", "tls-ca"}
    }
    assert {"order-db", "customer-db", "rabbitmq", "order-service", "customer-service"} <= mounting
    notes = " ".join(rendered_.notes.split())
    assert f"with the certificate of Secret {EXISTING}" in notes
    assert "generated by the chart" not in notes


def test_notes_say_the_generated_ca_is_for_development_only() -> None:
    notes = " ".join(rendered("tls").notes.split())
    assert "generated by the chart, for development and test clusters only" in notes
    assert "The CA's private key is in Secret saga-tls-ca" in notes
    assert "tls.existingSecret" in notes


def test_an_existing_secret_without_tls_enabled_is_refused() -> None:
    with pytest.raises(Exception, match=re.escape("tls.existingSecret is used only with tls.enabled=true")):
        render({"tls": {"existingSecret": EXISTING}})


def test_the_schema_refuses_unknown_tls_keys() -> None:
    for values in ({"tls": {"enabled": "yes"}}, {"tls": {"enabled": True, "caSecret": "x"}}):
        with pytest.raises(Exception, match="schema"):
            render(values)


def _everything(rendered: Rendered) -> str:
    """Every rendered object as text, the Secrets' values decoded."""
    texts = [repr(obj) for obj in rendered.objects if obj["kind"] != "Secret"]
    for secret in rendered.of_kind("Secret"):
        texts += [f"{secret['metadata']['name']}/{key}" for key in secret.get("data", {})]
        texts += [base64.b64decode(value).decode() for value in secret.get("data", {}).values()]
    return "\n".join(texts) + rendered.notes


@pytest.mark.parametrize("variant", ["defaults", "other-release", "existing-secrets"])
def test_the_default_render_has_no_tls_anywhere(variant: str) -> None:
    rendered_ = rendered_variant(variant)
    text = _everything(rendered_)
    for needle in (
        "sslmode",
        "sslrootcert",
        "amqps",
        "5671",
        "ssl_options",
        "saga-tls",
        "tls.crt",
        "ca.crt",
        "TLS is on",
        "tls-api",
        "SAGA_HTTP_TLS",
        "HTTPS",
        "https",
        "SSL_CERT_FILE",
        "--cacert",
    ):
        assert needle not in text, needle
    _, conf = _rabbitmq(rendered_)
    assert conf["listeners.tcp.default"] == "5672" and "listeners.tcp" not in conf
    for key in ("order", "customer"):
        assert "args" not in rendered_.workload(f"{key}-db").containers()[0]
    for workload in rendered_.workloads():
        assert not [v for v in workload.spec.get("volumes", []) if v["name"] in {"tls", "tls-ca", "hba"}]
    # What does carry TLS here: the same text has it once TLS is on (the check can see it).
    assert "sslmode=verify-full" in _everything(rendered("tls"))


# ----------------------------------------------------------------------------------------------------------
# HTTPS on the APIs: the services serve it with a certificate of their own, every caller the chart routes follows

SERVICES = ("order-service", "customer-service")


def _env(rendered: Rendered, container: dict[str, Any]) -> dict[str, str | None]:
    return {item["name"]: _value(rendered, item) for item in container.get("env", [])}


def _api_secret_name(rendered: Rendered) -> str:
    names = {
        volume["secret"]["secretName"]
        for component in SERVICES
        for volume in rendered.workload(component).spec["volumes"]
        if volume["name"] == "tls-api"
    }
    assert len(names) == 1, names
    return names.pop()


def _api_readers(rendered: Rendered) -> dict[str, set[str]]:
    """component -> the keys of the APIs' Secret its pods mount (from any volume, under any name)."""
    secret = _api_secret_name(rendered)
    readers: dict[str, set[str]] = {}
    for workload in rendered.workloads():
        for volume in workload.spec.get("volumes", []):
            source = volume.get("secret") or {}
            if source.get("secretName") == secret:
                readers.setdefault(workload.component, set()).update(item["key"] for item in source["items"])
        for container in workload.containers():
            for item in container.get("env", []):
                ref = (item.get("valueFrom") or {}).get("secretKeyRef") or {}
                assert ref.get("name") != secret, workload.name
    return readers


def _api_ca_in(rendered: Rendered, workload: Workload, container: dict[str, Any], path: str) -> None:
    kind, name, source = mounted(workload, container, path)
    assert (kind, name, source["key"]) == ("Secret", _api_secret_name(rendered), "ca.crt"), (workload.name, path)
    assert [item["key"] for item in source["volume"]["secret"]["items"]] == ["ca.crt"], workload.name


def _prometheus_jobs(rendered: Rendered) -> dict[str, dict[str, Any]]:
    config = next(c for c in rendered.of_kind("ConfigMap") if "prometheus.yml" in c.get("data", {}))
    return {job["job_name"]: job for job in yaml.safe_load(config["data"]["prometheus.yml"])["scrape_configs"]}


def _api_sans(rendered: Rendered) -> set[str]:
    certificate = _certificate(_secret(rendered, _api_secret_name(rendered), "tls.crt"))
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(names.get_values_for_type(x509.DNSName))


@pytest.mark.parametrize("name", RENDERS)
def test_each_service_serves_https_from_its_mounted_certificate_and_its_probes_follow(name: str) -> None:
    rendered_ = rendered(name)
    for component in SERVICES:
        workload = rendered_.workload(component)
        container = workload.containers(init=False)[0]
        env = _env(rendered_, container)
        for variable, key in (("SAGA_HTTP_TLS_CERT_FILE", "tls.crt"), ("SAGA_HTTP_TLS_KEY_FILE", "tls.key")):
            kind, secret, source = mounted(workload, container, env[variable])
            assert (kind, secret, source["key"]) == ("Secret", _api_secret_name(rendered_), key), variable
            assert source["mount"].get("readOnly") is True
            # Read by the service's user: root-owned, group fsGroup (the pod's uid), no one else.
            assert source["volume"]["secret"]["defaultMode"] == 0o440
        assert workload.spec["securityContext"]["fsGroup"] == workload.spec["securityContext"]["runAsUser"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"].get("scheme") == "HTTPS", (component, probe)
            assert container[probe]["httpGet"]["port"] == "http"


@pytest.mark.parametrize("name", RENDERS)
def test_only_the_services_read_the_api_key_and_their_callers_its_ca(name: str) -> None:
    readers = _api_readers(rendered(name))
    assert readers == {
        "order-service": {"tls.crt", "tls.key"},
        "customer-service": {"tls.crt", "tls.key"},
        "test": {"ca.crt"},
        "prometheus": {"ca.crt"},
    }


@pytest.mark.parametrize("name", RENDERS)
def test_the_helm_test_pod_calls_https_verifying_the_api_ca(name: str) -> None:
    rendered_ = rendered(name)
    workload = rendered_.workload("test")
    container = workload.containers()[0]
    env = _env(rendered_, container)
    for variable, component in (("ORDER_URL", "order-service"), ("CUSTOMER_URL", "customer-service")):
        url = urlsplit(env[variable])
        assert url.scheme == "https", env[variable]
        service = rendered_.get("Service", url.hostname.split(".")[0])
        assert service["metadata"]["labels"]["app.kubernetes.io/component"] == component
        if name != "tls-existing-secret":
            assert url.hostname in _api_sans(rendered_)
    # urllib (OpenSSL's default verify paths) reads SSL_CERT_FILE: the APIs' CA, and nothing else of that Secret.
    _api_ca_in(rendered_, workload, container, env["SSL_CERT_FILE"])


@pytest.mark.parametrize("name", RENDERS)
def test_prometheus_scrapes_the_services_over_https_verifying_the_api_ca(name: str) -> None:
    rendered_ = rendered(name)
    jobs = _prometheus_jobs(rendered_)
    services = jobs["saga-services"]
    assert services["scheme"] == "https"
    tls_config = services["tls_config"]
    assert set(tls_config) == {"ca_file", "server_name"}, "verification on (no insecure_skip_verify)"
    workload = rendered_.workload("prometheus")
    _api_ca_in(rendered_, workload, workload.containers()[0], tls_config["ca_file"])
    # Targets are pod IPs: the name checked is one the certificate carries (the Service's).
    order_service = rendered_.workload("order-service").owner["metadata"]["name"]
    assert tls_config["server_name"].startswith(f"{order_service}.")
    if name != "tls-existing-secret":
        assert tls_config["server_name"] in _api_sans(rendered_)
    assert "scheme" not in jobs["rabbitmq"] and "tls_config" not in jobs["rabbitmq"]


@pytest.mark.parametrize("name", GENERATED)
def test_the_api_certificate_names_both_services_and_chains_to_the_generated_ca(name: str) -> None:
    rendered_ = rendered(name)
    api = _api_secret_name(rendered_)
    secret = rendered_.get("Secret", api)
    assert api == f"{_tls_secret_name(rendered_)}-api"
    assert secret["type"] == "kubernetes.io/tls" and set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert _secret(rendered_, api, "ca.crt") == _secret(rendered_, _tls_secret_name(rendered_), "ca.crt")
    ca = _certificate(_secret(rendered_, api, "ca.crt"))
    server = _certificate(_secret(rendered_, api, "tls.crt"))
    server.verify_directly_issued_by(ca)
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    key = serialization.load_pem_private_key(_secret(rendered_, api, "tls.key").encode(), None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == server.public_key().public_bytes(*spki)
    sans = _api_sans(rendered_)
    test_env = _env(rendered_, rendered_.workload("test").containers()[0])
    for variable in ("ORDER_URL", "CUSTOMER_URL"):
        fqdn = urlsplit(test_env[variable]).hostname
        service, ns = fqdn.split(".")[:2]
        assert {fqdn, service, f"{service}.{ns}", f"{service}.{ns}.svc"} <= sans, (variable, sans)
    # Not the databases' or the broker's names: that certificate is another (its key on other pods).
    assert not any("-db" in n or "rabbitmq" in n for n in sans)
    assert set(secret["metadata"]["annotations"]["saga/dns-names"].split(",")) == sans


def test_an_existing_api_secret_is_mounted_and_none_is_generated() -> None:
    rendered_ = rendered("tls-existing-secret")
    assert _api_secret_name(rendered_) == EXISTING_API
    assert rendered_.find("Secret", "saga-tls-api") is None
    notes = " ".join(rendered_.notes.split())
    assert f"get secret {EXISTING_API} -o jsonpath" in notes


def test_an_existing_secret_needs_an_existing_api_secret_and_tls_enabled() -> None:
    with pytest.raises(Exception, match=re.escape("tls.existingSecret needs tls.existingApiSecret too")):
        render({"tls": {"enabled": True, "existingSecret": EXISTING}})
    with pytest.raises(Exception, match=re.escape("tls.existingApiSecret is used only with tls.enabled=true")):
        render({"tls": {"existingApiSecret": EXISTING_API}})
    # A Secret of yours for the APIs only: the chart's CA still serves the databases and the broker.
    rendered_ = render({"tls": {"enabled": True, "existingApiSecret": EXISTING_API}})
    assert _api_secret_name(rendered_) == EXISTING_API and rendered_.find("Secret", "saga-tls") is not None
    assert rendered_.find("Secret", "saga-tls-api") is None


def test_notes_curl_the_apis_over_https_with_their_ca() -> None:
    notes = rendered("tls").notes
    host = "saga-order-service.saga.svc.cluster.local"
    assert "get secret saga-tls-api -o jsonpath='{.data.ca\\.crt}' | base64 -d > saga-api-ca.crt" in notes
    curls = [line for line in notes.splitlines() if "curl" in line]
    assert len(curls) == 2
    for line in curls:
        assert f"--cacert saga-api-ca.crt --resolve {host}:8001:127.0.0.1" in line
        assert f"https://{host}:8001/orders/" in line and "http://" not in line
