"""The chart on a real Kubernetes, as a user runs it (docs/deploy-kind.md), step by step in file order on one
release: the first `helm install --wait`, every pod Ready, the broker's cluster formed, `helm test`, the
documented requests through `kubectl port-forward` with a token from `make token`, the saga as one trace in
Jaeger, a read-only image under each service, both CronJobs' Jobs exiting 0, sagas under load through
`helm upgrade` and deleted pods, NetworkPolicies enforced, `helm uninstall`. Then a release with broken values,
which must fail naming its pods and why.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from saga_dev.load import OrderLoad
from saga_dev.load_background import BackgroundLoad
from saga_tools import invariants
from tests.support.cluster import FIGURES, NEXT_TAG, ROOT, TAG, ClusterFailure, ClusterUnderTest, say
from tests.support.waiting import TimedOut, eventually

pytestmark = pytest.mark.timeout(1200)

RELEASE = "saga"
NAMESPACE = "saga"  # what the docs and the Makefile use
README_ORDER = {"customer_id": 1, "product_id": 1, "status": "pending", "quantity": 1, "total_price": 50.0}
TERMINAL = {"fulfilled", "rejected", "cancelled"}


def make(cluster: ClusterUnderTest, *args: str) -> str:
    """A make target as a user types it, against this cluster."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-s", *args, f"K8S_NAMESPACE={NAMESPACE}", f"HELM_RELEASE={RELEASE}"],
        cwd=ROOT,
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterFailure(f"make {' '.join(args)} failed: {result.stderr or result.stdout}")
    return result.stdout.strip()


@pytest.fixture(scope="module")
def release(cluster: ClusterUnderTest) -> Iterator[ClusterUnderTest]:
    say(f"helm install {RELEASE} into an empty namespace {NAMESPACE}, --wait, first try")
    FIGURES["install to every pod Ready, helm install --wait (s)"] = cluster.install(
        RELEASE, NAMESPACE, "--set", f"serviceDefaults.image.tag={TAG}"
    )
    yield cluster
    if cluster.helm("status", RELEASE, "--namespace", NAMESPACE, check=False).returncode == 0:
        cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--ignore-not-found", timeout=300, check=False)


def pods(cluster: ClusterUnderTest, selector: str = "") -> list[dict]:
    args = ["get", "pods", "--namespace", NAMESPACE, *(["--selector", selector] if selector else [])]
    return cluster.kubectl_json(*args)["items"]


def component_pods(cluster: ClusterUnderTest, component: str) -> list[dict]:
    return pods(cluster, f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}")


def is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def test_the_first_install_makes_every_pod_ready_with_its_volumes(release: ClusterUnderTest) -> None:
    running = [p for p in pods(release) if p["status"].get("phase") != "Succeeded"]
    assert running and all(is_ready(p) for p in running), release.diagnose(NAMESPACE)
    for component, count in (("order-service", 2), ("customer-service", 2), ("rabbitmq", 3), ("jaeger", 1)):
        assert len([p for p in component_pods(release, component) if is_ready(p)]) == count, component
    claims = release.kubectl_json("get", "pvc", "--namespace", NAMESPACE)["items"]
    bound = {c["metadata"]["name"] for c in claims if c["status"].get("phase") == "Bound"}
    assert {"data-saga-order-db-0", "data-saga-customer-db-0"} <= bound
    assert {f"data-saga-rabbitmq-{i}" for i in range(3)} <= bound
    jobs = release.kubectl_json("get", "jobs", "--namespace", NAMESPACE)["items"]
    migrations = [j for j in jobs if j["metadata"]["name"].endswith("-migrate-1")]
    assert len(migrations) == 2 and all(j["status"].get("succeeded") == 1 for j in migrations)


def rabbitmqctl(cluster: ClusterUnderTest, *args: str) -> str:
    return cluster.kubectl(
        "exec",
        "--namespace",
        NAMESPACE,
        "saga-rabbitmq-0",
        "--container",
        "rabbitmq",
        "--",
        "rabbitmqctl",
        "--quiet",
        *args,
        timeout=60,
    )


