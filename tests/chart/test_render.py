"""The chart renders, lints clean, refuses what cannot work with a clear message, and documents its values."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python
import pytest
import yaml

from saga_dev.chart import CHART_DIR, chart, hook_of
from tests.support.chart import (
    ALL_VARIANTS,
    OTHER_RELEASE,
    OTHER_RELEASE_VALUES,
    VARIANTS,
    Rendered,
    render,
    rendered_variant,
)

INFO = 1  # helm lint severities: 1 info, 2 warning, 3 error


@pytest.mark.parametrize("variant", [*VARIANTS])
def test_lint_is_clean(variant: str) -> None:
    report = helm_python.lint(str(CHART_DIR), VARIANTS[variant], strict=True, with_subcharts=True)
    problems = [m for m in report["messages"] if m["severity"] > INFO]
    assert not report["errors"] and not problems, problems or report["errors"]


def test_lint_is_clean_for_another_release_namespace() -> None:
    report = helm_python.lint(str(CHART_DIR), OTHER_RELEASE_VALUES, strict=True, namespace=OTHER_RELEASE["namespace"])
    assert not [m for m in report["messages"] if m["severity"] > INFO]


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_renders_the_expected_objects(variant: str) -> None:
    rendered = rendered_variant(variant)
    values = chart().merge_values(VARIANTS.get(variant, OTHER_RELEASE_VALUES))
    kinds = {obj["kind"] for obj in rendered.objects}
    assert {"Deployment", "StatefulSet", "Service", "PodDisruptionBudget", "Job", "Pod"} <= kinds
    assert len(rendered.of_kind("StatefulSet")) == 3, "one PostgreSQL per service and RabbitMQ"
    migrations = [
        o
        for o in rendered.of_kind("Job")
        if o["metadata"]["labels"]["app.kubernetes.io/component"].endswith("-migrate")
    ]
    assert len(migrations) == 2 and not any(hook_of(o) for o in migrations), "plain Jobs of the release"
    assert [o["metadata"]["name"] for o in rendered.of_kind("Pod") if hook_of(o) == "test"]
    for component in ("jaeger", "prometheus", "grafana"):
        present = any(w.component == component for w in rendered.workloads())
        assert present == values[component]["enabled"], component
    assert bool(rendered.of_kind("NetworkPolicy")) == values["networkPolicy"]["enabled"]
    cronjobs = {c["metadata"]["labels"]["app.kubernetes.io/component"] for c in rendered.of_kind("CronJob")}
    enabled = {
        key for key, job in values["cronJobs"].items() if job.get("enabled", values["cronJobDefaults"]["enabled"])
    }
    assert cronjobs == enabled, "one CronJob per enabled sagactl command"
    names = [(obj["kind"], obj["metadata"]["name"]) for obj in rendered.objects]
    assert len(names) == len(set(names)), "two objects share a kind and a name"
    assert all(obj["metadata"].get("namespace") == _namespace(variant) for obj in rendered.objects)


def test_the_operations_run_as_cronjobs_by_default(default: Rendered) -> None:
    cronjobs = {c["metadata"]["name"]: c["spec"] for c in default.of_kind("CronJob")}
    assert set(cronjobs) == {"saga-reconcile", "saga-prune"}
    assert cronjobs["saga-reconcile"]["schedule"] == "*/10 * * * *"
    assert cronjobs["saga-prune"]["schedule"] == "30 3 * * *"
    assert all(spec["suspend"] is False and "timeZone" not in spec for spec in cronjobs.values())
    # Nothing else is scheduled: the deadline sweeper runs inside the order service; the Jobs are the migrations.
    assert {j["metadata"]["name"] for j in default.of_kind("Job")} == {
        "saga-order-migrate-1",
        "saga-customer-migrate-1",
    }


def test_a_value_set_that_disables_the_cronjobs_renders_none() -> None:
    assert rendered_variant("single-broker").of_kind("CronJob") == []
    assert render({"cronJobs": {"reconcile": {"enabled": False}, "prune": {"enabled": False}}}).of_kind("CronJob") == []
    # Each one alone, and a job turned back on over defaults that turn them off.
    only = render({"cronJobDefaults": {"enabled": False}, "cronJobs": {"prune": {"enabled": True}}})
    assert [c["metadata"]["name"] for c in only.of_kind("CronJob")] == ["saga-prune"]
    suspended = render({"cronJobs": {"reconcile": {"suspend": True}}})
    assert suspended.get("CronJob", "saga-reconcile")["spec"]["suspend"] is True
    berlin = rendered_variant("replicas").get("CronJob", "saga-prune")["spec"]
    assert berlin["timeZone"] == "Europe/Berlin" and berlin["jobTemplate"]["spec"]["backoffLimit"] == 0


def test_a_long_release_name_keeps_cronjob_names_short_enough() -> None:
    # 45 characters: every other object's name still fits in 63, "<name>-reconcile" would not fit in 52.
    rendered = render({"fullnameOverride": "a-release-name-of-forty-five-characters-in-al"})
    names = {c["metadata"]["name"] for c in rendered.of_kind("CronJob")}
    assert len(names) == 2 and max(len(name) for name in names) == 52, names


def _namespace(variant: str) -> str:
    return OTHER_RELEASE["namespace"] if variant == "other-release" else "saga"


def test_object_names_follow_the_release() -> None:
    rendered = rendered_variant("other-release")
    assert rendered.find("Deployment", "shop-saga-order-service")
    assert rendered.find("StatefulSet", "shop-saga-rabbitmq")
    assert not any("saga-saga" in name or name.startswith("saga-") for _, name in rendered.names)


def test_selectors_use_name_instance_and_component_only(default: Rendered) -> None:
    for workload in default.workloads():
        if workload.owner["kind"] in {"Deployment", "StatefulSet"}:
            selector = workload.owner["spec"]["selector"]["matchLabels"]
            assert set(selector) == {
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
            }, workload.name
    for obj in default.objects:
        labels, name = obj["metadata"].get("labels", {}), obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/part-of") == "saga" and labels.get("helm.sh/chart"), name


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rabbitmq": {"replicas": 2}}, "use an odd number"),
        ({"grafana": {"enabled": True}, "prometheus": {"enabled": False}}, "needs prometheus.enabled=true"),
        ({"tracing": {"otlpEndpoint": "http://elsewhere:4318"}}, "only with jaeger.enabled=false"),
        ({"serviceDefaults": {"terminationGracePeriodSeconds": 25}}, "must exceed preStopSleepSeconds"),
        ({"services": {"order": {"drainTimeoutSeconds": 60}}}, "services.order: terminationGracePeriodSeconds=45"),
        ({"serviceDefaults": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "is above maxReplicas"),
        ({"services": {"customer": {"settings": {"SAGA_HTTP_PORT": "9000"}}}}, "is set by the chart itself"),
        ({"services": {"order": {"settings": {"SAGA_EXCHANGE": "shop.events"}}}}, "must use the same exchange"),
        (
            {"serviceDefaults": {"settings": {"SAGA_QUEUE_TYPE": "stream"}}},
            "services.order.settings.SAGA_QUEUE_TYPE=stream: the queue types are classic, quorum",
        ),
        (
            {"serviceDefaults": {"settings": {"SAGA_INBOX_RETENTION_S": "86400"}}},
            "is read by sagactl, not by the service; set cronJobs.prune.inboxRetentionSeconds",
        ),
        (
            {"services": {"order": {"settings": {"SAGA_RECONCILE_GRACE_S": "30"}}}},
            "set cronJobs.reconcile.graceSeconds",
        ),
    ],
)
def test_impossible_combinations_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 3},
        {"services": {"order": {"replica": 3}}},
        {"services": {"payment": {}}},
        {"serviceDefaults": {"image": {"tag": "latest"}}},
        {"rabbitmq": {"image": {"tag": "latest"}}},
        {"services": {"order": {"settings": {"DATABASE_URL": "postgresql://x"}}}},
        {"serviceDefaults": {"logLevel": "LOUD"}},
        {"networkPolicy": {"enabled": "yes"}},
        {"services": {"customer": {"migration": {"afterMigrate": ["seed"]}}}},
        {"cronJobs": {"sweep": {"schedule": "* * * * *"}}},
        {"cronJobs": {"reconcile": {"schedule": "every 10 minutes"}}},
        {"cronJobs": {"reconcile": {"schedule": "TZ=UTC */10 * * * *"}}},
        {"cronJobs": {"prune": {"inboxRetentionSeconds": 3600}}},
        {"cronJobs": {"prune": {"graceSeconds": 60}}},
        {"cronJobDefaults": {"failedJobsHistoryLimit": 0}},
        {"cronJobDefaults": {"concurrencyPolicy": "Allow"}},
        {"cronJobDefaults": {"enabled": "no"}},
    ],
)
def test_the_schema_refuses_unknown_keys_and_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmError, match="schema"):
        render(values)


def test_a_false_override_beats_a_true_default() -> None:
    """The shared-defaults merge must let a service turn off what the defaults turn on."""
    rendered = render({"services": {"customer": {"autoscaling": {"enabled": False}, "replicas": 1}}})
    hpas = {obj["metadata"]["name"] for obj in rendered.of_kind("HorizontalPodAutoscaler")}
    assert hpas == {"saga-order-service"}
    assert rendered.get("Deployment", "saga-customer-service")["spec"]["replicas"] == 1
    assert "replicas" not in rendered.get("Deployment", "saga-order-service")["spec"]


def _leaf_paths(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict) and node and not _is_free_form(prefix):
        return set().union(*(_leaf_paths(value, f"{prefix}.{key}" if prefix else key) for key, value in node.items()))
    return {prefix}


def _is_free_form(path: str) -> bool:
    """Maps whose keys are the user's (resources, settings, ...): documented as a whole."""
    return path.rsplit(".", 1)[-1] in {"resources", "settings", "nodeSelector", "affinity", "apiServer.cidrs"}


