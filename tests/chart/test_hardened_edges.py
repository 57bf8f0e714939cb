"""Issue 25's edges in the rendered chart: a migration owner that is no superuser, a superuser password no
service pod can reach, and consumers that check who published."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.chart import ALL_VARIANTS, Rendered, Workload, render, rendered_variant

KEYS = ("order", "customer")


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def _secret(rendered: Rendered, name: str, key: str) -> str:
    return base64.b64decode(rendered.get("Secret", name)["data"][key]).decode()


def _secrets_read_by(workload: Workload) -> set[str]:
    """Every Secret a pod can read: through env, envFrom or a volume."""
    names = set()
    for container in workload.containers():
        for item in container.get("env", []):
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        names.update(source["secretRef"]["name"] for source in container.get("envFrom", []) if "secretRef" in source)
    for volume in workload.spec.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        for source in (volume.get("projected") or {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@pytest.mark.parametrize("key", KEYS)
def test_the_database_owner_is_no_superuser_and_the_migrations_log_in_as_it(variant: str, key: str) -> None:
    rendered = rendered_variant(variant)
    database = _env(rendered.workload(f"{key}-db").containers()[0])
    owner = database["SAGA_DATABASE_OWNER"]["value"]
    # The image's initdb makes POSTGRES_USER the superuser: that is postgres, never the owner.
    assert database["POSTGRES_USER"]["value"] == "postgres" != owner
    script = next(c for c in rendered.of_kind("ConfigMap") if "create-owner.sh" in c.get("data", {}))
    text = script["data"]["create-owner.sh"]
    assert 'CREATE ROLE :"owner" LOGIN CREATEROLE NOSUPERUSER' in text
    assert 'ALTER DATABASE :"database" OWNER TO :"owner"' in text
    mounted = rendered.workload(f"{key}-db").spec["volumes"]
    assert {"name": script["metadata"]["name"], "defaultMode": 0o555} in [v.get("configMap") for v in mounted]
    migrate = rendered.workload(f"{key}-migrate")
    for container in migrate.containers():
        url = _env(container).get("DATABASE_URL")
        if url is None:
            continue  # wait-for-database: pg_isready needs no password
        ref = url["valueFrom"]["secretKeyRef"]
        if rendered.find("Secret", ref["name"]) is not None:  # else an existing Secret, not rendered
            assert urlsplit(_secret(rendered, ref["name"], ref["key"])).username == owner


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_only_the_database_pod_reads_the_superuser_password(variant: str) -> None:
    rendered = rendered_variant(variant)
    for key in KEYS:
        database = rendered.workload(f"{key}-db")
        superuser = _env(database.containers()[0])["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
        readers = sorted(w.name for w in rendered.workloads() if superuser["name"] in _secrets_read_by(w))
        assert readers == [database.name], f"the {key} superuser's Secret is read by {readers}"
        service = rendered.workload(f"{key}-service")
        assert superuser["name"] not in _secrets_read_by(service)
        if rendered.find("Secret", superuser["name"]) is None:
            continue  # an existing Secret (the plain manifests, existing-secrets)
        password = _secret(rendered, superuser["name"], superuser["key"])
        for name in _secrets_read_by(service) | _secrets_read_by(rendered.workload(f"{key}-migrate")):
            secret = rendered.find("Secret", name)
            for value in (secret or {}).get("data", {}).values():
                assert password not in base64.b64decode(value).decode(), f"the superuser's password is in {name}"


def test_an_owner_named_like_the_superuser_is_refused() -> None:
    with pytest.raises(Exception, match="superuser"):
        render({"services": {"order": {"database": {"username": "postgres"}}}})


def test_a_given_superuser_secret_replaces_the_generated_one() -> None:
    rendered = render({"services": {"order": {"database": {"existingSecret": "my-order-superuser"}}}})
    ref = _env(rendered.workload("order-db").containers()[0])["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "my-order-superuser", "key": "superuser-password"}
    assert rendered.find("Secret", "saga-order-db") is None
    assert rendered.find("Secret", "saga-customer-db") is not None


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_every_consumer_checks_the_publisher_against_the_users_of_the_definitions(variant: str) -> None:
    rendered = rendered_variant(variant)
    config = next(c for c in rendered.of_kind("ConfigMap") if "definitions.template.json" in c.get("data", {}))
    broker_users = {user["name"] for user in json.loads(config["data"]["definitions.template.json"])["users"]}
    for workload in rendered.service_workloads():
        env = _env(workload.containers()[0])
        publishers = json.loads(env["SAGA_BROKER_PUBLISHERS"]["value"])
        assert publishers == {"order-service": "order-service", "customer-service": "customer-service"}
        assert set(publishers.values()) <= broker_users
        # The service's own broker URL logs in as the user the other service expects of it.
        ref = env["RABBITMQ_BROKER_URL"]["valueFrom"]["secretKeyRef"]
        if rendered.find("Secret", ref["name"]) is not None:
            urls = _secret(rendered, ref["name"], ref["key"]).split(",")
            assert {urlsplit(url).username for url in urls} == {publishers[workload.component]}


def test_the_chart_keeps_the_publisher_check_its_own() -> None:
    values = {"services": {"order": {"settings": {"SAGA_BROKER_PUBLISHERS": "{}"}}}}
    with pytest.raises(Exception, match="SAGA_BROKER_PUBLISHERS is set by the chart itself"):
        render(values)