def test_the_broker_formed_one_cluster_with_every_quorum_queue_on_three_members(release: ClusterUnderTest) -> None:
    status = rabbitmqctl(release, "cluster_status", "--formatter", "json")
    running = json.loads(status)["running_nodes"]
    assert len(running) == 3, running

    def members() -> dict[str, int]:
        rows = json.loads(rabbitmqctl(release, "list_queues", "name", "type", "members", "--formatter", "json"))
        return {row["name"]: len(row["members"]) for row in rows if row["type"] == "quorum"}

    seen = release.wait_for(
        "every quorum queue on three members",
        members,
        until=lambda queues: len(queues) >= 8 and all(n == 3 for n in queues.values()),
        timeout=180,
    )
    say(f"broker: nodes {running}; quorum queues {seen}")


def test_helm_test_passes(release: ClusterUnderTest) -> None:
    """`make helm-test`, as docs/deploy-kind.md says (helm test --logs)."""
    try:
        logs = make(release, "helm-test")
    except ClusterFailure as failure:
        raise ClusterFailure(f"{failure}\n{release.diagnose(NAMESPACE)}") from None
    assert "fulfilled" in logs, logs


def test_the_documented_requests_end_as_documented(release: ClusterUnderTest) -> None:
    """docs/deploy-kind.md: port-forward the order API, a token from `make token`, the README's request."""
    alice, bob = make(release, "token", "CUSTOMER=1"), make(release, "token", "CUSTOMER=2")
    assert alice.count(".") == 2, alice
    with release.port_forward(NAMESPACE, "svc/saga-order-service", 8001) as port:
        api = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{api}/orders/", json=README_ORDER, timeout=10).status_code == 401
        headers = {"Authorization": f"Bearer {alice}"}
        created = httpx.post(f"{api}/orders/", json=README_ORDER, headers=headers, timeout=10)
        assert created.status_code == 201, created.text
        order = httpx.get(f"{api}/orders/{created.json()['id']}?wait=20", headers=headers, timeout=30).json()
        assert order["status"] == "fulfilled", order
        FIXTURE_TRACES.append(created.json()["trace_id"])

        poor = {**README_ORDER, "customer_id": 2, "total_price": 50.0}
        refused = httpx.post(f"{api}/orders/", json=poor, headers={"Authorization": f"Bearer {bob}"}, timeout=10)
        rejected = httpx.get(
            f"{api}/orders/{refused.json()['id']}?wait=20", headers={"Authorization": f"Bearer {bob}"}, timeout=30
        ).json()
        assert (rejected["status"], rejected["rejection_reason"]) == ("rejected", "insufficient_balance"), rejected

        cancel = httpx.post(f"{api}/orders/{order['id']}/cancel", headers=headers, timeout=10)
        assert cancel.status_code == 202, cancel.text
        cancelled = release.wait_for(
            "the cancelled order compensated",
            lambda: httpx.get(f"{api}/orders/{order['id']}", headers=headers, timeout=10).json(),
            until=lambda o: o["status"] == "cancelled",
            timeout=60,
        )
        assert cancelled["status"] == "cancelled"


FIXTURE_TRACES: list[str] = []


def test_the_saga_is_one_trace_in_the_clusters_jaeger(release: ClusterUnderTest) -> None:
    assert FIXTURE_TRACES, "the documented requests ran first"
    trace_id = FIXTURE_TRACES[0]
    with release.port_forward(NAMESPACE, "svc/saga-jaeger", 16686) as port:

        def services() -> set[str]:
            response = httpx.get(f"http://127.0.0.1:{port}/api/traces/{trace_id}", timeout=10)
            if response.status_code != 200:
                return set()
            (trace,) = response.json()["data"]
            return {process["serviceName"] for process in trace["processes"].values()}

        seen = release.wait_for(
            f"trace {trace_id} in Jaeger with spans of both services",
            services,
            until=lambda found: {"order-service", "customer-service"} <= found,
            timeout=90,
        )
    say(f"trace {trace_id}: spans of {sorted(seen)}")


WRITES = """
import tempfile
try:
    open("/opt/saga/written-by-the-test", "w")
except OSError as exc:
    print("image:", exc.strerror)
else:
    print("image: writable")
with tempfile.TemporaryFile(dir="/tmp"):
    print("tmp: writable")
"""


