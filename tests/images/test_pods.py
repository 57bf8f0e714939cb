"""What the cluster would run, run here: the images as built, and every pod of ours from the rendered chart.

In file order, as a cluster would go: the migration hook Jobs, then the Deployments (probes within their
declared budgets), the `helm test` pod, sagas through the order pod, both CronJobs' commands, and last a
rolling stop with sagas in flight (exit 0 inside the grace period; nothing left pending after a restart).
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from saga_common.contract.statuses import TERMINAL_STATUSES
from tests.images.stack import IMAGE_TAG, BuiltImages, ChartOnDocker
from tests.support.otlp import OtlpReceiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(900)


def shell(images: BuiltImages, image: str, script: str) -> str:
    return images.engine.docker(
        "run", "--rm", "--network", "host", "--entrypoint", "sh", f"{image}:{IMAGE_TAG}", "-c", script
    )


def test_the_order_image_holds_the_service_and_sagactl_and_nothing_of_the_development_harness(
    images: BuiltImages,
) -> None:
    listing = shell(images, "saga/order-service", "ls /opt/saga/bin; python -c 'import saga_tools, order_service'")
    commands = set(listing.split())
    assert {"order-service", "sagactl"} <= commands
    assert not {"saga-dev", "saga-bench", "pip", "pip3", "customer-service"} & commands, sorted(commands)
    missing = shell(
        images,
        "saga/order-service",
        'for m in saga_dev pip aiohttp pytest; do python -c "import $m" 2>/dev/null || echo absent:$m; done',
    )
    assert missing.split() == ["absent:saga_dev", "absent:pip", "absent:aiohttp", "absent:pytest"], missing


def test_the_customer_image_holds_the_customer_service_only(images: BuiltImages) -> None:
    commands = set(shell(images, "saga/customer-service", "ls /opt/saga/bin").split())
    assert "customer-service" in commands
    assert not {"order-service", "sagactl", "saga-dev", "saga-bench", "pip"} & commands, sorted(commands)


def test_the_images_run_as_the_non_root_user_the_chart_expects(images: BuiltImages, chart_stack: ChartOnDocker) -> None:
    for workload in chart_stack.ours("Deployment"):
        image = workload.spec["containers"][0]["image"]
        user = images.engine.docker("image", "inspect", "--format", "{{.Config.User}}", image).strip()
        uid = workload.spec["securityContext"]["runAsUser"]
        assert user.split(":")[0] == str(uid), f"{image}: USER {user}, the pod runs as {uid}"


def test_the_migration_jobs_run_before_the_services_and_exit_0(chart_stack: ChartOnDocker) -> None:
    jobs = chart_stack.migration_jobs()
    assert {job.component for job in jobs} == {"order-migrate", "customer-migrate"}
    chart_stack.run_migrations()


def test_the_services_become_ready_within_their_probe_budgets(chart_stack: ChartOnDocker) -> None:
    chart_stack.start_services()
    assert set(chart_stack.pods) == {"order-service", "customer-service"}


def test_nothing_but_the_pods_emptydir_is_writable(chart_stack: ChartOnDocker) -> None:
    for component, pod in chart_stack.pods.items():
        outside = pod.exec(["python", "-c", "open('/opt/saga/x', 'w')"], timeout=30)
        assert outside.returncode != 0 and "Read-only file system" in outside.stderr, (component, outside.stderr)


def test_the_helm_test_pod_passes_against_the_running_pods(chart_stack: ChartOnDocker) -> None:
    (workload,) = [w for w in chart_stack.ours("Pod") if w.owner["metadata"]["annotations"]["helm.sh/hook"] == "test"]
    seconds = chart_stack.kubelet.run_job(workload, timeout=float(workload.spec["activeDeadlineSeconds"]))
    chart_stack.say(f"pod {workload.name}: exit 0 in {seconds:.1f} s")


async def _order(http: httpx.AsyncClient, order_url: str, customer_id: int, price: str) -> int:
    created = await http.post(
        f"{order_url}/orders/",
        json={"customer_id": customer_id, "product_id": 1, "status": "pending", "quantity": 1, "total_price": price},
    )
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


async def _outcome(http: httpx.AsyncClient, order_url: str, order_id: int) -> dict:
    response = await http.get(f"{order_url}/orders/{order_id}", params={"wait": 20})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_sagas_through_the_order_pod_are_fulfilled_or_rejected_and_traced(
    chart_stack: ChartOnDocker, otlp_receiver: OtlpReceiver
) -> None:
    order_url = f"http://127.0.0.1:{chart_stack.port_of('order-service')}"

    headers = chart_stack.auth_headers("orders:write", "orders:read", "customers:all")

    async def scenario() -> tuple[dict, dict]:
        async with httpx.AsyncClient(timeout=30, headers=headers) as http:
            # The demo customers the customer-migrate Job seeded: 1 Alice (rich), 2 Bob (10.00).
            fulfilled = await _outcome(http, order_url, await _order(http, order_url, 1, "50.00"))
            rejected = await _outcome(http, order_url, await _order(http, order_url, 2, "99.00"))
            return fulfilled, rejected

    fulfilled, rejected = asyncio.run(scenario())
    assert fulfilled["status"] == "fulfilled", fulfilled
    assert rejected["status"] == "rejected" and rejected["rejection_reason"] == "insufficient_balance", rejected
    trace_id = fulfilled["trace_id"]
    otlp_receiver.wait_for(
        lambda: {"order-service", "customer-service"} <= {s.service for s in otlp_receiver.trace(trace_id)}, 20
    )


def test_both_cronjobs_commands_exit_as_documented_against_the_live_stack(chart_stack: ChartOnDocker) -> None:
    cronjobs = {w.owner["metadata"]["name"].rsplit("-", 1)[-1]: w for w in chart_stack.ours("CronJob")}
    assert set(cronjobs) == {"reconcile", "prune"}
    for _, workload in sorted(cronjobs.items()):
        (container,) = workload.spec["containers"]
        code, logs = chart_stack.kubelet.run_to_completion(workload, container, timeout=120)
        chart_stack.say(f"pod {workload.name}: {' '.join(container['command'] + container['args'])}: exit code {code}")
        # 0: nothing that needs a human (3 would be), no error (1).
        assert code == 0, logs[-3000:]


class OrderPlacer(threading.Thread):
    """Places orders on the order pod until told to stop (at most `limit`); keeps the ids it got a 201 for."""

    def __init__(self, order_url: str, headers: dict[str, str], limit: int = 800) -> None:
        super().__init__(daemon=True)
        self.order_url, self.headers, self.limit = order_url, headers, limit
        self.accepted: list[int] = []
        self.refused = 0
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10, headers=self.headers) as http:
            while not self.done.is_set() and len(self.accepted) + self.refused < self.limit:
                body = {"customer_id": 3, "product_id": 1, "status": "pending", "quantity": 1, "total_price": "1.00"}
                try:
                    response = http.post(f"{self.order_url}/orders/", json=body)
                except httpx.HTTPError:
                    self.refused += 1  # the pod is going away: a client retries elsewhere
                else:
                    if response.status_code == 201:
                        self.accepted.append(int(response.json()["id"]))
                    else:
                        self.refused += 1
                time.sleep(0.02)


def test_a_rolling_stop_with_sagas_in_flight_drains_and_loses_nothing(chart_stack: ChartOnDocker) -> None:
    order_url = f"http://127.0.0.1:{chart_stack.port_of('order-service')}"
    headers = chart_stack.auth_headers("orders:write", "orders:read", "customers:all")
    placer = OrderPlacer(order_url, headers)
    placer.start()
    try:
        wait_until(lambda: len(placer.accepted) >= 10, timeout=30, interval=0.2, what="orders accepted before the stop")
        # The customer service first, then the order service, each with its preStop, SIGTERM and grace period,
        # while orders keep arriving and the sagas already accepted are crossing the broker.
        for component in ("customer-service", "order-service"):
            grace = chart_stack.pods[component].grace_s
            code, seconds = chart_stack.stop_service(component)
            assert code == 0, f"{component} exited {code}"
            assert seconds < grace, f"{component} took {seconds:.1f} s, grace {grace:.0f} s"
    finally:
        placer.done.set()
        placer.join(30)
    chart_stack.say(f"  {len(placer.accepted)} orders accepted while the pods stopped ({placer.refused} refused)")
    chart_stack.start_services()

    async def outcomes() -> list[dict]:
        async with httpx.AsyncClient(timeout=30, headers=headers) as http:
            return await asyncio.gather(*(_outcome(http, order_url, order_id) for order_id in placer.accepted))

    def all_terminal() -> list[dict] | None:
        found = asyncio.run(outcomes())
        return found if all(o["status"] in TERMINAL_STATUSES for o in found) else None

    results = wait_until(all_terminal, timeout=60, interval=0.2, what="every accepted saga reaches a terminal state")
    statuses = {o["status"] for o in results}
    assert statuses <= {"fulfilled", "rejected"}, statuses