def test_every_value_is_documented_where_it_is_declared() -> None:
    text = (CHART_DIR / "values.yaml").read_text()
    documented = set(re.findall(r"^\s*## @param (\S+) \S", text, flags=re.MULTILINE))
    declared = _leaf_paths(yaml.safe_load(text))
    assert declared - documented == set(), "values without a `## @param` line"
    assert documented - declared == set(), "`## @param` lines for values that do not exist"


def test_every_value_is_in_the_schema_with_a_description() -> None:
    schema = chart().schema
    assert schema is not None
    for path in _leaf_paths(yaml.safe_load((CHART_DIR / "values.yaml").read_text())):
        node = schema
        for part in path.split("."):
            assert node.get("additionalProperties") is False, f"{path}: the schema must refuse unknown keys"
            node = node["properties"][part]
        assert node.get("description"), f"{path} has no description in values.schema.json"


def test_no_secret_in_values_yaml() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    for path in _leaf_paths(values):
        value: Any = values
        for part in path.split("."):
            value = value[part]
        # Names of Secrets (existingSecret, imagePullSecrets) are fine; credentials are not.
        if re.search(r"password|passwd|token|cookie|credential", path, flags=re.IGNORECASE):
            pytest.fail(f"{path} looks like a credential in values.yaml")
        if isinstance(value, str):
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", value), f"{path} holds a URL with a password"