def test_nothing_but_the_pods_emptydir_is_writable(release: ClusterUnderTest) -> None:
    for component in ("order-service", "customer-service"):
        seen = release.kubectl(
            "exec", "--namespace", NAMESPACE, f"deploy/{RELEASE}-{component}", "--container", component,
            "--", "python", "-c", WRITES,
        )  # fmt: skip
        assert seen.split("\n")[:2] == ["image: Read-only file system", "tmp: writable"], (component, seen)


def test_both_cronjobs_run_now_exit_0_against_the_live_release(release: ClusterUnderTest) -> None:
    """Each CronJob's Job, created now from its template as `kubectl create job --from` does: 0 means nothing
    needs a human (3 would be) and no error (1)."""
    cronjobs = release.kubectl_json("get", "cronjobs", "--namespace", NAMESPACE)["items"]
    assert sorted(c["metadata"]["name"] for c in cronjobs) == [f"{RELEASE}-prune", f"{RELEASE}-reconcile"]
    for cronjob in cronjobs:
        name = cronjob["metadata"]["name"]
        job = f"{name}-now-{uuid.uuid4().hex[:6]}"
        release.kubectl("create", "job", job, f"--from=cronjob/{name}", "--namespace", NAMESPACE)

        def status(job: str = job) -> dict:
            return release.kubectl_json("get", "job", job, "--namespace", NAMESPACE).get("status", {})

        ended = release.wait_for(
            f"job {job} ended", status, until=lambda s: s.get("succeeded") or s.get("failed"), timeout=180
        )
        logs = release.kubectl("logs", f"job/{job}", "--namespace", NAMESPACE, "--all-containers", check=False)
        assert ended.get("succeeded") == 1, f"{job}: {ended}\n{logs[-3000:]}"
        say(f"cronjob {name}: a Job from it exited 0 ({logs.strip().splitlines()[-1:] or 'no output'})")


def secret_value(cluster: ClusterUnderTest, name: str, key: str) -> str:
    data = cluster.kubectl_json("get", "secret", name, "--namespace", NAMESPACE)["data"]
    return base64.b64decode(data[key]).decode()


def wait_rolled_out(cluster: ClusterUnderTest, kind_name: str) -> None:
    cluster.kubectl("rollout", "status", kind_name, "--namespace", NAMESPACE, "--timeout=300s", timeout=320)


def test_sagas_under_load_survive_an_upgrade_and_deleted_pods_none_lost_none_twice(release: ClusterUnderTest) -> None:
    token = make(release, "token", "CUSTOMER=1")
    with release.port_forward(NAMESPACE, "svc/saga-order-service", 8001, resilient=True) as port:
        load = BackgroundLoad(OrderLoad([f"http://127.0.0.1:{port}"], [1], token=token, request_timeout_s=15), 8)
        load.start()
        started = time.monotonic()
        try:
            time.sleep(5)  # load pacing: sagas in flight before the upgrade starts
            say(f"helm upgrade to image tag {NEXT_TAG} under load")
            FIGURES["helm upgrade --wait under load (s)"] = release.install(
                RELEASE, NAMESPACE, "--set", f"serviceDefaults.image.tag={NEXT_TAG}"
            )
            # --wait returns once the new pods are ready; the old ones may still be draining (terminating).
            serving = [p for p in component_pods(release, "order-service") if "deletionTimestamp" not in p["metadata"]]
            images = {c["image"] for p in serving for c in p["spec"]["containers"]}
            assert images and all(image.endswith(f":{NEXT_TAG}") for image in images), images
            for pod, owner in (
                ("saga-rabbitmq-1", "statefulset/saga-rabbitmq"),
                ("saga-order-db-0", "statefulset/saga-order-db"),
            ):
                say(f"deleting pod {pod} under load")
                release.kubectl("delete", "pod", pod, "--namespace", NAMESPACE, "--wait=true", timeout=180)
                wait_rolled_out(release, owner)
                release.wait_for(
                    f"{pod} Ready again",
                    lambda pod=pod: is_ready(release.kubectl_json("get", "pod", pod, "--namespace", NAMESPACE)),
                    until=bool,
                    timeout=240,
                )
            time.sleep(5)  # load pacing: sagas placed after the last deletion too
        finally:
            stats = load.stop()
        FIGURES["sagas placed under the upgrade and deletions"] = len(stats.accepted)
        FIGURES["load duration (s)"] = time.monotonic() - started
    assert len(stats.accepted) >= 50, f"the load placed too few orders: {stats.errors}"
    counts = asyncio.run(count_outcomes(release, set(stats.accepted)))
    say(f"load: {len(stats.accepted)} accepted, refused or failed: {dict(stats.errors)}; outcome: {counts}")
    assert counts["lost"] == [] and counts["not_terminal"] == [] and counts["violations"] == [], counts


