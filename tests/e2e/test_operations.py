"""Operating sagas with real processes: wait-for-outcome, the saga timeline, dead-letter replay after a
fix, reconciliation of a broken state, retention; through the API and the real `sagactl` command."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import asyncpg
import httpx
import pytest

from saga_dev.localstack import SagaEnvironment, ServiceProcess
from tests.support.broker import broker_tool
from tests.support.customer_db import FAIL_RESERVATIONS, FIX_RESERVATIONS
from tests.support.processes import Saga, sql
from tests.support.saga_client import TERMINAL, money_of
from tests.support.sagactl import sagactl, sagactl_json
from tests.support.waiting import eventually

# --- GET /orders/{id}?wait= ----------------------------------------------------------------------------


async def test_wait_returns_within_milliseconds_of_the_outcome(saga_env):
    async with Saga(saga_env) as (saga, client):
        customer = await client.create_customer("100.00")
        saga.customer.stop()  # hold the answer back
        order = await client.create_order(customer, "10.00")

        async def waiting():
            response = await client.http.get(f"{client.order_url}/orders/{order['id']}", params={"wait": 20})
            return response, time.time()

        waiter = asyncio.create_task(waiting())
        await asyncio.sleep(1.0)  # a hold, not a wait: for a second nothing may answer
        assert not waiter.done(), "a pending order must not answer before its outcome"
        await asyncio.to_thread(saga.customer.start)
        response, answered_at = await waiter
        body = response.json()
        assert response.status_code == 200 and body["status"] == "fulfilled"
        (recorded,) = await sql(
            saga_env.databases.order_url, "SELECT completed_at FROM orders WHERE id = $1", order["id"]
        )
        lag = answered_at - recorded["completed_at"].timestamp()
        assert 0 <= lag < 0.1, f"answered {lag * 1000:.1f} ms after the outcome was recorded"


async def test_wait_ends_at_its_bound_with_the_current_state(saga_env):
    async with Saga(saga_env) as (saga, client):
        customer = await client.create_customer("100.00")
        saga.customer.stop()
        order = await client.create_order(customer, "10.00")
        started = time.monotonic()
        response = await client.http.get(f"{client.order_url}/orders/{order['id']}", params={"wait": 1.5})
        elapsed = time.monotonic() - started
        assert response.status_code == 200 and response.json()["status"] == "pending"
        assert 1.5 <= elapsed < 2.5, elapsed
        for bad in (0, -1, 31, "soon"):
            assert (
                await client.http.get(f"{client.order_url}/orders/{order['id']}", params={"wait": bad})
            ).status_code == 422
        missing = await client.http.get(f"{client.order_url}/orders/999999", params={"wait": 1})
        assert missing.status_code == 404


async def test_wait_is_woken_whichever_replica_records_the_outcome(saga_env):
    async with Saga(saga_env) as (saga, client):
        other = saga_env.order_service()
        await asyncio.to_thread(other.start)
        try:
            customer = await client.create_customer("1000.00")
            orders = [await client.create_order(customer, "1.00") for _ in range(20)]
            started = time.monotonic()
            answers = await asyncio.gather(
                *(client.http.get(f"{client.order_url}/orders/{o['id']}", params={"wait": 20}) for o in orders)
            )
            elapsed = time.monotonic() - started
        finally:
            other.stop()
    assert {a.json()["status"] for a in answers} == {"fulfilled"}
    assert elapsed < 5, f"waiters were not woken by the other replica's outcomes ({elapsed:.1f}s)"
    assert '"order ' in other.log_text() and "fulfilled" in other.log_text(), "the other replica recorded none"


# --- GET /orders/{id}/saga and `sagactl order` ------------------------------------------------------------


async def test_the_saga_timeline_of_a_cancelled_order(saga_env):
    async with Saga(saga_env) as (saga, client):
        customer = await client.create_customer("100.00")
        order = await client.create_order(customer, "30.00")
        await client.wait_for_status(order["id"], {"fulfilled"})
        assert (await client.cancel(order["id"])).status_code == 202
        await client.wait_for_status(order["id"], {"cancelled"})
        await outboxes_published(saga_env)
        timeline = (await client.http.get(f"{client.order_url}/orders/{order['id']}/saga")).json()
        assert (await client.http.get(f"{client.order_url}/orders/999999/saga")).status_code == 404
        printed = sagactl(saga_env, "order", str(order["id"]), order_url=client.order_url)
        as_json = sagactl_json(saga_env, "order", str(order["id"]), order_url=client.order_url)

    steps = [s["step"] for s in timeline["steps"]]
    assert steps == [
        "created",
        "order.created written",
        "order.created published",
        "credit reserved",
        "outcome recorded: fulfilled",
        "cancel requested",
        "order.cancelled published",
        "credit released",
        "release recorded",
    ]
    assert timeline["status"] == "cancelled" and "trace_id" in timeline
    by_step = {s["step"]: s for s in timeline["steps"]}
    assert by_step["order.created written"]["message_id"] == by_step["order.created published"]["message_id"]
    assert by_step["credit reserved"]["message_id"] == by_step["outcome recorded: fulfilled"]["message_id"]
    assert by_step["credit reserved"]["service"] == "customer-service"
    assert all(s["at"] for s in timeline["steps"])
    assert printed.returncode == 0, printed.stderr
    assert f"order {order['id']}: cancelled" in printed.stdout and "credit released" in printed.stdout
    assert as_json["saga"] == timeline


def test_sagactl_says_which_service_it_cannot_reach(saga_env):
    result = sagactl(saga_env, "order", "1", order_url="http://127.0.0.1:1")
    assert result.returncode == 1
    assert "cannot reach the order service at http://127.0.0.1:1" in result.stderr
    assert "ORDER_SERVICE_URL" in result.stderr and "Traceback" not in result.stderr
    result = sagactl(saga_env, "dlq", "list", extra_env={"RABBITMQ_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/"})
    assert result.returncode == 1 and "cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/" in result.stderr
    result = sagactl(saga_env, "prune", extra_env={"ORDER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"})
    assert result.returncode == 1 and "cannot reach the order-service database" in result.stderr


# --- dead letters ---------------------------------------------------------------------------------------


async def test_a_dead_letter_is_listed_with_its_reason_and_replay_finishes_its_saga(saga_env):
    failing = {"SAGA_MAX_ATTEMPTS": "3", "SAGA_RETRY_DELAYS_MS": "[100]"}
    async with Saga(saga_env, customer_env=failing) as (saga, client):
        customer = await client.create_customer("100.00")
        conn = await asyncpg.connect(saga_env.databases.customer_url)
        try:
            await conn.execute(FAIL_RESERVATIONS)  # a bug ships
            order = await client.create_order(customer, "25.00")
            listed = await eventually(
                lambda: sagactl_json(saga_env, "dlq", "list"), timeout=15, interval=0.3, what="a dead letter listed"
            )
            assert len(listed) == 1, listed
            (letter,) = listed
            assert (letter["service"], letter["type"], letter["order_id"]) == (
                "customer-service",
                "order.created",
                str(order["id"]),
            )
            assert letter["category"] == "max_attempts" and "injected failure" in letter["reason"]
            shown = sagactl_json(saga_env, "dlq", "show", letter["id"])
            assert shown["body"]["order_id"] == order["id"] and shown["routing_key"] == "order.created"
            assert (await client.order(order["id"]))["status"] == "pending"

            await conn.execute(FIX_RESERVATIONS)  # the fix ships
        finally:
            await conn.close()
        replayed = sagactl_json(saga_env, "dlq", "replay", "--all")
        assert [r["id"] for r in replayed["replayed"]] == [letter["id"]]
        done = await client.wait_for_status(order["id"], TERMINAL)
        assert done["status"] == "fulfilled"
        assert sagactl_json(saga_env, "dlq", "list") == []
        assert Decimal((await client.customer(customer))["balance"]) == Decimal("75.00")


async def test_purge_asks_first(saga_env):
    async with Saga(saga_env) as (saga, client):
        client_order_url = client.order_url
        async with broker_tool(saga_env.broker_url) as broker:
            await broker.publish_raw(b"not json", "order.created", message_id="junk-1")
        await eventually(
            lambda: sagactl_json(saga_env, "dlq", "list", "--service", "customer"),
            interval=0.2,
            what="the junk message in the customer service's dead-letter queue",
        )
        refused = sagactl(saga_env, "dlq", "purge", order_url=client_order_url)
        assert refused.returncode == 1 and "add --yes" in refused.stderr
        assert len(sagactl_json(saga_env, "dlq", "list")) == 1
        purged = sagactl_json(saga_env, "dlq", "purge", "--yes")
        assert purged["purged"] == {"order-service": 0, "customer-service": 1}
        assert sagactl_json(saga_env, "dlq", "list") == []


# --- reconcile and prune --------------------------------------------------------------------------------


async def outbox_count(url: str) -> int:
    return (await sql(url, "SELECT count(*) AS n FROM outbox"))[0]["n"]


async def outboxes_published(env: SagaEnvironment) -> None:
    """Until every outbox row of both services has left: the sagas' last events are on their way."""

    async def unsent() -> int:
        query = "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
        urls = (env.databases.order_url, env.databases.customer_url)
        return sum([(await sql(url, query))[0]["n"] for url in urls])

    await eventually(unsent, until=lambda n: n == 0, what="both outboxes published")


