"""Dead-letter triage decided without a broker: filters, groups, `--since`, and the replay plan's limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from saga_common.messaging.consumer import DEAD_LETTERED_AT_HEADER
from saga_tools.dlq import REPLAYS_HEADER, DeadLetter
from saga_tools.dlq_triage import Filters, group_counts, parse_group_by, parse_since, plan_replay

NOW = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
WINDOW = timedelta(days=1)


def letter(
    n: int,
    *,
    category: str = "max_attempts",
    reason: str = "failed 6 times, last error: boom",
    type: str = "order.created",
    order: str | None = "7",
    ago: timedelta = timedelta(minutes=5),
    replays: int | None = None,
    death_time: datetime | None = None,
) -> DeadLetter:
    headers: dict = {}
    if death_time is None:
        headers[DEAD_LETTERED_AT_HEADER] = (NOW - ago).isoformat()
    else:
        headers["x-death"] = [{"reason": "delivery_limit", "time": death_time}]
    if replays is not None:
        headers[REPLAYS_HEADER] = replays
    return DeadLetter(
        service="customer-service",
        queue="customer-service.dead-letter",
        position=n,
        message_id=f"m{n}",
        type=type,
        order_id=order,
        routing_key=type,
        reason=reason,
        category=category,
        dead_lettered_at=headers.get(DEAD_LETTERED_AT_HEADER),
        attempts=None,
        sent_at=NOW - ago,
        headers=headers,
        body=b"{}",
    )


LETTERS = [
    letter(1),
    letter(2, order="8"),
    letter(3, category="not_json", reason="body is not JSON: x", order=None, ago=timedelta(hours=3)),
    letter(4, type="order.cancelled", ago=timedelta(minutes=30)),
]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(), ["m1", "m2", "m3", "m4"]),
        (Filters(reason="max_attempts"), ["m1", "m2", "m4"]),
        (Filters(reason="NOT JSON"), ["m3"]),  # a piece of the reason text, any case
        (Filters(type="order.cancelled"), ["m4"]),
        (Filters(order="7"), ["m1", "m4"]),
        (Filters(since=NOW - timedelta(minutes=10)), ["m1", "m2"]),
        (Filters(reason="max_attempts", order="7", since=NOW - timedelta(hours=1)), ["m1", "m4"]),
        (Filters(type="credit.released"), []),
    ],
)
def test_every_filter_given_must_match(filters, expected):
    assert [x.key for x in filters.select(LETTERS)] == expected


def test_since_falls_back_to_the_brokers_own_record():
    broker_dead_lettered = letter(9, death_time=(NOW - timedelta(minutes=1)).replace(tzinfo=None))
    assert Filters(since=NOW - timedelta(minutes=2)).matches(broker_dead_lettered)
    assert not Filters(since=NOW).matches(broker_dead_lettered)


def test_groups_are_counted_largest_first():
    assert group_counts(LETTERS, ("category", "type")) == [
        {"category": "max_attempts", "type": "order.created", "count": 2},
        {"category": "max_attempts", "type": "order.cancelled", "count": 1},
        {"category": "not_json", "type": "order.created", "count": 1},
    ]
    assert group_counts([], ("reason",)) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("10m", NOW - timedelta(minutes=10)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2d", NOW - timedelta(days=2)),
        ("2026-12-03T17:00:00", datetime(2026, 12, 3, 17, 0, tzinfo=UTC)),
        ("2026-12-03T17:00:00+01:00", datetime(2026, 12, 3, 16, 0, tzinfo=UTC)),
    ],
)
def test_since_is_a_duration_or_a_time(text, expected):
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "10 minutes", "-5m", ""])
def test_a_bad_since_says_what_it_takes(text):
    with pytest.raises(ValueError, match=r"duration .* or an ISO 8601 time"):
        parse_since(text, NOW)


def test_group_by_names_its_choices():
    assert parse_group_by("reason, type") == ("reason", "type")
    with pytest.raises(ValueError, match="choose among service, category, reason, type, order"):
        parse_group_by("colour")


def test_the_plan_refuses_past_the_replay_limit_and_keeps_the_rest_past_max():
    letters = [letter(1, replays=3), letter(2, replays=2), letter(3), letter(4), letter(5, ago=timedelta(days=2))]
    plan = plan_replay(letters, now=NOW, window=WINDOW, force=False, max_replays=3, max_count=2)
    assert [x.key for x in plan.replay] == ["m2", "m3"]
    assert [x.key for x in plan.left] == ["m4"]
    assert [(x.key, why.split(" (")[0]) for x, why in plan.refused] == [
        ("m1", "replayed 3 times already"),
        ("m5", "older than the 1 day, 0:00:00 deduplication window"),
    ]
    assert "fix its cause first" in plan.refused[0][1]
    forced = plan_replay(letters, now=NOW, window=WINDOW, force=True, max_replays=4, max_count=None)
    assert [x.key for x in forced.replay] == ["m1", "m2", "m3", "m4", "m5"] and not forced.refused


def test_the_replay_counter_reads_what_the_headers_say():
    assert letter(1).replays == 0
    assert letter(1, replays=2).replays == 2
    assert letter(1).summary()["replays"] == 0
