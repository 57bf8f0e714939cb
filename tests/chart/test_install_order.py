"""The order Helm runs a first `helm install --wait` (and an upgrade) in, held against what each object needs.

Helm's documented hook lifecycle (helm.sh/docs/topics/charts_hooks): the pre-install hooks run first, one
weight after the other, each waited for (a Job until it completes); then every object of the release is
created at once; with `--wait`, Helm waits until the release's Deployments, StatefulSets, Services and PVCs
are ready; only then do the post-install hooks run. So an object of the release may need another one of the
release (they converge together), or a pre-install hook of a lower weight; it must never need a post-install
hook (the wait would end in its timeout first), and a pre-install hook must never need an object of the
release (that object does not exist yet). The same holds for pre-/post-upgrade hooks.

What the objects need, as the code makes it: a service's pod is ready only after its database has the schema
and the service role the migration creates (/readyz); the migration needs its database and the Secrets its
pod reads.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from saga_dev.chart import hook_of
from tests.support.chart import Rendered, Workload, rendered_variant

# Within its phase a hook runs by weight; the release's objects all come at once (one rank).
PRE, RELEASE, POST = 0, 1, 2


def rank(obj: dict[str, Any], event: str) -> tuple[int, int] | None:
    """(phase, weight) of an object in `helm install` (event "install") or `helm upgrade` ("upgrade");
    None when the event does not create it (a test hook, or a hook of other events)."""
    hook = hook_of(obj)
    if hook is None:
        return RELEASE, 0
    events = {part.strip() for part in hook.split(",")}
    weight = int((obj["metadata"].get("annotations") or {}).get("helm.sh/hook-weight", "0"))
    if f"pre-{event}" in events:
        return PRE, weight
    if f"post-{event}" in events:
        return POST, weight
    return None


def secrets_read(workload: Workload) -> set[str]:
    names = set()
    for container in workload.containers():
        for env in container.get("env", []):
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
    for volume in workload.spec.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
    return names


def needs(rendered: Rendered) -> list[tuple[dict[str, Any], dict[str, Any] | None, str]]:
    """(object, what it needs before it can be done, why); None for a Secret the user made beforehand
    (an existingSecret: there before any of the release)."""
    found = []
    by_component = {w.component: w for w in rendered.workloads()}
    for service in rendered.service_workloads():
        key = service.component.removesuffix("-service")
        migration = by_component[f"{key}-migrate"]
        found.append((service.owner, migration.owner, "its database role and schema come from the migration"))
        found.append((migration.owner, by_component[f"{key}-db"].owner, "it migrates that database"))
        for workload in (service, migration):
            for secret in sorted(secrets_read(workload)):
                found.append((workload.owner, rendered.find("Secret", secret), "its pod reads that Secret"))
    return found


def name(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def order_problems(rendered: Rendered, event: str) -> list[str]:
    problems = []
    for obj, needed, why in needs(rendered):
        if needed is None:
            continue
        have, want = rank(obj, event), rank(needed, event)
        if event == "upgrade" and want == (RELEASE, 0):
            continue  # the previous revision's objects exist already
        if have is None or want is None:
            problems.append(f"{name(needed) if want is None else name(obj)} is not created by helm {event}")
            continue
        if event == "install" and have[0] == PRE and hook_of(needed) is None:
            problems.append(f"pre-install hook {name(obj)} needs {name(needed)}, created after the hooks")
        elif want[0] > have[0]:
            problems.append(f"{name(obj)} ({have}) waits for {name(needed)} ({want}), which runs after it: {why}")
        elif want[0] == have[0] and have[0] != RELEASE and want[1] >= have[1]:
            problems.append(f"hook {name(obj)} needs hook {name(needed)} of the same or a later weight: {why}")
    return problems


@pytest.mark.parametrize("event", ["install", "upgrade"])
@pytest.mark.parametrize("variant", ["defaults", "existing-secrets", "replicas"])
def test_helm_install_and_upgrade_create_what_each_object_needs_before_it_must_be_ready(event, variant):
    rendered = rendered_variant(variant)
    assert len(needs(rendered)) >= 6, "the model sees both services, their migrations and databases"
    assert order_problems(rendered, event) == []


def test_the_model_refuses_the_post_install_migration_that_deadlocked_install_wait():
    """The chart before this check: the migration Job as a post-install,pre-upgrade hook."""
    rendered = copy.deepcopy(rendered_variant("defaults"))
    for job in rendered.of_kind("Job"):
        job["metadata"].setdefault("annotations", {})["helm.sh/hook"] = "post-install,pre-upgrade"
    problems = order_problems(rendered, "install")
    assert any("Deployment/saga-order-service" in p and "runs after it" in p for p in problems), problems
    assert order_problems(rendered, "upgrade") == [], "a second install (an upgrade) did work"


def test_the_model_refuses_a_pre_install_migration_before_its_database_exists():
    rendered = copy.deepcopy(rendered_variant("defaults"))
    for job in rendered.of_kind("Job"):
        job["metadata"].setdefault("annotations", {})["helm.sh/hook"] = "pre-install"
    problems = order_problems(rendered, "install")
    assert any("pre-install hook Job/saga-order-migrate-1 needs StatefulSet/saga-order-db" in p for p in problems)