async def test_reconcile_changes_nothing_when_all_is_consistent_and_repairs_a_broken_state(saga_env):
    grace = {"SAGA_RECONCILE_GRACE_S": "0"}
    async with Saga(saga_env) as (saga, client):
        rich = await client.create_customer("100.00")
        poor = await client.create_customer("5.00")
        fulfilled = await client.create_order(rich, "10.00")
        rejected = await client.create_order(poor, "10.00")
        to_stick = await client.create_order(rich, "20.00")
        for order in (fulfilled, rejected, to_stick):
            await client.wait_for_status(order["id"], TERMINAL)
        await outboxes_published(saga_env)
        before = await outbox_count(saga_env.databases.order_url)
        report = sagactl_json(saga_env, "reconcile", extra_env=grace)
        assert report["consistent"] and report["repaired"] == [] and report["needs_attention"] == []
        assert report["checked"]["active reservations"] == 2
        assert await outbox_count(saga_env.databases.order_url) == before, "a consistent state must not be touched"

        # Break it: credit held for the rejected order (money moved consistently), and an order stuck in
        # cancelling whose order.cancelled was never written.
        await sql(
            saga_env.databases.customer_url,
            "UPDATE reservations SET status = 'active', amount = 5.00, reason = NULL WHERE order_id = $1",
            rejected["id"],
        )
        await sql(saga_env.databases.customer_url, "UPDATE customers SET balance = balance - 5 WHERE id = $1", poor)
        await sql(
            saga_env.databases.order_url,
            "UPDATE orders SET status = 'cancelling', updated_at = now() - interval '5 minutes' WHERE id = $1",
            to_stick["id"],
        )
        dry = sagactl_json(saga_env, "reconcile", "--dry-run", extra_env=grace)
        assert {f["order_id"] for f in dry["repaired"]} == {rejected["id"], to_stick["id"]}
        assert await outbox_count(saga_env.databases.order_url) == before, "--dry-run changed something"

        repaired = sagactl_json(saga_env, "reconcile", extra_env=grace)
        assert {f["order_id"] for f in repaired["repaired"]} == {rejected["id"], to_stick["id"]}
        await client.wait_for_status(to_stick["id"], {"cancelled"})
        await eventually(
            lambda: sql(
                saga_env.databases.customer_url, "SELECT status FROM reservations WHERE order_id = $1", rejected["id"]
            ),
            until=lambda rows: rows[0]["status"] == "released",
            interval=0.1,
            what="the rejected order's credit released",
        )
        assert (await client.order(rejected["id"]))["status"] == "rejected"
        assert Decimal((await client.customer(poor))["balance"]) == Decimal("5.00")
        assert (await money_of(saga_env.databases.customer_url, [rich]))["total"] == Decimal("100.00")
        await outboxes_published(saga_env)
        again = sagactl_json(saga_env, "reconcile", extra_env=grace)
        assert again["consistent"], again