def test_notes_give_the_port_forward_commands(default: Rendered) -> None:
    notes = chart_notes()
    for command in (
        "port-forward svc/saga-order-service 8001:8001",
        "port-forward svc/saga-jaeger 16686:16686",
        "port-forward svc/saga-grafana 3000:3000",
        "helm test saga",
    ):
        assert command in notes


def chart_notes() -> str:
    release = helm_python.Config(storage_driver="memory").install(
        chart(), "saga", {}, namespace="saga", dry_run="client"
    )
    return release["notes"]


# `kubectl apply` (client-side, as k8s/saga.yaml is applied) keeps the whole object in the
# last-applied-configuration annotation, and a object's annotations may not exceed 256 KiB together.
APPLY_ANNOTATION_LIMIT = 256 * 1024
# Headroom for the annotations Kubernetes and the tools add; the dashboards ConfigMap is the largest object.
APPLY_HEADROOM = 0.95


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_every_object_fits_in_a_client_side_apply_annotation(variant: str) -> None:
    sizes = {
        f"{obj['kind']}/{obj['metadata']['name']}": len(json.dumps(obj, separators=(",", ":")))
        for obj in rendered_variant(variant).objects
    }
    largest = max(sizes, key=sizes.__getitem__)
    assert sizes[largest] < APPLY_ANNOTATION_LIMIT * APPLY_HEADROOM, (
        f"{largest} is {sizes[largest]} bytes: {sizes[largest] / APPLY_ANNOTATION_LIMIT:.0%} of kubectl apply's "
        "256 KiB annotation limit; split it (e.g. one ConfigMap per dashboard) or apply server-side"
    )


def test_the_schema_describes_each_value_as_values_yaml_does() -> None:
    """The schema's description (what editors and `helm lint` show) says what the `## @param` line says: it
    starts it, or is started by it up to its first parenthesis. (Copies once called four images "Grafana".)"""
    text = (CHART_DIR / "values.yaml").read_text()
    schema = chart().schema
    assert schema is not None
    differing = []
    for path, documented in re.findall(r"^\s*## @param (\S+) (.*)$", text, flags=re.MULTILINE):
        node = schema
        for part in path.split("."):
            node = node["properties"][part]
        described = node.get("description", "")
        if described.rstrip(".") not in documented and documented.split(" (")[0].rstrip(".") not in described:
            differing.append(f"{path}: schema {described!r}, values.yaml {documented!r}")
    assert differing == []
