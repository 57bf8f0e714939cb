"""The order saga's transitions, including the late and repeated answers a broker can deliver."""

import pytest

from order_service import saga
from saga_common.contract.statuses import OrderStatus as S


def test_the_happy_path_and_the_compensation():
    assert saga.on_order_fulfilled(S.PENDING) == saga.Decision(S.FULFILLED)
    assert saga.on_cancel_request(S.FULFILLED) == saga.Decision(S.CANCELLING, release_reason="cancelled_by_client")
    assert saga.on_credit_released(S.CANCELLING) == saga.Decision(S.CANCELLED)


def test_rejection_keeps_its_reason():
    assert saga.on_order_rejected(S.PENDING, "insufficient_balance") == saga.Decision(
        S.REJECTED, reason="insufficient_balance"
    )


@pytest.mark.parametrize("status", [S.REJECTED, S.CANCELLED])
def test_a_reservation_for_an_order_nobody_wants_is_compensated(status):
    decision = saga.on_order_fulfilled(status)
    assert decision.compensate and decision.new_status is None


@pytest.mark.parametrize("status", [S.FULFILLED, S.CANCELLING])
def test_a_repeated_reservation_changes_nothing(status):
    assert not saga.on_order_fulfilled(status).changes_anything


@pytest.mark.parametrize("status", [S.FULFILLED, S.REJECTED, S.CANCELLING, S.CANCELLED])
def test_a_late_rejection_changes_nothing(status):
    assert not saga.on_order_rejected(status, "timeout").changes_anything


@pytest.mark.parametrize("status", [S.PENDING, S.FULFILLED, S.REJECTED, S.CANCELLED])
def test_a_release_only_completes_a_cancellation(status):
    assert not saga.on_credit_released(status).changes_anything


def test_a_pending_order_can_be_cancelled_and_its_release_is_sent_at_once():
    # The customer service serialises the release with the reservation: it releases one already made, or
    # refuses one that comes later; either way credit.released completes the cancellation.
    assert saga.on_cancel_request(S.PENDING) == saga.Decision(S.CANCELLING, release_reason="cancelled_by_client")
    assert not saga.on_order_fulfilled(S.CANCELLING).changes_anything  # the release already on its way covers it
    assert not saga.on_order_rejected(S.CANCELLING, "insufficient_balance").changes_anything
    assert saga.on_credit_released(S.CANCELLING) == saga.Decision(S.CANCELLED)


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (S.REJECTED, "rejected"),
        (S.CANCELLING, "already in progress"),
        (S.CANCELLED, "already cancelled"),
    ],
)
def test_an_order_whose_saga_is_over_cannot_be_cancelled_and_the_refusal_says_why(status, says):
    with pytest.raises(saga.CannotCancel, match=says):
        saga.on_cancel_request(status)


def test_the_deadline_ends_a_saga_still_waiting_for_its_first_answer():
    assert saga.on_deadline(S.PENDING) == saga.Decision(S.REJECTED, reason=saga.DEADLINE_REASON)
    # Cancelled while pending, release unconfirmed: cancelled (the sweep only picks never-fulfilled orders).
    assert saga.on_deadline(S.CANCELLING) == saga.Decision(S.CANCELLED)
    for status in (S.FULFILLED, S.REJECTED, S.CANCELLED):
        assert not saga.on_deadline(status).changes_anything


def test_an_operator_expires_only_a_pending_order_and_releases_what_it_may_hold():
    decision = saga.on_operator_expiry(S.PENDING)
    assert decision.new_status is S.REJECTED and decision.reason == saga.OPERATOR_EXPIRY_REASON
    assert decision.compensate
    with pytest.raises(saga.CannotAct, match="resend it instead"):
        saga.on_operator_expiry(S.CANCELLING)
    for status in (S.FULFILLED, S.REJECTED, S.CANCELLED):
        with pytest.raises(saga.CannotAct, match="saga is over"):
            saga.on_operator_expiry(status)
