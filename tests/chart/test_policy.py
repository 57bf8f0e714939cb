"""Policy checks on the rendered manifests: a violation fails the build.

Every pod, hooks, CronJobs and `helm test` included: the restricted security profile (non-root, no privilege
escalation, no capabilities, seccomp RuntimeDefault, read-only root filesystem), requests and limits,
probes on long-running containers, pinned images, no plaintext credentials, graceful termination; every Job
bounded in time and retries, no CronJob running twice at once.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from tests.support.chart import ALL_VARIANTS, Rendered, render, rendered_variant

# Pods that talk to the Kubernetes API, and the one thing each does with it.
NEEDS_API_TOKEN = {"prometheus"}
IMAGE = re.compile(
    r"^(?P<repository>[a-z0-9][a-z0-9._/-]*):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})(@sha256:[a-f0-9]{64})?$"
)


def violations(rendered: Rendered) -> list[str]:
    found = []
    for workload in rendered.workloads():
        where = workload.name
        pod = workload.spec
        context = pod.get("securityContext", {})
        if context.get("runAsNonRoot") is not True or context.get("runAsUser", 0) == 0:
            found.append(f"{where}: pod must run as a non-root user")
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            found.append(f"{where}: pod must use the RuntimeDefault seccomp profile")
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                found.append(f"{where}: {flag}")
        for volume in pod.get("volumes", []):
            if "hostPath" in volume:
                found.append(f"{where}: hostPath volume {volume['name']}")
        if pod.get("enableServiceLinks") is not False:
            found.append(f"{where}: enableServiceLinks must be false")
        wants_token = workload.component in NEEDS_API_TOKEN
        if pod.get("automountServiceAccountToken") is not wants_token:
            found.append(f"{where}: automountServiceAccountToken must be {wants_token}")
        long_running = workload.owner["kind"] in {"Deployment", "StatefulSet"}
        for container in workload.containers():
            name = f"{where}/{container['name']}"
            security = container.get("securityContext", {})
            if security.get("allowPrivilegeEscalation") is not False:
                found.append(f"{name}: allowPrivilegeEscalation must be false")
            if security.get("privileged"):
                found.append(f"{name}: privileged")
            if security.get("capabilities", {}).get("drop") != ["ALL"] or security.get("capabilities", {}).get("add"):
                found.append(f"{name}: must drop ALL capabilities and add none")
            if security.get("readOnlyRootFilesystem") is not True:
                found.append(f"{name}: root filesystem must be read-only")
            if security.get("runAsUser") == 0:
                found.append(f"{name}: runs as root")
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(kind, {}):
                        found.append(f"{name}: no {resource} {kind[:-1]}")
            match = IMAGE.match(container["image"])
            if not match:
                found.append(f"{name}: image {container['image']!r} is not repository:tag")
            elif match["tag"] == "latest":
                found.append(f"{name}: image tag latest")
            if container.get("imagePullPolicy") not in {"IfNotPresent", "Always", "Never"}:
                found.append(f"{name}: imagePullPolicy must be explicit")
            is_main = container in pod["containers"]
            if long_running and is_main:
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in container:
                        found.append(f"{name}: no {probe}")
            for item in container.get("env", []):
                # A credential comes from a Secret; a literal is fine only as the path of a mounted file.
                if "value" in item and re.search(r"PASSWORD|SECRET|TOKEN|COOKIE", item["name"]):
                    if not item["value"].startswith("/"):
                        found.append(f"{name}: {item['name']} is a literal value, not a secretKeyRef")
                if "value" in item and re.search(r"://[^/\s:@]+:[^/\s@]+@", item["value"]):
                    found.append(f"{name}: {item['name']} carries a password in a URL")
    for service in rendered.of_kind("Service"):
        if service["spec"].get("type", "ClusterIP") != "ClusterIP":
            found.append(f"Service/{service['metadata']['name']}: {service['spec']['type']} exposes it outside")
    return found


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_the_rendered_manifests_pass_the_policies(variant: str) -> None:
    assert violations(rendered_variant(variant)) == []


def test_the_policies_catch_violations(default: Rendered) -> None:
    """The checks above are not vacuous: a pod stripped of its hardening is reported on every count."""
    broken = render()
    workload = broken.workload("order-service")
    workload.spec["securityContext"] = {}
    container = workload.spec["containers"][0]
    container["securityContext"] = {"privileged": True}
    container["image"] = "saga/order-service:latest"
    container.pop("resources")
    container.pop("readinessProbe")
    container["env"].append({"name": "SAGA_ADMIN_PASSWORD", "value": "hunter2"})
    found = "\n".join(violations(broken))
    for expected in (
        "non-root",
        "seccomp",
        "privileged",
        "read-only",
        "capabilities",
        "tag latest",
        "no cpu request",
        "no readinessProbe",
        "literal value",
    ):
        assert expected in found, expected


def test_the_policies_cover_the_cronjobs_pod_templates() -> None:
    """The CronJobs' pods are checked like every other pod: a stripped one is reported."""
    broken = render()
    workloads = {w.name: w for w in broken.workloads()}
    assert {"CronJob/saga-reconcile", "CronJob/saga-prune"} <= set(workloads)
    workload = workloads["CronJob/saga-prune"]
    workload.spec["securityContext"] = {}
    workload.spec["automountServiceAccountToken"] = True
    container = workload.spec["containers"][0]
    container["securityContext"] = {}
    container.pop("resources")
    found = "\n".join(v for v in violations(broken) if v.startswith("CronJob/saga-prune"))
    for expected in (
        "non-root",
        "seccomp",
        "read-only",
        "capabilities",
        "no memory limit",
        "automountServiceAccountToken",
    ):
        assert expected in found, expected


