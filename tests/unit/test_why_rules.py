"""`sagactl why`'s rules over hand-made facts: each cause recognised, in its order, and nothing else."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from saga_tools.why import (
    Diagnosis,
    Facts,
    Message,
    Order,
    Parked,
    QueueState,
    Readiness,
    Reservation,
    diagnose,
    render,
)

NOW = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
READY = Readiness("http://order", answered=True, ready=True)
CUSTOMER_READY = Readiness("http://customer", answered=True, ready=True)
DOWN = Readiness("http://customer", answered=False, error="ReadTimeout")


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def created(published: float | None = 20, received: float | None = None, written: float = 20) -> Message:
    return Message(
        "m-created",
        "order.created",
        "order-service",
        ago(written),
        ago(published) if published is not None else None,
        ago(received) if received is not None else None,
    )


def outcome(kind: str = "order.fulfilled", at: float = 10) -> Message:
    return Message("m-outcome", kind, "customer-service", ago(at), ago(at), ago(at))


def facts(status: str = "pending", reason: str | None = None, age: float = 20, **changes) -> Facts:
    base = Facts(
        order_id=7,
        now=NOW,
        deadline_s=30,
        order=Order(status, reason, 3, ago(age), ago(age)),
        customer_exists=True,
        messages=(created(),),
        broker_url="amqp://guest:***@rabbit/",
        queues={
            "customer-service": QueueState("customer-service.events", 0, 1),
            "order-service": QueueState("order-service.events", 0, 1),
        },
        services={"order-service": READY, "customer-service": CUSTOMER_READY},
    )
    return replace(base, **changes)


def test_the_order_database_comes_first():
    d = diagnose(Facts(order_id=7, now=NOW, deadline_s=30, order_db_error="db: connection refused"))
    assert d.code == "order_database_unreachable" and "ORDER_DATABASE_URL" in d.fix


def test_no_such_order():
    assert diagnose(Facts(order_id=7, now=NOW, deadline_s=30)).code == "no_such_order"


def test_relay_stopped_when_the_sender_does_not_answer():
    d = diagnose(facts(messages=(created(published=None),), services={"order-service": replace(DOWN, url="http://o")}))
    assert d.code == "relay_stopped"
    assert d.cause.startswith("order.created has waited unsent in the order-service outbox for 20 s")
    assert "component=order-service" in d.fix


def test_relay_failing_names_what_the_readiness_says():
    not_ready = Readiness("http://o", answered=True, ready=False, problems={"broker": "not connected to the broker"})
    d = diagnose(facts(messages=(created(published=None),), services={"order-service": not_ready}))
    assert d.code == "relay_failing" and "broker: not connected to the broker" in d.cause


def test_a_young_unsent_row_is_in_flight_and_an_old_one_with_a_ready_sender_is_not():
    assert diagnose(facts(messages=(created(published=None, written=1),))).code == "in_flight"
    d = diagnose(facts(messages=(created(published=None, written=60),)))
    assert d.code == "relay_failing" and "although order-service reports ready" in d.cause


def test_poison_points_at_the_replay():
    parked = (Parked("customer-service.dead-letter", "dead-letter", "m-created", "failed 6 times: boom", 6),)
    d = diagnose(facts(parked=parked))
    assert d == Diagnosis(
        "poison",
        "order.created was dead-lettered by customer-service (failed 6 times: boom) and waits in "
        "customer-service.dead-letter.",
        "`sagactl dlq show m-created`, fix the cause, then `sagactl dlq replay m-created`",
    )


def test_a_message_in_a_delay_queue_is_retrying():
    parked = (Parked("customer-service.retry.2000ms", "delay", "m-created", None, 2),)
    d = diagnose(facts(parked=parked))
    assert d.code == "retrying" and "after 2 failed attempt(s)" in d.cause and "retry.2000ms" in d.cause


def test_another_messages_parking_is_not_this_one():
    parked = (Parked("customer-service.dead-letter", "dead-letter", "someone-else", "x"),)
    assert diagnose(facts(parked=parked)).code == "lost"


@pytest.mark.parametrize(
    ("queues", "receiver", "says"),
    [
        ({"customer-service": QueueState("customer-service.events", 4, 0)}, CUSTOMER_READY, "Nobody consumes"),
        ({"customer-service": QueueState("customer-service.events", 0, 1)}, DOWN, "does not answer"),
        (
            {"customer-service": QueueState("customer-service.events", 0, 1)},
            Readiness("http://c", True, False, {"consumer": "not consuming customer-service.events"}),
            "is not consuming",
        ),
    ],
)
def test_consumer_stopped(queues, receiver, says):
    d = diagnose(facts(queues=queues, services={"order-service": READY, "customer-service": receiver}))
    assert d.code == "consumer_stopped" and says in d.cause and "component=customer-service" in d.fix


def test_a_down_consumer_is_seen_even_without_the_broker():
    d = diagnose(facts(broker_error="connection refused", queues={}, services={"customer-service": DOWN}))
    assert d.code == "consumer_stopped"


def test_broker_unreachable_when_only_the_broker_could_tell():
    d = diagnose(facts(broker_error="connection refused", queues={}))
    assert d.code == "broker_unreachable"
    assert "amqp://guest:***@rabbit/ (connection refused)" in d.cause and "RABBITMQ_BROKER_URL" in d.fix


def test_published_young_queued_or_lost():
    assert diagnose(facts(messages=(created(published=1),))).code == "in_flight"
    busy = {"customer-service": QueueState("customer-service.events", 900, 2)}
    d = diagnose(facts(queues=busy))
    assert d.code == "queued" and "behind up to 900 message(s), 2 consumer(s)" in d.cause
    lost = diagnose(facts())
    assert lost.code == "lost" and lost.fix == "`sagactl order 7 resend`"


def test_unknown_customer():
    d = diagnose(
        facts(
            "rejected",
            "unknown_customer",
            customer_exists=False,
            messages=(created(received=15), outcome("order.rejected")),
        )
    )
    assert d.code == "unknown_customer" and "customer 3 does not exist" in d.cause


def test_finished_sagas_need_nothing():
    for status in ("fulfilled", "cancelled"):
        d = diagnose(facts(status, messages=(created(received=15), outcome())))
        assert d.code == "finished" and d.fix is None and f"is {status}" in d.cause


def test_an_answer_proves_receipt_when_the_inbox_record_was_pruned():
    d = diagnose(facts("fulfilled", messages=(created(received=None), outcome())))
    assert d.code == "finished"


def test_a_cancelling_order_waits_for_its_release():
    cancelled = Message("m-cancel", "order.cancelled", "order-service", ago(8), ago(8), None)
    d = diagnose(
        facts("cancelling", messages=(created(received=15), outcome(), cancelled), services={"customer-service": DOWN})
    )
    assert d.code == "consumer_stopped" and "consumes order.cancelled" in d.cause


def test_pending_past_its_deadline_names_the_sweeper_and_the_hop():
    order_down = Readiness("http://o", answered=False, error="ReadTimeout")
    d = diagnose(facts(age=45, services={"order-service": order_down, "customer-service": DOWN}))
    assert d.code == "past_deadline"
    assert d.cause.startswith("Order 7 has been pending 45 s, past its 30 s deadline and order-service")
    assert "(customer-service, which consumes order.created, does not answer" in d.cause
    assert d.fix.startswith("`sagactl order 7 expire`")


def test_rejected_at_the_deadline_says_why_it_came_late():
    stopped = {"customer-service": QueueState("customer-service.events", 1, 0)}
    d = diagnose(facts("rejected", "timeout", queues=stopped))
    assert d.code == "past_deadline"
    assert d.cause.startswith("Order 7 was rejected at its 30 s deadline because nobody consumes customer-service")
    assert "place the order again" in d.fix
    late = facts(
        "rejected",
        "timeout",
        messages=(created(received=5), outcome("order.rejected", at=5)),
        reservation=Reservation("rejected", "10.00", "timeout"),
    )
    assert "took order.created 15 s after it was written, too late, and reserved nothing" in diagnose(late).cause
    held = replace(late, reservation=Reservation("active", "10.00", None))
    assert diagnose(held).fix == "`sagactl reconcile` releases the credit held"


def test_customer_database_unreachable_only_matters_while_something_waits():
    assert diagnose(facts(customer_db_error="refused")).code == "customer_database_unreachable"
    done = facts("fulfilled", customer_db_error="refused", messages=(created(received=None), outcome()))
    assert diagnose(done).code == "finished"


def test_nothing_on_its_way():
    assert diagnose(facts(messages=())).code == "nothing_on_its_way"


def test_render_puts_the_cause_and_the_fix_first():
    f = facts(queues={"customer-service": QueueState("customer-service.events", 1, 0)})
    lines = render(f, diagnose(f)).splitlines()
    assert lines[0].startswith("order 7: pending, created 20 s ago")
    assert lines[1].startswith("cause: Nobody consumes") and lines[2].startswith("fix:   restart customer-service")
    assert any("order.created" in line and "not received" in line for line in lines)
