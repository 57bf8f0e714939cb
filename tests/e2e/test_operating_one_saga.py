"""Operating one saga with real processes: cancel it while pending (also racing its reservation), expire it,
resend its last event, find sagas by status and age and act on them in bulk, and its history, which outlives
the outbox and inbox retention. Each action is a step of the saga's history: who, when, why."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal

import asyncpg

from saga_dev.localstack import SagaEnvironment
from tests.support.broker import broker_tool
from tests.support.processes import Saga, sql
from tests.support.saga_client import SagaClient, money_of
from tests.support.sagactl import sagactl, sagactl_json
from tests.support.waiting import eventually

CUSTOMER_QUEUE = "customer-service.events"


async def balance(env: SagaEnvironment, customer: int) -> Decimal:
    return (await money_of(env.databases.customer_url, [customer]))["balance"]


async def reservations(env: SagaEnvironment, order_id: int) -> list[asyncpg.Record]:
    return await sql(env.databases.customer_url, "SELECT status FROM reservations WHERE order_id = $1", order_id)


async def timeline(client: SagaClient, order_id: int) -> dict:
    return (await client.http.get(f"{client.order_url}/orders/{order_id}/saga")).json()


async def history(env: SagaEnvironment, order_id: int) -> list[tuple]:
    rows = await sql(
        env.databases.order_url,
        "SELECT step, from_status, to_status, reason, actor FROM saga_history WHERE order_id = $1 ORDER BY id",
        order_id,
    )
    return [tuple(row) for row in rows]


# --- cancel while pending ----------------------------------------------------------------------------------


async def test_a_pending_order_cancelled_while_nobody_answers_is_released_once_the_answer_comes(saga_env):
    async with Saga(saga_env) as (saga, client):
        customer = await client.create_customer("100.00")
        saga.customer.signal(signal.SIGSTOP)  # the reservation is held back: the order stays pending
        try:
            order = await client.create_order(customer, "30.00")
            cancelled = await client.cancel(order["id"])
            assert cancelled.status_code == 202, cancelled.text
            assert cancelled.json()["status"] == "cancelling"
        finally:
            saga.customer.signal(signal.SIGCONT)
        await client.wait_for_status(order["id"], {"cancelled"})
        assert await balance(saga_env, customer) == Decimal("100.00")
        refused = await client.cancel(order["id"])
        steps = await history(saga_env, order["id"])

    assert refused.status_code == 409 and "already cancelled" in refused.json()["detail"]
    assert steps[0][:3] == ("created", None, "pending")
    assert ("cancel", "pending", "cancelling", "cancelled_by_client") == steps[1][:4]
    assert steps[-1][:3] == ("credit.released", "cancelling", "cancelled")


async def test_cancels_racing_their_reservations_all_end_cancelled_with_the_money_back(saga_env):
    async with Saga(saga_env) as (saga, client):
        customer = await client.create_customer("1000.00")

        async def order_then_cancel() -> int:
            order = await client.create_order(customer, "10.00")
            answer = await client.cancel(order["id"])
            assert answer.status_code == 202, answer.text
            return order["id"]

        ids = await asyncio.gather(*(order_then_cancel() for _ in range(30)))
        for order_id in ids:
            await client.wait_for_status(order_id, {"cancelled"}, timeout=30)
        cancelled_from = [
            row["from_status"]
            for row in await sql(
                saga_env.databases.order_url,
                "SELECT from_status FROM saga_history WHERE step = 'cancel' AND order_id = ANY($1)",
                list(ids),
            )
        ]
        left = await balance(saga_env, customer)
    print(
        f"\n30 cancels raced their reservations: {cancelled_from.count('pending')} found the order pending, "
        f"{cancelled_from.count('fulfilled')} fulfilled"
    )
    assert len(cancelled_from) == 30
    assert left == Decimal("1000.00"), "a reservation of a cancelled order was never released"


async def test_a_pending_cancel_whose_release_never_comes_ends_cancelled_by_the_deadline(saga_env):
    async with Saga(saga_env, order_env={"SAGA_DEADLINE_S": "2", "SAGA_DEADLINE_SWEEP_INTERVAL_S": "0.2"}) as (
        saga,
        client,
    ):
        customer = await client.create_customer("100.00")
        saga.customer.stop()
        order = await client.create_order(customer, "30.00")
        assert (await client.cancel(order["id"])).json()["status"] == "cancelling"
        done = await client.wait_for_status(order["id"], {"cancelled"}, timeout=10)
        steps = [step["step"] for step in (await timeline(client, order["id"]))["steps"]]
        # The customer service comes back: past the deadline it reserves nothing, and the release finds nothing.
        saga.customer.start()
        await eventually(
            lambda: sql(
                saga_env.databases.customer_url, "SELECT status FROM reservations WHERE order_id = $1", order["id"]
            ),
            until=lambda rows: len(rows) == 1,
            what="the customer service's decision for the order",
        )
        assert (await client.order(order["id"]))["status"] == "cancelled"
        assert await balance(saga_env, customer) == Decimal("100.00")
    assert done["rejection_reason"] is None
    assert steps.index("cancel requested") < steps.index("deadline passed: cancelled")


# --- expire and resend (operator) --------------------------------------------------------------------------


async def test_an_operator_expires_a_stuck_order_and_a_reservation_made_meanwhile_is_released(saga_env):
    async with Saga(saga_env) as (saga, client):
        customer = await client.create_customer("100.00")
        saga.customer.stop()
        order = await client.create_order(customer, "30.00")
        expired = sagactl_json(saga_env, "order", str(order["id"]), "expire", order_url=client.order_url)
        again = sagactl(saga_env, "order", str(order["id"]), "expire", order_url=client.order_url)
        saga.customer.start()  # it reserves first (order.created is ahead), then order.cancelled releases it
        await eventually(
            lambda: sql(
                saga_env.databases.customer_url, "SELECT status FROM reservations WHERE order_id = $1", order["id"]
            ),
            until=lambda rows: [row["status"] for row in rows] in (["released"], ["rejected"]),
            what="the reservation released (or refused)",
        )
        final = await client.order(order["id"])
        left = await balance(saga_env, customer)
        steps = await history(saga_env, order["id"])
    assert (expired["status"], expired["rejection_reason"]) == ("rejected", "expired_by_operator")
    assert again.returncode == 1 and "saga is over" in again.stderr
    assert (final["status"], final["rejection_reason"]) == ("rejected", "expired_by_operator")
    assert left == Decimal("100.00")
    assert ("expire", "pending", "rejected", "expired_by_operator", "development (authentication off)") in steps


async def test_resend_publishes_the_lost_event_again_with_its_id_even_after_retention(saga_env):
    async with Saga(saga_env) as (saga, client):
        customer = await client.create_customer("100.00")
        saga.customer.stop()
        first = await client.create_order(customer, "10.00")
        second = await client.create_order(customer, "20.00")
        async with broker_tool(saga_env.broker_url) as broker:
            await eventually(lambda: broker.queue_depth(CUSTOMER_QUEUE), until=lambda n: n == 2, what="both queued")
            lost = await broker.read_queue(CUSTOMER_QUEUE, expect=2)  # taken off the queue: lost
        created_ids = {message.message_id for message in lost}
        # The second one's outbox row is gone too, as retention would have it: the event is rebuilt.
        await sql(saga_env.databases.order_url, "DELETE FROM outbox WHERE order_id = $1", second["id"])
        resent = [
            sagactl_json(saga_env, "order", str(o["id"]), "resend", order_url=client.order_url) for o in (first, second)
        ]
        saga.customer.start()
        for order in (first, second):
            await client.wait_for_status(order["id"], {"fulfilled"})
        over = sagactl(saga_env, "order", str(first["id"]), "resend", order_url=client.order_url)
        left = await balance(saga_env, customer)
        shown = sagactl(saga_env, "order", str(second["id"]), order_url=client.order_url)
    assert {answer["message_id"] for answer in resent} == created_ids, "not the original message ids"
    assert left == Decimal("70.00")
    assert over.returncode == 1 and "saga is over" in over.stderr
    assert "resent" in shown.stdout and "development (authentication off)" in shown.stdout


# --- find sagas, act in bulk -------------------------------------------------------------------------------


async def test_sagas_finds_stuck_orders_by_status_age_and_customer_and_expires_them_in_bulk(saga_env):
    # Aged ten minutes below, past the default deadline: the sweeper must not expire them before sagactl does.
    async with Saga(saga_env, order_env={"SAGA_DEADLINE_S": "3600"}) as (saga, client):
        mine, other = await client.create_customer("100.00"), await client.create_customer("100.00")
        saga.customer.stop()
        old = [await client.create_order(mine, "1.00") for _ in range(3)]
        others = await client.create_order(other, "1.00")
        young = await client.create_order(mine, "1.00")
        # Ten minutes older, without waiting them: the age filter needs no race with the clock.
        await sql(
            saga_env.databases.order_url,
            "UPDATE orders SET created_at = created_at - interval '10 minutes' WHERE id = ANY($1)",
            [o["id"] for o in [*old, others]],
        )

        def sagas(*args: str, **kwargs) -> dict:
            return sagactl_json(saga_env, "sagas", "--status", "pending", *args, order_url=client.order_url, **kwargs)

        found = sagas("--older-than", "5m", "--customer", str(mine))
        planned = sagas("--older-than", "5m", "--customer", str(mine), "--then", "expire", "--dry-run")
        still = [(await client.order(o["id"]))["status"] for o in old]
        acted = sagas("--older-than", "5m", "--customer", str(mine), "--then", "expire")
        after = {o["id"]: (await client.order(o["id"]))["status"] for o in [*old, others, young]}
        printed = sagactl(saga_env, "sagas", "--customer", str(other), order_url=client.order_url)
    old_ids = sorted(o["id"] for o in old)
    assert [o["id"] for o in found["sagas"]] == old_ids
    assert [o["id"] for o in planned["sagas"]] == old_ids and planned["outcomes"] == [] and still == ["pending"] * 3
    assert [outcome["order_id"] for outcome in acted["outcomes"] if outcome["ok"]] == old_ids
    assert [after[i] for i in old_ids] == ["rejected"] * 3
    assert after[others["id"]] == "pending" and after[young["id"]] == "pending"
    assert printed.returncode == 0 and str(others["id"]) in printed.stdout and "pending" in printed.stdout


async def test_the_api_lists_orders_created_in_a_window(saga_env):
    async with Saga(saga_env) as (saga, client):
        customer = await client.create_customer("100.00")
        before = await client.create_order(customer, "1.00")
        after = await client.create_order(customer, "1.00")
        listed = (
            await client.http.get(
                f"{client.order_url}/orders", params={"created_after": before["created_at"], "customer_id": customer}
            )
        ).json()
        older = (
            await client.http.get(f"{client.order_url}/orders", params={"created_before": after["created_at"]})
        ).json()
        naive = await client.http.get(f"{client.order_url}/orders", params={"created_before": "2026-01-01T00:00:00"})
        numbers = [
            await client.http.get(f"{client.order_url}/orders", params={"created_after": number})
            for number in ("0.5", "1700000000")
        ]
    assert [o["id"] for o in listed] == [after["id"]]
    assert after["id"] not in [o["id"] for o in older] and before["id"] in [o["id"] for o in older]
    assert naive.status_code == 422, "an instant without a time zone is ambiguous"
    assert [answer.status_code for answer in numbers] == [422, 422], "the schema says date-time, not Unix seconds"
    assert "date-time" in numbers[0].json()["detail"][0]["msg"]


# --- idempotency keys per customer -------------------------------------------------------------------------


async def test_idempotency_keys_are_per_customer(saga_env):
    async with Saga(saga_env) as (saga, client):
        alice, bob = await client.create_customer("100.00"), await client.create_customer("100.00")
        key = {"Idempotency-Key": "checkout-1"}
        alices = await client.create_order(alice, "10.00", **key)
        bobs = await client.create_order(bob, "25.00", **key)  # the same key, another customer: no 409
        bobs_again = await client.create_order(bob, "25.00", **key)
        alices_again = await client.create_order(alice, "10.00", **key)
        body = {"customer_id": alice, "product_id": 7, "quantity": 1, "total_price": "99.00"}
        conflict = await client.http.post(f"{client.order_url}/orders/", json=body, headers=key)
    assert bobs["id"] != alices["id"]
    assert bobs_again["id"] == bobs["id"] and alices_again["id"] == alices["id"]
    assert conflict.status_code == 409


async def test_a_key_an_older_release_wrote_still_replays_for_its_customer_only(saga_env):
    # Releases before migration 0004 wrote keys to `idempotency_key` (one namespace); a client retrying across
    # the upgrade must get its order back, and another customer must not see it.
    async with Saga(saga_env) as (saga, client):
        alice, bob = await client.create_customer("100.00"), await client.create_customer("100.00")
        old = await client.create_order(alice, "10.00")
        await sql(
            saga_env.databases.order_url,
            "UPDATE orders SET idempotency_key = 'legacy-1', customer_idempotency_key = NULL WHERE id = $1",
            old["id"],
        )
        key = {"Idempotency-Key": "legacy-1"}
        replayed = await client.http.post(
            f"{client.order_url}/orders/",
            json={"customer_id": alice, "product_id": 7, "quantity": 1, "total_price": "10.00"},
            headers=key,
        )
        bobs = await client.create_order(bob, "10.00", **key)
    assert replayed.status_code == 201 and replayed.json()["id"] == old["id"]
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert bobs["id"] != old["id"]


# --- the history outlives retention ------------------------------------------------------------------------


async def test_the_timeline_of_an_old_order_is_complete_after_everything_else_was_pruned(saga_env):
    async with Saga(saga_env) as (saga, client):
        customer = await client.create_customer("100.00")
        order = await client.create_order(customer, "30.00")
        await client.wait_for_status(order["id"], {"fulfilled"})
        await client.cancel(order["id"])
        await client.wait_for_status(order["id"], {"cancelled"})
        ancient = await client.create_order(customer, "5.00")
        await client.wait_for_status(ancient["id"], {"fulfilled"})
        await eventually(
            lambda: sql(saga_env.databases.order_url, "SELECT 1 FROM outbox WHERE published_at IS NULL"),
            until=lambda rows: not rows,
            what="the outbox published",
        )
        before = await timeline(client, order["id"])
        # Everything old enough for retention: the outbox and the inbox, and one saga over for 91 days.
        for statement in (
            "UPDATE outbox SET published_at = now() - interval '30 days'",
            "UPDATE inbox SET processed_at = now() - interval '30 days'",
            f"UPDATE orders SET completed_at = now() - interval '91 days' WHERE id = {ancient['id']}",
        ):
            await sql(saga_env.databases.order_url, statement)
        pruned = sagactl_json(saga_env, "prune")
        left = await sql(
            saga_env.databases.order_url, "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM inbox) AS n"
        )
        after = await timeline(client, order["id"])
        gone = await timeline(client, ancient["id"])
    assert pruned["databases"]["order-service"]["outbox_rows"] >= 3 and left[0]["n"] == 0
    assert pruned["databases"]["order-service"]["history_rows"] == 2  # the ancient saga's: created, fulfilled
    kept = [step for step in before["steps"] if not step["step"].endswith(" published")]
    assert after["steps"] == kept
    assert [s["step"] for s in kept] == [
        "created",
        "order.created written",
        "credit reserved",
        "outcome recorded: fulfilled",
        "cancel requested",
        "credit released",
        "release recorded",
    ]
    assert gone["steps"] == []
