"""`sagactl why ORDER`: why a saga is where it is, in one sentence, and the command that moves it on.

In a choreographed saga the state is spread over two databases and a broker. `why_collect.py` gathers what
they say about one order into `Facts`; here an ordered list of pure rules reads them, and the first rule that
recognises the situation gives the diagnosis. The rules only read `Facts`, so each is tested without a broker.

The saga's messages are its rows in both outboxes; each is "received" once its id is in the other service's
inbox. The first message not received is where the saga waits, and the rules ask, in order: did it leave its
outbox (the sender's relay)? Is it parked in a dead-letter or a delay queue? Is anybody consuming its queue?
Can sagactl see the broker at all? Is it merely young, or queued behind others? Only then: lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from saga_common.contract.statuses import TERMINAL_STATUSES, OrderStatus
from saga_common.contract.topology import BINDINGS, CUSTOMER_SERVICE, ORDER_SERVICE

IN_FLIGHT_S = 5.0  # a message younger than this is on its way, not stuck
DEADLINE_REASON = "timeout"  # the order service's reason for an order rejected at its deadline
UNKNOWN_CUSTOMER = "unknown_customer"


def receiver_of(message_type: str) -> str:
    return next((service for service, keys in BINDINGS.items() if message_type in keys), "?")


def restart(service: str) -> str:
    return (
        f"restart {service}: `kubectl rollout restart deployment -l app.kubernetes.io/component={service}` "
        "(locally: start its process again)"
    )


@dataclass(frozen=True)
class Order:
    status: str
    rejection_reason: str | None
    customer_id: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Message:
    """One event of the saga, as its sender's outbox has it, and whether its receiver's inbox has it."""

    id: str
    type: str
    sender: str
    created_at: datetime
    published_at: datetime | None
    received_at: datetime | None  # in the receiver's inbox; None: not (or the inbox could not be read)

    @property
    def receiver(self) -> str:
        return receiver_of(self.type)


@dataclass(frozen=True)
class Reservation:
    status: str
    amount: str
    reason: str | None


@dataclass(frozen=True)
class QueueState:
    name: str
    messages: int  # ready, waiting for a consumer
    consumers: int


@dataclass(frozen=True)
class Parked:
    """The message found in a delay queue (waiting for a retry) or a dead-letter queue."""

    queue: str
    kind: str  # "delay" or "dead-letter"
    message_id: str
    reason: str | None = None
    attempts: int | None = None


@dataclass(frozen=True)
class Readiness:
    url: str
    answered: bool  # False: no answer at all (down, hung, wrong URL)
    ready: bool = False
    problems: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def summary(self) -> str:
        if not self.answered:
            return f"does not answer at {self.url} ({self.error})"
        if self.ready:
            return "is ready"
        return "is not ready: " + "; ".join(f"{k}: {v}" for k, v in self.problems.items())


@dataclass(frozen=True)
class Facts:
    order_id: int
    now: datetime
    deadline_s: float
    order: Order | None = None
    order_db_error: str | None = None
    customer_db_error: str | None = None
    customer_exists: bool | None = None
    reservation: Reservation | None = None
    messages: tuple[Message, ...] = ()
    broker_url: str = ""
    broker_error: str | None = None
    queues: dict[str, QueueState] = field(default_factory=dict)  # each service's work queue, by service
    parked: tuple[Parked, ...] = ()
    services: dict[str, Readiness] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] | None = None  # the order's saga_history rows, where that table exists

    @property
    def waiting(self) -> Message | None:
        """The first message of the saga its receiver has not recorded: where the saga waits. A message its
        receiver answered later counts as received even when its inbox record was pruned since."""
        for m in self.messages:
            answered = any(r.sender == m.receiver and r.created_at >= m.created_at for r in self.messages)
            if m.received_at is None and not answered:
                return m
        return None

    def age_s(self, since: datetime) -> float:
        return (self.now - since).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Diagnosis:
    code: str
    cause: str  # one sentence
    fix: str | None  # the command (or step) that moves it on; None: nothing to do


def _s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


# --- where the waiting message is: the rules of one hop -------------------------------------------------------


def _relay(f: Facts, m: Message) -> Diagnosis | None:
    if m.published_at is not None:
        return None
    sender = f.services.get(m.sender)
    unsent = f"{m.type} has waited unsent in the {m.sender} outbox for {_s(f.age_s(m.created_at))}"
    if sender is not None and not sender.answered:
        return Diagnosis(
            "relay_stopped", f"{unsent}: {m.sender}, whose relay publishes it, {sender.summary()}.", restart(m.sender)
        )
    if sender is not None and not sender.ready:
        return Diagnosis(
            "relay_failing",
            f"{unsent}: the relay cannot publish, {m.sender} {sender.summary()}.",
            f"fix what {m.sender}'s /readyz names (its RABBITMQ_BROKER_URL, the broker), then {restart(m.sender)}",
        )
    if f.age_s(m.created_at) < IN_FLIGHT_S:
        return Diagnosis(
            "in_flight", f"{m.type} was written {_s(f.age_s(m.created_at))} ago and is being published.", None
        )
    return Diagnosis(
        "relay_failing",
        f"{unsent} although {m.sender} reports ready: its relay is not publishing.",
        f"read {m.sender}'s log for 'outbox relay', then {restart(m.sender)}",
    )


def _parked(f: Facts, m: Message) -> Diagnosis | None:
    found = next((p for p in f.parked if p.message_id == m.id), None)
    if found is None:
        return None
    if found.kind == "dead-letter":
        return Diagnosis(
            "poison",
            f"{m.type} was dead-lettered by {m.receiver} ({found.reason}) and waits in {found.queue}.",
            f"`sagactl dlq show {m.id}`, fix the cause, then `sagactl dlq replay {m.id}`",
        )
    attempts = f" after {found.attempts} failed attempt(s)" if found.attempts else ""
    return Diagnosis(
        "retrying",
        f"{m.type} failed in {m.receiver}{attempts} and waits in {found.queue} for its next try.",
        f"read {m.receiver}'s log for order {f.order_id}; it is retried by itself, and `sagactl dlq list "
        f"--order {f.order_id}` shows it if it ends dead-lettered",
    )


def _consumer(f: Facts, m: Message) -> Diagnosis | None:
    receiver = f.services.get(m.receiver)
    queue = f.queues.get(m.receiver)
    if queue is not None and queue.consumers == 0:
        status = f" ({m.receiver} {receiver.summary()})" if receiver is not None and not receiver.ready else ""
        return Diagnosis(
            "consumer_stopped",
            f"Nobody consumes {queue.name}: {m.type} waits there with {queue.messages} message(s) and no consumer "
            f"attached{status}.",
            restart(m.receiver),
        )
    if receiver is not None and not receiver.answered:
        return Diagnosis(
            "consumer_stopped",
            f"{m.receiver}, which consumes {m.type}, {receiver.summary()}: stopped or hung, with {m.type} "
            f"published {_s(f.age_s(m.published_at or m.created_at))} ago and not received.",
            restart(m.receiver),
        )
    if receiver is not None and "consumer" in receiver.problems:
        return Diagnosis(
            "consumer_stopped",
            f"{m.receiver} is not consuming ({receiver.problems['consumer']}), so {m.type} is not received.",
            restart(m.receiver),
        )
    return None


def _broker_unseen(f: Facts, m: Message) -> Diagnosis | None:
    if f.broker_error is None:
        return None
    return Diagnosis(
        "broker_unreachable",
        f"sagactl cannot reach RabbitMQ at {f.broker_url} ({f.broker_error}), so where {m.type} (published, not "
        f"received by {m.receiver}) waits is unknown.",
        "set RABBITMQ_BROKER_URL to the broker the services use (`sagactl dlq list` must answer), then run "
        "`sagactl why` again",
    )


def _in_queue(f: Facts, m: Message) -> Diagnosis | None:
    published = f.age_s(m.published_at or m.created_at)
    if published < IN_FLIGHT_S:
        return Diagnosis(
            "in_flight", f"{m.type} was published {_s(published)} ago and is on its way to {m.receiver}.", None
        )
    queue = f.queues.get(m.receiver)
    if queue is not None and queue.messages > 0:
        return Diagnosis(
            "queued",
            f"{m.type} waits in {queue.name} behind up to {queue.messages} message(s), {queue.consumers} consumer(s) "
            "at work.",
            f"wait; if {queue.name} keeps growing, add {m.receiver} replicas",
        )
    return Diagnosis(
        "lost",
        f"{m.type} was published {_s(published)} ago but is in no queue of {m.receiver} and not in its inbox.",
        f"`sagactl order {f.order_id} resend`",
    )


HOP_RULES: tuple[Callable[[Facts, Message], Diagnosis | None], ...] = (
    _relay,
    _parked,
    _consumer,
    _broker_unseen,
    _in_queue,
)


def hop(f: Facts) -> Diagnosis | None:
    m = f.waiting
    if m is None:
        return None
    return next((d for rule in HOP_RULES if (d := rule(f, m)) is not None), None)


# --- the saga as a whole ---------------------------------------------------------------------------------------


def _order_database(f: Facts) -> Diagnosis | None:
    if f.order_db_error is None:
        return None
    return Diagnosis(
        "order_database_unreachable",
        f"sagactl cannot read the order database ({f.order_db_error}).",
        "set ORDER_DATABASE_URL to the order service's database",
    )


def _no_order(f: Facts) -> Diagnosis | None:
    if f.order is not None:
        return None
    return Diagnosis(
        "no_such_order", f"There is no order {f.order_id} in the order database.", "check the order id (GET /orders/)"
    )


def _past_deadline(f: Facts) -> Diagnosis | None:
    o = f.order
    assert o is not None
    rejected_late = o.status == OrderStatus.REJECTED and o.rejection_reason == DEADLINE_REASON
    pending_late = o.status == OrderStatus.PENDING and f.age_s(o.created_at) > f.deadline_s
    if not (rejected_late or pending_late):
        return None
    because = hop(f)
    if rejected_late:
        if because is None or because.code == "in_flight":
            late = _too_late(f) if because is None else because.cause.rstrip(".")
            held = f.reservation is not None and f.reservation.status == "active"
            return Diagnosis(
                "past_deadline",
                f"Order {f.order_id} was rejected at its {f.deadline_s:g} s deadline: {late}.",
                "`sagactl reconcile` releases the credit held" if held else "place the order again",
            )
        return Diagnosis(
            "past_deadline",
            f"Order {f.order_id} was rejected at its {f.deadline_s:g} s deadline because {_lower(because.cause)}",
            f"{because.fix}; then place the order again (the late order.created reserves nothing, or what it "
            "reserved is released by itself)",
        )
    order_service = f.services.get(ORDER_SERVICE)
    sweeper = (
        f" and {ORDER_SERVICE}, whose deadline sweep rejects it, {order_service.summary()}"
        if order_service is not None and not order_service.ready
        else ""
    )
    why = f" ({_lower(because.cause).rstrip('.')})" if because is not None else ""
    return Diagnosis(
        "past_deadline",
        f"Order {f.order_id} has been pending {_s(f.age_s(o.created_at))}, past its {f.deadline_s:g} s "
        f"deadline{sweeper}{why}.",
        f"`sagactl order {f.order_id} expire` (or {restart(ORDER_SERVICE)}, whose sweep rejects it)",
    )


def _too_late(f: Facts) -> str:
    """What became of an answer that came after the deadline."""
    r = f.reservation
    first = f.messages[0] if f.messages else None
    if r is None or first is None or first.received_at is None:
        return f"no answer came from {CUSTOMER_SERVICE} in time"
    took = f"{CUSTOMER_SERVICE} took {first.type} {_s((first.received_at - first.created_at).total_seconds())} after it"
    if r.status == "released":
        return f"{took} was written, too late; the credit it reserved was released"
    if r.status == "active":
        return f"{took} was written, too late, and the credit it reserved is still held"
    return f"{took} was written, too late, and reserved nothing ({r.reason})"


def _lower(sentence: str) -> str:
    return sentence[:1].lower() + sentence[1:]


def _customer_database(f: Facts) -> Diagnosis | None:
    if f.customer_db_error is None or f.waiting is None:
        return None
    return Diagnosis(
        "customer_database_unreachable",
        f"sagactl cannot read the customer database ({f.customer_db_error}), so whether "
        f"{f.waiting.type} was received is unknown.",
        "set CUSTOMER_DATABASE_URL to the customer service's database",
    )


def _waiting(f: Facts) -> Diagnosis | None:
    return hop(f)


def _unknown_customer(f: Facts) -> Diagnosis | None:
    o = f.order
    assert o is not None
    if o.status == OrderStatus.REJECTED and o.rejection_reason == UNKNOWN_CUSTOMER:
        return Diagnosis(
            "unknown_customer",
            f"Order {f.order_id} was rejected: customer {o.customer_id} does not exist in the customer database.",
            f"create the customer (POST /customers on {CUSTOMER_SERVICE}), then place the order again for its id",
        )
    return None


def _finished(f: Facts) -> Diagnosis | None:
    o = f.order
    assert o is not None
    if o.status not in TERMINAL_STATUSES:
        return None
    reason = f" ({o.rejection_reason})" if o.rejection_reason else ""
    return Diagnosis(
        "finished",
        f"Order {f.order_id} is {o.status}{reason} since {o.updated_at:%Y-%m-%d %H:%M:%S %Z}: its saga is over and "
        "nothing of it waits anywhere.",
        None,
    )


def _nothing_on_its_way(f: Facts) -> Diagnosis:
    o = f.order
    assert o is not None
    return Diagnosis(
        "nothing_on_its_way",
        f"Order {f.order_id} is {o.status}, but no message of its saga is on its way (every one recorded, or "
        "its outbox rows pruned).",
        f"`sagactl order {f.order_id} resend` (or `sagactl reconcile`)",
    )


RULES: tuple[Callable[[Facts], Diagnosis | None], ...] = (
    _order_database,
    _no_order,
    _past_deadline,
    _customer_database,
    _waiting,
    _unknown_customer,
    _finished,
)


def diagnose(facts: Facts) -> Diagnosis:
    """The first rule that recognises the situation; the fallback says nothing is on its way."""
    return next((d for rule in RULES if (d := rule(facts)) is not None), None) or _nothing_on_its_way(facts)


def render(f: Facts, d: Diagnosis) -> str:
    """The diagnosis first, then what it was read from."""
    lines = []
    if f.order is not None:
        o = f.order
        reason = f" ({o.rejection_reason})" if o.rejection_reason else ""
        lines.append(
            f"order {f.order_id}: {o.status}{reason}, created {_s(f.age_s(o.created_at))} ago "
            f"(customer {o.customer_id}, deadline {f.deadline_s:g} s)"
        )
    lines += [f"cause: {d.cause}", f"fix:   {d.fix or 'nothing to do'}"]
    if f.messages:
        lines.append("messages:")
        for m in f.messages:
            sent = f"published {m.published_at:%H:%M:%S}" if m.published_at else "UNSENT"
            got = f"received {m.received_at:%H:%M:%S}" if m.received_at else "not received"
            lines.append(f"  {m.type:<16} {m.sender} -> {m.receiver}: written {m.created_at:%H:%M:%S}, {sent}, {got}")
    if f.reservation is not None:
        r = f.reservation
        lines.append(f"reservation: {r.status} {r.amount}" + (f" ({r.reason})" if r.reason else ""))
    if f.broker_error:
        lines.append(f"broker: unreachable at {f.broker_url} ({f.broker_error})")
    elif f.queues:
        lines.append(
            "queues: " + "; ".join(f"{q.name} {q.messages} ready, {q.consumers} consumer(s)" for q in f.queues.values())
        )
    lines += [f"parked: {p.message_id} in {p.queue}" for p in f.parked]
    lines += [f"{service}: {r.summary()}" for service, r in f.services.items()]
    return "\n".join(lines)
