"""`Prefer: wait=N` (RFC 7240) as the order API reads it."""

import pytest

from order_service.api import preferred_wait
from order_service.waiters import MAX_WAIT_S

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("wait=5", 5),
        ("WAIT=5", 5),
        ("respond-async, wait=10", 10),
        ('wait="3"', 3),
        ("wait=0", 0),
        (f"wait={int(MAX_WAIT_S) * 100}", int(MAX_WAIT_S)),  # bounded like ?wait=
        ("handling=lenient; x=1, wait=2", 2),
    ],
)
def test_a_wait_preference_is_read_and_bounded(header, seconds):
    assert preferred_wait(header) == seconds


@pytest.mark.parametrize("header", [None, "", "respond-async", "wait=", "wait=-1", "wait=1.5", "wait=٣", "wait=abc"])
def test_anything_else_is_no_wait_preference(header):
    assert preferred_wait(header) is None
