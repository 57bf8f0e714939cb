"""k8s/saga.yaml, the manifests for users without Helm: rendered from the chart, never edited by hand, and
complete once k8s/create-secrets.sh has made the Secrets they refer to."""

from __future__ import annotations

import base64
import difflib
import os
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml

from saga_dev.chart import ROOT
from saga_dev.plain_manifests import K8S_DIR, PLAIN_MANIFESTS, plain_manifests_text
from tests.support.service_settings import SETTINGS


def test_the_plain_manifests_match_the_chart() -> None:
    expected = plain_manifests_text()
    actual = PLAIN_MANIFESTS.read_text() if PLAIN_MANIFESTS.exists() else ""
    if actual != expected:
        diff = "".join(
            list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True), "k8s/saga.yaml", "chart"))[
                :60
            ]
        )
        pytest.fail(f"k8s/saga.yaml has drifted from charts/saga: run `make manifests` and commit the result.\n{diff}")


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(PLAIN_MANIFESTS.read_text()) if doc]


@pytest.fixture(scope="module")
def secrets() -> dict[str, dict[str, str]]:
    result = subprocess.run(["sh", str(K8S_DIR / "create-secrets.sh")], capture_output=True, text=True, check=True)
    found = {}
    for doc in yaml.safe_load_all(result.stdout):
        assert doc["kind"] == "Secret" and doc["metadata"]["namespace"] == "saga"
        found[doc["metadata"]["name"]] = {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}
    return found


def test_the_plain_manifests_carry_no_credential_and_no_helm_leftover(manifests: list[dict]) -> None:
    assert not [d for d in manifests if d["kind"] == "Secret"]
    text = PLAIN_MANIFESTS.read_text()
    assert "helm.sh/hook" not in text and "managed-by: Helm" not in text
    assert manifests[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "saga"}}
    assert not [d for d in manifests if d["kind"] == "Pod"], "no helm test pod"
    assert [d["kind"] for d in manifests][-2:] == ["Job", "Job"], "migrations last, as plain Jobs"


def test_the_plain_manifests_run_the_operations_cronjobs(manifests: list[dict]) -> None:
    cronjobs = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "CronJob"}
    assert set(cronjobs) == {"saga-reconcile", "saga-prune"}
    for cronjob in cronjobs.values():
        container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "saga/order-service:dev" and container["command"] == ["sagactl"]
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
        assert refs == {"saga-order-service-credentials", "saga-customer-service-credentials"}


def test_create_secrets_makes_every_secret_the_manifests_use(manifests: list[dict], secrets: dict) -> None:
    referenced = set()
    for doc in manifests:
        for node in _walk(doc):
            if isinstance(node, dict) and "secretKeyRef" in node:
                referenced.add((node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]))
            if isinstance(node, dict) and "secretName" in node:
                for item in node.get("items", []):
                    referenced.add((node["secretName"], item["key"]))
    assert referenced
    for name, key in referenced:
        assert key in secrets.get(name, {}), f"k8s/create-secrets.sh does not make {name}/{key}"


def test_create_secrets_builds_urls_the_services_accept(secrets: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SAGA_") or name in {"DATABASE_URL", "RABBITMQ_BROKER_URL"}:
            monkeypatch.delenv(name)
    for service, settings_class in SETTINGS.items():
        secret = secrets[f"saga-{service}-credentials"]
        monkeypatch.setenv("SAGA_ENVIRONMENT", "production")
        monkeypatch.setenv("DATABASE_URL", secret["database-url"])
        monkeypatch.setenv("RABBITMQ_BROKER_URL", secret["rabbitmq-url"])
        settings = settings_class()
        assert urlsplit(settings.database_url).password == secret["service-database-password"]
        assert urlsplit(secret["migration-database-url"]).password == secret["database-password"]
        assert len(settings.broker_urls) == 3
        assert all(urlsplit(u).password == secret["rabbitmq-password"] for u in settings.broker_urls)
        assert all(urlsplit(u).username == service for u in settings.broker_urls)
    again = subprocess.run(
        ["sh", str(K8S_DIR / "create-secrets.sh")], capture_output=True, text=True, check=True
    ).stdout
    assert secrets["saga-grafana-credentials"]["admin-password"] not in again, "fresh passwords on each run"


def test_the_urls_of_create_secrets_name_objects_of_the_manifests(manifests: list[dict], secrets: dict) -> None:
    services = {d["metadata"]["name"] for d in manifests if d["kind"] == "Service"}
    for service in SETTINGS:
        secret = secrets[f"saga-{service}-credentials"]
        assert urlsplit(secret["database-url"]).hostname.split(".")[0] in services
        for url in secret["rabbitmq-url"].split(","):
            assert urlsplit(url).hostname.split(".")[1] in services


def _walk(node):
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_make_manifests_regenerates_the_file() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/python -m saga_dev.plain_manifests" in makefile