async def test_reconcile_reports_what_only_a_human_can_fix(saga_env):
    async with Saga(saga_env) as (saga, client):
        customer = await client.create_customer("100.00")
        order = await client.create_order(customer, "10.00")
        await client.wait_for_status(order["id"], {"fulfilled"})
        await sql(saga_env.databases.customer_url, "DELETE FROM reservations WHERE order_id = $1", order["id"])
        result = sagactl(saga_env, "reconcile", extra_env={"SAGA_RECONCILE_GRACE_S": "0"})
    assert result.returncode == 3
    assert f"needs attention: order {order['id']}: fulfilled order whose reservation is missing" in result.stdout


async def test_prune_keeps_unsent_rows_and_the_inbox_window(saga_env):
    async with Saga(saga_env) as (saga, client):
        customer = await client.create_customer("100.00")
        for _ in range(3):
            await client.wait_for_status((await client.create_order(customer, "1.00"))["id"], TERMINAL)
    order_db = saga_env.databases.order_url
    # Age what is there: sent rows 10 days old, an unsent one too, inbox records 10 days and 2 hours old.
    await sql(
        order_db, "UPDATE outbox SET created_at = now() - interval '10 days', published_at = now() - interval '10 days'"
    )
    await sql(
        order_db,
        "INSERT INTO outbox (id, routing_key, order_id, payload, created_at) "
        "VALUES (gen_random_uuid(), 'order.created', 1, '{}', now() - interval '10 days')",
    )
    inbox_ids = [r["message_id"] for r in await sql(order_db, "SELECT message_id FROM inbox ORDER BY processed_at")]
    await sql(
        order_db, "UPDATE inbox SET processed_at = now() - interval '10 days' WHERE message_id = ANY($1)", inbox_ids[:2]
    )
    await sql(
        order_db, "UPDATE inbox SET processed_at = now() - interval '2 hours' WHERE message_id = ANY($1)", inbox_ids[2:]
    )
    # A one-hour inbox setting is below the one-day floor: the 2-hour-old records must survive.
    settings = {"SAGA_INBOX_RETENTION_S": "3600", "SAGA_OUTBOX_RETENTION_S": "86400"}

    dry = sagactl_json(saga_env, "prune", "--dry-run", extra_env=settings)
    assert dry["databases"]["order-service"]["outbox_rows"] == 3
    assert dry["databases"]["order-service"]["inbox_rows"] == 2
    assert await outbox_count(order_db) == 4

    done = sagactl_json(saga_env, "prune", extra_env=settings)
    assert done["databases"]["order-service"] == {
        "outbox_rows": 3,
        "inbox_rows": 2,
        "inbox_window_s": 86400.0,
        "history_rows": 0,  # no saga has been over for 90 days
    }
    remaining = await sql(order_db, "SELECT published_at FROM outbox")
    assert [r["published_at"] for r in remaining] == [None], "an unsent row must never be pruned"
    assert sorted(r["message_id"] for r in await sql(order_db, "SELECT message_id FROM inbox")) == sorted(inbox_ids[2:])
    again = sagactl_json(saga_env, "prune", extra_env=settings)
    assert again["databases"]["order-service"]["outbox_rows"] == 0


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["order", "--help"],
        ["dlq", "list", "--help"],
        ["dlq", "replay", "--help"],
        ["dlq", "purge", "--help"],
        ["dlq", "show", "--help"],
        ["reconcile", "--help"],
        ["prune", "--help"],
    ],
)
def test_every_command_has_help(saga_env, command):
    result = sagactl(saga_env, *command)
    assert result.returncode == 0 and "usage: sagactl" in result.stdout


async def test_a_database_outage_is_a_503_to_retry_not_a_500(saga_env):
    unreachable = "postgresql://postgres@127.0.0.1:1/orders"
    order = ServiceProcess("order_service", unreachable, saga_env.broker_url)
    await asyncio.to_thread(order.start, False)
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            await eventually(
                lambda: http.get(f"{order.base_url}/healthz"),
                until=lambda response: response.status_code == 200,
                timeout=30,
                interval=0.1,
                ignoring=(httpx.HTTPError,),
                what="the order service alive without its database",
            )
            ready = await http.get(f"{order.base_url}/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
            created = await http.post(
                f"{order.base_url}/orders/",
                json={"customer_id": 1, "product_id": 1, "quantity": 1, "total_price": "1.00"},
                headers={"Idempotency-Key": "retry-me"},
            )
            read = await http.get(f"{order.base_url}/orders/1")
    finally:
        order.stop()
    for response in (created, read):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert "retry" in response.json()["detail"]
    assert "Traceback" not in order.log_text()
