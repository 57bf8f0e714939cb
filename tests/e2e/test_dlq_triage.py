"""Dead-letter triage through the real `sagactl`, with real dead letters in a real RabbitMQ: counts per group,
filters, a dry run that moves nothing, `--max` and `--rate`, and the refusal of a message replayed too often."""

from __future__ import annotations

import asyncpg

from tests.support.broker import broker_tool
from tests.support.customer_db import FAIL_RESERVATIONS, FIX_RESERVATIONS
from tests.support.saga_client import saga_client
from tests.support.sagactl import sagactl, sagactl_json
from tests.support.waiting import eventually


async def dead_letters(env, count: int, *filters: str) -> list[dict]:
    return await eventually(
        lambda: sagactl_json(env, "dlq", "list", *filters),
        until=lambda letters: len(letters) == count,
        timeout=20,
        interval=0.3,
        what=f"{count} dead letters {' '.join(filters)}",
    )


async def test_triage_groups_filters_and_replays_with_a_dry_run_a_max_a_rate_and_a_replay_limit(saga_env):
    failing = {"SAGA_MAX_ATTEMPTS": "2", "SAGA_RETRY_DELAYS_MS": "[100]"}
    customer = saga_env.customer_service(extra_env=failing)
    order = saga_env.order_service()
    customer.start()
    order.start()
    conn = await asyncpg.connect(saga_env.databases.customer_url)
    try:
        async with saga_client(order, customer) as client:
            alice = await client.create_customer("100.00")
            await conn.execute(FAIL_RESERVATIONS)  # a bug ships: every order.created fails twice, then dead letter
            orders = [(await client.create_order(alice, "10.00"))["id"] for _ in range(3)]
            async with broker_tool(saga_env.broker_url) as broker:
                for n in (1, 2):
                    await broker.publish_raw(b"not json", "order.created", message_id=f"junk-{n}", type="order.created")
            await dead_letters(saga_env, 5)

            groups = sagactl_json(saga_env, "dlq", "list", "--group-by", "category,type")
            assert groups == [
                {"category": "max_attempts", "type": "order.created", "count": 3},
                {"category": "not_json", "type": "order.created", "count": 2},
            ]
            by_service = sagactl_json(saga_env, "dlq", "list", "--group-by", "service")
            assert by_service == [{"service": "customer-service", "count": 5}]
            table = sagactl(saga_env, "dlq", "list", "--group-by", "category")
            assert table.returncode == 0 and "max_attempts" in table.stdout and " 3" in table.stdout
            bad = sagactl(saga_env, "dlq", "list", "--group-by", "colour")
            assert bad.returncode == 1 and "choose among service, category, reason, type, order" in bad.stderr

            (one,) = sagactl_json(saga_env, "dlq", "list", "--order", str(orders[0]))
            assert one["order_id"] == str(orders[0]) and one["category"] == "max_attempts"
            assert len(sagactl_json(saga_env, "dlq", "list", "--reason", "injected failure")) == 3
            assert len(sagactl_json(saga_env, "dlq", "list", "--since", "10m")) == 5
            assert sagactl_json(saga_env, "dlq", "list", "--since", "2999-01-01T00:00:00") == []
            assert sagactl(saga_env, "dlq", "replay").returncode == 1, "a replay must name what it replays"

            await conn.execute(FIX_RESERVATIONS)  # the fix ships
            dry = sagactl_json(saga_env, "dlq", "replay", "--reason", "max_attempts", "--dry-run")
            assert sorted(int(letter["order_id"]) for letter in dry["would_replay"]) == sorted(orders)
            assert dry["replayed"] == [] and dry["refused"] == []
            assert len(await dead_letters(saga_env, 5)) == 5, "a dry run moved a message"
            assert {(await client.order(o))["status"] for o in orders} == {"pending"}

            # Two of three, at two a second: the consumer sees them at least half a second apart.
            paced = sagactl_json(saga_env, "dlq", "replay", "--reason", "max_attempts", "--max", "2", "--rate", "2")
            assert len(paced["replayed"]) == 2 and len(paced["left"]) == 1
            replayed = [int(letter["order_id"]) for letter in paced["replayed"]]
            for order_id in replayed:
                assert (await client.wait_for_status(order_id, {"fulfilled", "rejected"}))["status"] == "fulfilled"
            first, second = await conn.fetch(
                "SELECT processed_at FROM inbox WHERE order_id = ANY($1) ORDER BY processed_at", replayed
            )
            gap = (second["processed_at"] - first["processed_at"]).total_seconds()
            assert gap >= 0.4, f"--rate 2 replayed them {gap:.3f} s apart"
            (left,) = await dead_letters(saga_env, 1, "--reason", "max_attempts")
            assert int(left["order_id"]) not in replayed and left["replays"] == 0

            rest = sagactl_json(saga_env, "dlq", "replay", "--order", left["order_id"])
            assert [letter["id"] for letter in rest["replayed"]] == [left["id"]]
            assert (await client.wait_for_status(int(left["order_id"]), {"fulfilled"}))["status"] == "fulfilled"

            # A message that is poison whatever the fix comes back each time, one replay more in its headers,
            # until the limit: then it is refused and stays.
            for replays in (1, 2, 3):
                done = sagactl_json(saga_env, "dlq", "replay", "junk-1")
                assert [letter["id"] for letter in done["replayed"]] == ["junk-1"]
                want = {("junk-1", replays), ("junk-2", 0)}
                await eventually(
                    lambda: sagactl_json(saga_env, "dlq", "list", "--reason", "not_json"),
                    until=lambda letters, want=want: {(x["id"], x["replays"]) for x in letters} == want,
                    timeout=15,
                    interval=0.2,
                    what=f"junk-1 dead-lettered again after replay {replays}",
                )
            refused = sagactl(saga_env, "dlq", "replay", "--reason", "not_json")
            assert refused.returncode == 3, refused.stderr
            assert "refused junk-1: replayed 3 times already (limit 3)" in refused.stdout
            assert "it stays in the dead-letter queue" in refused.stdout
            assert "replayed 1 message(s)" in refused.stdout, "junk-2 (never replayed) was not refused"
            kept = await dead_letters(saga_env, 2, "--reason", "not_json")
            assert {(x["id"], x["replays"]) for x in kept} == {("junk-1", 3), ("junk-2", 1)}
            more = sagactl_json(saga_env, "dlq", "replay", "junk-1", "--max-replays", "4")
            assert [letter["id"] for letter in more["replayed"]] == ["junk-1"], "a higher limit lets it go"
    finally:
        await conn.close()
        order.stop()
        customer.stop()