async def count_outcomes(cluster: ClusterUnderTest, accepted: set[int]) -> dict[str, list]:
    """From both databases (through port-forwards, as the service roles can't be reached otherwise)."""
    with (
        cluster.port_forward(NAMESPACE, "svc/saga-order-db", 5432) as orders_port,
        cluster.port_forward(NAMESPACE, "svc/saga-customer-db", 5432) as customers_port,
    ):
        orders_password = secret_value(cluster, "saga-order-service", "database-password")
        customers_password = secret_value(cluster, "saga-customer-service", "database-password")
        orders_url = f"postgresql://order:{orders_password}@127.0.0.1:{orders_port}/orders"
        customers_url = f"postgresql://customer:{customers_password}@127.0.0.1:{customers_port}/customers"

        async def read() -> tuple[dict[int, str], invariants.Snapshot]:
            orders_db = await asyncpg.connect(orders_url)
            customers_db = await asyncpg.connect(customers_url)
            try:
                statuses = {row["id"]: row["status"] for row in await orders_db.fetch("SELECT id, status FROM orders")}
                return statuses, await invariants.load(orders_db, customers_db)
            finally:
                await orders_db.close()
                await customers_db.close()

        def in_progress(seen: tuple[dict[int, str], invariants.Snapshot]) -> list[int]:
            return sorted(i for i in accepted & seen[0].keys() if seen[0][i] not in TERMINAL)

        try:
            seen = await eventually(read, until=lambda seen: not in_progress(seen), timeout=120, interval=2)
        except TimedOut:
            seen = await read()  # what is still in progress is reported below
        statuses, snapshot = seen
        not_terminal = in_progress(seen)
    return {
        "lost": sorted(accepted - statuses.keys()),
        "not_terminal": not_terminal,
        # a reservation held twice, credit held for an order that ended otherwise, a fulfilled order without it
        "violations": [str(v) for v in invariants.violations(snapshot.orders, snapshot.reservations)],
    }


def test_network_policies_are_enforced(release: ClusterUnderTest) -> None:
    """The saga worked with them (above); a pod they do not allow connects to nothing of the release."""
    outsider = f"saga-outsider-{uuid.uuid4().hex[:6]}"
    release.kubectl("create", "namespace", outsider)
    try:
        inside = probe_pod(release, NAMESPACE, "probe-inside")
        outside = probe_pod(release, outsider, "probe-outside")
        targets = {
            "order API": ("saga-order-service", 8001),
            "order database": ("saga-order-db", 5432),
            "customer database": ("saga-customer-db", 5432),
            "broker": ("saga-rabbitmq", 5672),
        }
        for what, (service, port) in targets.items():
            host = f"{service}.{NAMESPACE}.svc.cluster.local"
            assert not connects(release, outside, host, port), f"a pod of another namespace reached the {what}"
        # A pod of the namespace reaches the API (as the policy allows), which shows the probe itself works ...
        assert connects(release, inside, f"saga-order-service.{NAMESPACE}.svc.cluster.local", 8001)
        # ... and not the databases nor the broker.
        for what in ("order database", "customer database", "broker"):
            service, port = targets[what]
            assert not connects(release, inside, f"{service}.{NAMESPACE}.svc.cluster.local", port), what
    finally:
        release.kubectl("delete", "pod", "probe-inside", "--namespace", NAMESPACE, "--wait=false", check=False)
        release.kubectl("delete", "namespace", outsider, "--wait=false", check=False)


