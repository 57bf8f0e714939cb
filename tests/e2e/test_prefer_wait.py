"""`POST /orders/` with `Prefer: wait=N`: one request per saga for a client that wants the outcome."""

from tests.support.saga_client import TERMINAL


async def _post(saga, customer: int, price: str, **headers: str):
    body = {"customer_id": customer, "product_id": 7, "quantity": 1, "total_price": price}
    return await saga.http.post(f"{saga.order_url}/orders/", json=body, headers=headers, timeout=30)


async def test_prefer_wait_answers_with_the_outcome_and_says_so(saga):
    customer = await saga.create_customer("100.00")
    response = await _post(saga, customer, "40.00", Prefer="wait=20")
    assert response.status_code == 201, response.text
    assert response.headers["Preference-Applied"] == "wait=20"
    assert response.json()["status"] == "fulfilled"
    assert response.headers["Location"] == f"/orders/{response.json()['id']}"


async def test_a_rejection_is_an_outcome_too(saga):
    customer = await saga.create_customer("1.00")
    response = await _post(saga, customer, "40.00", Prefer="wait=20")
    assert (response.json()["status"], response.json()["rejection_reason"]) == ("rejected", "insufficient_balance")


async def test_without_the_header_nothing_changes(saga):
    customer = await saga.create_customer("100.00")
    response = await _post(saga, customer, "1.00")
    assert response.status_code == 201 and response.json()["status"] == "pending"
    assert "Preference-Applied" not in response.headers
    await saga.wait_for_status(response.json()["id"], TERMINAL)


async def test_a_replay_with_its_idempotency_key_honours_the_preference(saga):
    customer = await saga.create_customer("100.00")
    first = await _post(saga, customer, "2.00", **{"Idempotency-Key": "prefer-replay"})
    assert first.json()["status"] == "pending"
    replay = await _post(saga, customer, "2.00", **{"Idempotency-Key": "prefer-replay", "Prefer": "wait=20"})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Preference-Applied"] == "wait=20"
    assert (replay.json()["id"], replay.json()["status"]) == (first.json()["id"], "fulfilled")
