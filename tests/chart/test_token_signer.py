"""The development token signer (issue 25, item 3): its private key in a Secret of its own that no pod but the
`helm test` one reads (not mounted, not in an env var, not in projected volumes), gone with the release,
flagged as development-only in NOTES.txt; and the production example wires a real identity provider with no
key at all."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from saga_dev.chart import hook_of
from tests.support.chart import ALL_VARIANTS, Rendered, render, rendered_variant

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "charts/saga/examples/values-production.yaml"


def secret_keys_read(rendered: Rendered, workload: Any) -> dict[str, set[str]]:
    """Secret name -> the keys a pod can read from it (None in the set: every key)."""
    read: dict[str, set[str]] = {}

    def add(name: str, keys: list[str] | None) -> None:
        read.setdefault(name, set()).update(keys if keys is not None else {"*"})

    for container in workload.containers():
        for env in container.get("env", []):
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                add(ref["name"], [ref["key"]])
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                add(source["secretRef"]["name"], None)
    for volume in workload.spec.get("volumes", []):
        sources = [volume] if "secret" in volume else []
        sources += volume.get("projected", {}).get("sources", [])
        for source in sources:
            if "secret" in source:
                items = source["secret"].get("items")
                add(source["secret"]["secretName"], [item["key"] for item in items] if items else None)
    return read


def private_keys_read(rendered: Rendered, workload: Any) -> list[str]:
    found = []
    for name, keys in secret_keys_read(rendered, workload).items():
        secret = rendered.find("Secret", name)
        if secret is None:
            # An existingSecret: made by the user, so judged by its name and keys.
            if any(key.endswith("signing-key.pem") or (key == "*" and "signer" in name) for key in keys):
                found.append(f"{name} ({sorted(keys)})")
            continue
        for key, value in secret.get("data", {}).items():
            if ("*" in keys or key in keys) and b"PRIVATE KEY" in base64.b64decode(value):
                found.append(f"{name}/{key}")
    return found


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_no_pod_but_the_helm_test_one_can_read_a_private_key(variant: str) -> None:
    rendered = rendered_variant(variant)
    workloads = list(rendered.workloads())
    services = rendered.service_workloads()
    assert services, "the services' Deployments are rendered"
    for workload in workloads:
        keys = private_keys_read(rendered, workload)
        if hook_of(workload.owner) == "test":
            continue
        if workload.component.endswith("-db") or workload.component == "rabbitmq":
            # With tls.enabled the servers read their own TLS key, nothing else (tests/chart/test_tls.py).
            keys = [key for key in keys if not key.endswith("-tls/tls.key")]
        if workload.component in {"order-service", "customer-service"}:
            # With tls.enabled the services read their own HTTPS key, nothing else (tests/chart/test_tls.py).
            keys = [key for key in keys if not key.endswith("-tls-api/tls.key")]
        assert keys == [], f"{workload.name} can read a private key: {keys}"
    for service in services:
        mounted = {v["secret"]["secretName"] for v in service.spec.get("volumes", []) if "secret" in v}
        signer = "shop-token-signer" if variant == "other-release" else "saga-token-signer"
        assert signer not in mounted and not any(name.startswith(f"{signer}-") for name in mounted), service.name


def test_the_private_key_has_a_secret_of_its_own_that_matches_the_certificate_the_services_mount() -> None:
    rendered = rendered_variant("defaults")
    signer = rendered.get("Secret", "saga-token-signer")
    verifier = rendered.get("Secret", "saga-token-verifier")
    assert set(signer["data"]) == {"signing-key.pem"}
    assert set(verifier["data"]) == {"certificate.pem"}
    key = serialization.load_pem_private_key(base64.b64decode(signer["data"]["signing-key.pem"]), None)
    certificate = x509.load_pem_x509_certificate(base64.b64decode(verifier["data"]["certificate.pem"]))
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.PEM, public) == certificate.public_key().public_bytes(
        serialization.Encoding.PEM, public
    )
    for service in rendered.service_workloads():
        volume = next(v for v in service.spec["volumes"] if v["name"] == "token-verifier")
        assert volume["secret"]["secretName"] == "saga-token-verifier", service.name
    # The helm test pod (and `make token`, TOKEN_SIGNER ?= $(HELM_RELEASE)-token-signer) read the key there.
    pod = next(w for w in rendered.workloads() if hook_of(w.owner) == "test" and w.owner["kind"] == "Pod")
    assert secret_keys_read(rendered, pod).get("saga-token-signer") == {"signing-key.pem"}
    assert (
        "$(KUBECTL) get secret $(TOKEN_SIGNER) -o jsonpath='{.data.signing-key\\.pem}'"
        in (ROOT / "Makefile").read_text()
    )


def test_the_signing_key_goes_with_the_release() -> None:
    for secret in ("saga-token-signer", "saga-token-verifier"):
        annotations = rendered_variant("defaults").get("Secret", secret)["metadata"].get("annotations") or {}
        assert "helm.sh/resource-policy" not in annotations, f"{secret} would outlive `helm uninstall`"


def test_notes_say_the_signer_is_for_development_only() -> None:
    notes = " ".join(rendered_variant("defaults").notes.split())
    assert "development and test clusters only" in notes
    assert "anyone who can read Secrets in namespace" in notes
    assert "charts/saga/examples/values-production.yaml" in notes
    production = " ".join(render(yaml.safe_load(PRODUCTION.read_text())).notes.split())
    assert "development" not in production.lower()


def test_the_production_example_wires_an_identity_provider_and_renders_no_key() -> None:
    values = yaml.safe_load(PRODUCTION.read_text())
    rendered = render(values)
    assert not [s["metadata"]["name"] for s in rendered.of_kind("Secret") if "token-" in s["metadata"]["name"]]
    for secret in rendered.of_kind("Secret"):
        for key, value in secret.get("data", {}).items():
            assert b"PRIVATE KEY" not in base64.b64decode(value), f"{secret['metadata']['name']}/{key}"
    for service in rendered.service_workloads():
        env = {e["name"]: e.get("value") for c in service.containers(init=False) for e in c.get("env", [])}
        assert env["SAGA_AUTH_JWKS_URL"] == values["auth"]["jwksUrl"], service.name
        assert env["SAGA_AUTH_ISSUER"] == values["auth"]["issuer"], service.name
        assert not [v for v in service.spec.get("volumes", []) if v["name"] == "token-verifier"], service.name


def test_an_existing_signer_needs_its_certificate_secret_too() -> None:
    with pytest.raises(Exception, match="existingCertificateSecret"):
        render({"auth": {"existingSecret": "my-signer"}})