def job_specs(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    """(name, Job spec) of every Job and of every CronJob's job template."""
    found = [(f"Job/{j['metadata']['name']}", j["spec"]) for j in rendered.of_kind("Job")]
    found += [
        (f"CronJob/{c['metadata']['name']}", c["spec"]["jobTemplate"]["spec"]) for c in rendered.of_kind("CronJob")
    ]
    return found


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_jobs_are_bounded_and_cronjobs_never_overlap(variant: str) -> None:
    rendered = rendered_variant(variant)
    for name, spec in job_specs(rendered):
        assert 0 < spec["activeDeadlineSeconds"] <= 3600, f"{name}: a Job must not run forever"
        assert 0 <= spec["backoffLimit"] <= 10, f"{name}: bounded retries"
        assert spec["template"]["spec"]["restartPolicy"] == "Never", name
    for cronjob in rendered.of_kind("CronJob"):
        name, spec = cronjob["metadata"]["name"], cronjob["spec"]
        assert len(name) <= 52, f"{name}: the Jobs' names get 11 more characters"
        assert spec["concurrencyPolicy"] == "Forbid", name
        assert spec["startingDeadlineSeconds"] >= 10, name
        assert spec["successfulJobsHistoryLimit"] >= 0 and spec["failedJobsHistoryLimit"] >= 1, (
            f"{name}: a failed run must stay visible"
        )
        job = spec["jobTemplate"]["spec"]
        container = job["template"]["spec"]["containers"][0]["name"]
        rules = job["podFailurePolicy"]["rules"]
        # Exit 3 ("needs a human") fails the Job at once, visibly; no rule ignores or counts it away.
        assert {
            "action": "FailJob",
            "onExitCodes": {"containerName": container, "operator": "In", "values": [3]},
        } in rules, name
        assert all(rule["action"] != "Ignore" or "onExitCodes" not in rule for rule in rules), name
        # The Job and its pods carry the labels the network policies and the selectors use.
        assert job["template"]["metadata"]["labels"] == cronjob["metadata"]["labels"], name


def _secret_values(rendered: Rendered) -> list[str]:
    return [
        base64.b64decode(value).decode() for secret in rendered.of_kind("Secret") for value in secret["data"].values()
    ]


def test_credentials_are_generated_and_never_leave_the_secrets() -> None:
    first, second = render(), render()
    secrets = {s["metadata"]["name"]: s for s in first.of_kind("Secret")}
    assert set(secrets) == {
        "saga-order-service",
        "saga-customer-service",
        "saga-order-db",  # the database superuser's password, read by the database pod only
        "saga-customer-db",
        "saga-rabbitmq",
        "saga-grafana",
        "saga-token-signer",
        "saga-token-verifier",
    }
    for name, secret in secrets.items():
        # The development signer's key goes with the release (tests/chart/test_token_signer.py); the rest stay.
        if not name.startswith("saga-token-"):
            assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert "stringData" not in secret
    passwords = [
        base64.b64decode(value).decode()
        for secret in first.of_kind("Secret")
        for key, value in secret["data"].items()
        if not key.endswith(("-url", ".pem"))
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9]{32}", p) for p in passwords), "32 random letters and digits each"
    assert len(set(passwords)) == len(passwords)
    assert set(passwords).isdisjoint(_secret_values(second)), "a second install generates other passwords"
    # No password appears anywhere but in the Secrets, nor does the token signer's private key.
    others = [o for o in first.objects if o["kind"] != "Secret"]
    text = repr(others)
    assert not [p for p in passwords if p in text]
    signing_key = base64.b64decode(secrets["saga-token-signer"]["data"]["signing-key.pem"]).decode()
    assert "PRIVATE KEY" in signing_key
    assert signing_key.splitlines()[1] not in text
    assert (
        signing_key != base64.b64decode(second.get("Secret", "saga-token-signer")["data"]["signing-key.pem"]).decode()
    )


def test_existing_secrets_replace_every_generated_one() -> None:
    rendered = rendered_variant("existing-secrets")
    assert rendered.of_kind("Secret") == []


def _flatten(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _flatten(v)]
    if isinstance(node, list):
        return [x for v in node for x in _flatten(v)]
    return [node]


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_graceful_termination_outlasts_the_drain(variant: str) -> None:
    rendered = rendered_variant(variant)
    for workload in rendered.service_workloads():
        container = workload.containers()[0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        drain = float(env["SAGA_DRAIN_TIMEOUT_S"])
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        # uvicorn's graceful timeout is drain + 5 s (saga_common.cli).
        assert workload.spec["terminationGracePeriodSeconds"] > pre_stop + drain + 5, workload.name
    for deployment in rendered.of_kind("Deployment"):
        if deployment["metadata"]["name"].endswith("-service"):
            assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_disruption_budgets(variant: str) -> None:
    rendered = rendered_variant(variant)
    budgets = {p["metadata"]["name"]: p["spec"] for p in rendered.of_kind("PodDisruptionBudget")}
    for workload in rendered.service_workloads():
        assert budgets[workload.owner["metadata"]["name"]]["maxUnavailable"] >= 1, "a drain must always progress"
    rabbitmq = next(s for s in rendered.of_kind("StatefulSet") if s["metadata"]["name"].endswith("-rabbitmq"))
    nodes = rabbitmq["spec"]["replicas"]
    if nodes > 1:
        assert budgets[rabbitmq["metadata"]["name"]]["minAvailable"] == nodes // 2 + 1, "keep a majority"
    else:
        assert rabbitmq["metadata"]["name"] not in budgets, "a one-node budget would block every drain"