def probe_pod(cluster: ClusterUnderTest, namespace: str, name: str) -> tuple[str, str]:
    from saga_dev.node.images import HELPER

    image = HELPER if cluster.kubeconfig else "busybox:1.36"
    cluster.kubectl(
        "run",
        name,
        "--namespace",
        namespace,
        f"--image={image}",
        "--image-pull-policy=IfNotPresent",
        "--restart=Never",
        "--command",
        "--",
        "sleep",
        "600",
    )
    cluster.kubectl(
        "wait", f"pod/{name}", "--namespace", namespace, "--for=condition=Ready", "--timeout=120s", timeout=130
    )
    return namespace, name


def connects(cluster: ClusterUnderTest, pod: tuple[str, str], host: str, port: int) -> bool:
    """A TCP connection from the pod: busybox's nc exits 0 once connected (stdin is empty), 1 when refused,
    dropped (3 s) or the name does not resolve."""
    namespace, name = pod
    result = subprocess.run(
        [
            cluster.kubectl_bin,
            *cluster.base_args(),
            "exec",
            "--namespace",
            namespace,
            name,
            "--",
            "sh",
            "-c",
            f"nc -w 3 {host} {port} </dev/null",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


def test_uninstall_and_namespace_deletion_leave_nothing_of_ours(release: ClusterUnderTest) -> None:
    make(release, "undeploy")
    left = release.kubectl_json("get", "all,configmaps,networkpolicies,pdb,jobs,cronjobs", "--namespace", NAMESPACE)[
        "items"
    ]
    ours = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in left
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE
    ]
    assert ours == [], f"left by helm uninstall: {ours}"
    kept = release.kubectl_json("get", "secrets,pvc", "--namespace", NAMESPACE)["items"]
    kept_names = {f"{o['kind']}/{o['metadata']['name']}" for o in kept}
    say(f"kept by helm uninstall, as documented: {sorted(kept_names)}")
    assert {"Secret/saga-order-service", "PersistentVolumeClaim/data-saga-order-db-0"} <= kept_names
    release.kubectl("delete", "namespace", NAMESPACE, "--wait=true", timeout=300)
    release.wait_for(
        "every volume of the namespace released and deleted",
        lambda: [
            v["metadata"]["name"]
            for v in release.kubectl_json("get", "pv")["items"]
            if (v["spec"].get("claimRef") or {}).get("namespace") == NAMESPACE
        ],
        until=lambda names: names == [],
        timeout=120,
    )


BROKEN = [
    "--set",
    "rabbitmq.replicas=1",
    "--set",
    "prometheus.enabled=false",
    "--set",
    "cronJobDefaults.enabled=false",
    # a missing Secret: the order service's pods cannot start (nor the broker, which holds its user's password)
    "--set",
    "services.order.existingSecret=no-such-secret",
    # an image tag that does not exist, and no registry to pull it from: Jaeger never starts
    "--set",
    "jaeger.image.tag=no-such-tag",
]


def line_of(message: str, pod_prefix: str) -> str:
    return next((line for line in message.splitlines() if line.startswith(pod_prefix)), f"no line for {pod_prefix}")


def test_broken_values_fail_within_the_timeout_naming_each_pod_and_why(cluster: ClusterUnderTest) -> None:
    namespace = f"saga-broken-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    try:
        with pytest.raises(ClusterFailure) as failure:
            cluster.install("broken", namespace, "--set", f"serviceDefaults.image.tag={TAG}", *BROKEN, timeout="150s")
        message = str(failure.value)
        say(f"the broken release failed after {time.monotonic() - started:.0f} s:\n{message}")
        assert "no-such-secret" in line_of(message, "pod broken-saga-order-service-"), message
        # a probe that never succeeds: the customer service runs, and /readyz says 503 without its broker
        customer = line_of(message, "pod broken-saga-customer-service-")
        assert "not ready" in customer and "Readiness probe failed" in customer, message
        jaeger = line_of(message, "pod broken-saga-jaeger-")
        assert "no-such-tag" in jaeger or "ImagePull" in jaeger, message
    finally:
        cluster.helm("uninstall", "broken", "--namespace", namespace, "--wait", check=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=true", timeout=300, check=False)
