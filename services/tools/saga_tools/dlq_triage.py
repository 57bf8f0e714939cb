"""Dead-letter triage, decided without the broker: which dead letters a command means (filters), how many
there are of each kind (groups), and which of the chosen ones may go back (the replay plan).

A message replayed `max_replays` times already is refused: it failed again after every fix so far, and one
more replay would only move it in a circle. It stays in the dead-letter queue, with the reason printed.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from saga_tools.dlq import DeadLetter

GROUP_KEYS = ("service", "category", "reason", "type", "order")
DEFAULT_MAX_REPLAYS = 3
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from now (`90s`, `10m`, `2h`, `1d`) or an ISO 8601 time (UTC if no zone)."""
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match[1]) * _UNIT_S[match[2]])
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: give a duration (90s, 10m, 2h, 1d) or an ISO 8601 time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def parse_group_by(text: str) -> tuple[str, ...]:
    keys = tuple(key.strip() for key in text.split(",") if key.strip())
    unknown = [key for key in keys if key not in GROUP_KEYS]
    if unknown or not keys:
        raise ValueError(f"--group-by {text!r}: choose among {', '.join(GROUP_KEYS)} (comma-separated)")
    return keys


@dataclass(frozen=True)
class Filters:
    """Every filter given must match. `reason` is a category (`max_attempts`) or a piece of the reason text."""

    reason: str | None = None
    type: str | None = None
    order: str | None = None
    since: datetime | None = None

    @property
    def given(self) -> bool:
        return any(value is not None for value in (self.reason, self.type, self.order, self.since))

    def matches(self, letter: DeadLetter) -> bool:
        if self.reason is not None:
            wanted = self.reason.lower()
            if wanted != letter.category.lower() and wanted not in letter.reason.lower():
                return False
        if self.type is not None and letter.type != self.type:
            return False
        if self.order is not None and letter.order_id != self.order:
            return False
        if self.since is not None:
            at = letter.dead_lettered
            if at is None or at < self.since:
                return False
        return True

    def select(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        return [letter for letter in letters if self.matches(letter)]


def group_value(letter: DeadLetter, key: str) -> str | None:
    return {
        "service": letter.service,
        "category": letter.category,
        "reason": letter.reason,
        "type": letter.type,
        "order": letter.order_id,
    }[key]


def group_counts(letters: list[DeadLetter], keys: tuple[str, ...]) -> list[dict[str, object]]:
    """One row per distinct combination of `keys`, the largest group first."""
    counts = Counter(tuple(group_value(letter, key) for key in keys) for letter in letters)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], [str(v) for v in item[0]]))
    return [dict(zip(keys, values, strict=True)) | {"count": count} for values, count in ordered]


@dataclass
class ReplayPlan:
    replay: list[DeadLetter] = field(default_factory=list)
    refused: list[tuple[DeadLetter, str]] = field(default_factory=list)
    left: list[DeadLetter] = field(default_factory=list)  # allowed, but past --max: stay for the next run


def plan_replay(
    letters: list[DeadLetter],
    *,
    now: datetime,
    window: timedelta,
    force: bool,
    max_replays: int,
    max_count: int | None,
) -> ReplayPlan:
    """Which of `letters` (in queue order) go back, which are refused and why, which wait past `max_count`."""
    plan = ReplayPlan()
    for letter in letters:
        if letter.replays >= max_replays:
            plan.refused.append(
                (
                    letter,
                    f"replayed {letter.replays} times already (limit {max_replays}) and dead-lettered again: "
                    "fix its cause first (`sagactl dlq show`), or raise --max-replays",
                )
            )
        elif letter.sent_at is not None and now - letter.sent_at > window and not force:
            # Its inbox record may be pruned: a replay could repeat an effect. Only with --force.
            plan.refused.append((letter, f"older than the {window} deduplication window (use --force)"))
        elif max_count is not None and len(plan.replay) >= max_count:
            plan.left.append(letter)
        else:
            plan.replay.append(letter)
    return plan
