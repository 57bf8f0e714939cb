"""The tier can fail: a copy of the user's file with one service's environment or healthcheck broken makes
`docker compose up --wait` fail, on that service, while the rest of the stack is healthy."""

from __future__ import annotations

import pytest

from tests.support.compose import OVERRIDE, USER_FILE, busy_ports

# No --wait-timeout: the user's healthchecks decide, as for a user (5 s start period, then 30 failures 2 s
# apart make a service unhealthy, and `up --wait` fails).
ORDER_DATABASE = "DATABASE_URL: postgresql://postgres@postgres:5432/orders"
CUSTOMER_READYZ = "http://127.0.0.1:8002/readyz"

BREAKS = {
    # order-service's own DATABASE_URL (the second one: order-migrate's comes first) names a host that is not there
    "environment": ("order-service", lambda text: _replace_nth(text, ORDER_DATABASE, ORDER_DATABASE.replace(
        "@postgres:", "@postgress:"), 2)),
    "healthcheck": ("customer-service", lambda text: _replace_nth(text, CUSTOMER_READYZ, CUSTOMER_READYZ + "z", 1)),
}  # fmt: skip


def _replace_nth(text: str, old: str, new: str, nth: int) -> str:
    assert text.count(old) >= nth, f"{old!r} is not in docker/compose.yaml {nth} times any more"
    at = -1
    for _ in range(nth):
        at = text.index(old, at + 1)
    return text[:at] + new + text[at + len(old) :]


@pytest.mark.parametrize("broken", sorted(BREAKS))
def test_a_broken_compose_file_fails_up_wait(broken, new_compose, tmp_path):
    busy = busy_ports()
    if busy:
        pytest.fail(f"the compose stack needs these addresses, already in use on this machine: {', '.join(busy)}")
    service, breaking = BREAKS[broken]
    copy = tmp_path / "compose.yaml"
    copy.write_text(breaking(USER_FILE.read_text()))
    compose = new_compose(f"saga-compose-broken-{broken}", [copy, OVERRIDE])
    result = compose.run("up", "--build", "--wait", check=False, timeout=600)
    assert result.returncode != 0, f"up --wait succeeded with a broken {broken} in {service}"
    states = compose.states()
    assert states[service].get("Health") != "healthy", states[service]
    healthy = {name for name, state in states.items() if state.get("Health") == "healthy"}
    assert {"postgres", "rabbitmq"} <= healthy, f"the failure is not {service}'s alone: {states}"
