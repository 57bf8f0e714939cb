"""Every rendered object is valid against the Kubernetes API schemas, strict (unknown keys are errors).

Two releases: the oldest one the chart supports in practice (1.31, kind's images of 2024) and the one the kind
cluster of k8s/kind-config.yaml runs (its pinned node image).
"""

from __future__ import annotations

import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from saga_dev.chart import ROOT
from saga_dev.plain_manifests import PLAIN_MANIFESTS
from tests.support.chart import ALL_VARIANTS, KUBE_VERSION, render, rendered_variant

KIND_CONFIG = ROOT / "k8s" / "kind-config.yaml"


def kind_node_version() -> str:
    """The Kubernetes version of the node image k8s/kind-config.yaml pins (every node runs the same)."""
    images = {node["image"] for node in yaml.safe_load(KIND_CONFIG.read_text())["nodes"]}
    assert len(images) == 1, f"one node image for every node, not {images}"
    (image,) = images
    return image.split(":v", 1)[1].split("@", 1)[0]


KUBE_VERSIONS = [KUBE_VERSION, kind_node_version()]


def test_kind_nodes_run_an_image_pinned_by_digest_and_newer_than_the_oldest_supported() -> None:
    (image,) = {node["image"] for node in yaml.safe_load(KIND_CONFIG.read_text())["nodes"]}
    assert image.startswith("kindest/node:v") and "@sha256:" in image, image
    oldest, kind = (tuple(int(part) for part in version.split(".")) for version in KUBE_VERSIONS)
    assert kind >= oldest


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_every_object_is_valid(variant: str, kube_version: str) -> None:
    errors = []
    for obj in rendered_variant(variant).objects:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


# TLS on (tests/chart/test_tls.py): generated certificates, and a Secret of cert-manager's.
TLS_VALUES = {
    "tls": {"tls": {"enabled": True}},
    "tls-existing-secret": {
        "tls": {
            "enabled": True,
            "existingSecret": "saga-tls-from-cert-manager",
            "existingApiSecret": "saga-api-tls-from-cert-manager",
        }
    },
}


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", TLS_VALUES)
def test_every_object_is_valid_with_tls_on(values: str, kube_version: str) -> None:
    rendered = render(TLS_VALUES[values])
    assert rendered.find("ConfigMap", "saga-postgresql-hba"), "the TLS objects are among those validated"
    errors = []
    for obj in rendered.objects:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


def test_the_plain_manifests_are_valid_with_the_cli() -> None:
    """The same check through kubernetes-validate's own command line, on the file users apply."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "--kubernetes-version",
            KUBE_VERSION,
            "--strict",
            "--quiet",
            str(PLAIN_MANIFESTS),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_invalid_object_is_caught() -> None:
    """The validator is strict: a misspelled key fails (guards against a silently lax check)."""
    deployment = next(o for o in rendered_variant("defaults").objects if o["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_the_cronjobs_are_validated_strictly_as_batch_v1(kube_version: str) -> None:
    """The CronJobs are among the validated objects, and a key misplaced in their job template is caught."""
    cronjobs = [o for o in rendered_variant("replicas").objects if o["kind"] == "CronJob"]
    assert len(cronjobs) == 2 and {o["apiVersion"] for o in cronjobs} == {"batch/v1"}
    for cronjob in cronjobs:
        assert "timeZone" in cronjob["spec"]
        kubernetes_validate.validate(cronjob, kube_version, strict=True)
        broken = yaml.safe_load(yaml.safe_dump(cronjob))
        broken["spec"]["jobTemplate"]["spec"]["concurrencyPolicy"] = "Forbid"  # belongs to the CronJob's spec
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, kube_version, strict=True)
