"""Both services as real processes over a real PostgreSQL and RabbitMQ: every outcome of the saga."""

import asyncio
from decimal import Decimal

import pytest

from tests.support.saga_client import SEED_ORDER, TERMINAL, money_of


async def test_a_funded_order_is_fulfilled_and_the_balance_drops_by_its_price(saga):
    customer = await saga.create_customer("100.00")
    order = await saga.create_order(customer, "42.50")
    assert order["status"] == "pending"
    done = await saga.wait_for_status(order["id"], TERMINAL)
    assert done["status"] == "fulfilled" and done["rejection_reason"] is None
    assert done["completed_at"] is not None
    after = await saga.customer(customer)
    assert Decimal(after["balance"]) == Decimal("57.50")
    assert Decimal(after["reserved"]) == Decimal("42.50")


async def test_an_unfunded_order_is_rejected_for_insufficient_balance(saga):
    customer = await saga.create_customer("10.00")
    order = await saga.create_order(customer, "10.01")
    done = await saga.wait_for_status(order["id"], TERMINAL)
    assert (done["status"], done["rejection_reason"]) == ("rejected", "insufficient_balance")
    assert Decimal((await saga.customer(customer))["balance"]) == Decimal("10.00")


async def test_an_unknown_customer_is_rejected_as_such(saga):
    order = await saga.create_order(987654321, "1.00")
    done = await saga.wait_for_status(order["id"], TERMINAL)
    assert (done["status"], done["rejection_reason"]) == ("rejected", "unknown_customer")


async def test_cancelling_a_fulfilled_order_restores_the_balance(saga, http):
    customer = await saga.create_customer("80.00")
    order = await saga.create_order(customer, "30.00")
    await saga.wait_for_status(order["id"], {"fulfilled"})
    response = await saga.cancel(order["id"])
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelling"
    done = await saga.wait_for_status(order["id"], {"cancelled"})
    assert done["status"] == "cancelled"
    after = await saga.customer(customer)
    assert Decimal(after["balance"]) == Decimal("80.00") and Decimal(after["reserved"]) == 0
    reservations = (await http.get(f"{saga.customer_url}/customers/{customer}/reservations")).json()
    assert [(r["order_id"], r["status"]) for r in reservations] == [(order["id"], "released")]
    again = await saga.cancel(order["id"])
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


async def test_cancel_is_refused_with_a_reason_unless_the_order_is_fulfilled(saga):
    customer = await saga.create_customer("1.00")
    order = await saga.create_order(customer, "5.00")
    await saga.wait_for_status(order["id"], {"rejected"})
    response = await saga.cancel(order["id"])
    assert response.status_code == 409
    assert "rejected" in response.json()["detail"]
    assert (await saga.cancel(999999999)).status_code == 404


async def test_the_seed_request_works_as_written(saga, http):
    customer = await saga.create_customer("1000.00")
    response = await http.post(f"{saga.order_url}/orders/", json=SEED_ORDER | {"customer_id": customer})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "pending" and body["total_price"] == "50.00" and body["quantity"] == 1
    assert response.headers["location"] == f"/orders/{body['id']}"
    assert (await saga.wait_for_status(body["id"], TERMINAL))["status"] == "fulfilled"
    info = (await http.get(f"{saga.order_url}/")).json()
    assert info["service"] == "order-service"
    assert (await http.get(f"{saga.order_url}/healthz")).status_code == 200
    ready = await http.get(f"{saga.order_url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "database": True,
        "broker": True,
        "schema": True,
        "consumer": True,
        "outbox_relay": True,
    }


async def test_an_idempotency_key_returns_the_same_order_and_refuses_another_body(saga, http):
    customer = await saga.create_customer("100.00")
    body = {"customer_id": customer, "product_id": 1, "quantity": 1, "total_price": "10.00"}
    headers = {"Idempotency-Key": f"key-{customer}"}
    first = await http.post(f"{saga.order_url}/orders/", json=body, headers=headers)
    second = await http.post(f"{saga.order_url}/orders/", json=body | {"total_price": 10.0}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers.get("idempotent-replayed") == "true"
    other = await http.post(f"{saga.order_url}/orders/", json=body | {"quantity": 2}, headers=headers)
    assert other.status_code == 409 and "different request body" in other.json()["detail"]
    await saga.wait_for_status(first.json()["id"], TERMINAL)
    # One saga only: one reservation, one debit.
    assert Decimal((await saga.customer(customer))["balance"]) == Decimal("90.00")
    listed = (await http.get(f"{saga.order_url}/orders", params={"customer_id": customer})).json()
    assert len(listed) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (SEED_ORDER | {"status": "fulfilled"}, "status"),
        (SEED_ORDER | {"quantity": 0}, "quantity"),
        (SEED_ORDER | {"total_price": 0}, "total_price"),
        (SEED_ORDER | {"total_price": "1.999"}, "total_price"),
        (SEED_ORDER | {"customer_id": -4}, "customer_id"),
        ({"product_id": 1}, "customer_id"),
    ],
)
async def test_bad_requests_get_a_422_that_names_the_field_and_create_nothing(saga, http, body, field):
    before = len((await http.get(f"{saga.order_url}/orders", params={"limit": 100})).json())
    response = await http.post(f"{saga.order_url}/orders/", json=body)
    assert response.status_code == 422
    assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}
    assert len((await http.get(f"{saga.order_url}/orders", params={"limit": 100})).json()) == before


async def test_reading_and_listing_orders(saga, http):
    assert (await http.get(f"{saga.order_url}/orders/123456789")).status_code == 404
    assert (await http.get(f"{saga.order_url}/orders", params={"limit": 101})).status_code == 422
    customer = await saga.create_customer("5.00")
    ids = [(await saga.create_order(customer, "1.00"))["id"] for _ in range(3)]
    for order_id in ids:
        await saga.wait_for_status(order_id, TERMINAL)
    page = (await http.get(f"{saga.order_url}/orders", params={"customer_id": customer, "limit": 2})).json()
    assert [o["id"] for o in page] == sorted(ids, reverse=True)[:2]
    rest = (
        await http.get(f"{saga.order_url}/orders", params={"customer_id": customer, "before_id": page[-1]["id"]})
    ).json()
    assert [o["id"] for o in rest] == [min(ids)]
    fulfilled = (
        await http.get(f"{saga.order_url}/orders", params={"customer_id": customer, "status": "fulfilled"})
    ).json()
    assert len(fulfilled) == 3


async def test_customers_api(saga, http):
    created = await http.post(f"{saga.customer_url}/customers", json={"name": "Dana", "balance": "250.00"})
    assert created.status_code == 201
    customer = created.json()
    assert customer["balance"] == "250.00" and customer["reserved"] == "0.00"
    assert (await http.post(f"{saga.customer_url}/customers", json={"name": "", "balance": "1"})).status_code == 422
    assert (await http.post(f"{saga.customer_url}/customers", json={"name": "x", "balance": "-1"})).status_code == 422
    assert (await http.get(f"{saga.customer_url}/customers/999999999")).status_code == 404
    assert (await http.get(f"{saga.customer_url}/customers/999999999/reservations")).status_code == 404
    listed = (await http.get(f"{saga.customer_url}/customers", params={"limit": 5})).json()
    assert customer["id"] in [c["id"] for c in listed]


async def test_concurrent_orders_never_overdraw_and_money_is_conserved(saga, saga_env_module):
    """100 orders at once against a customer whose balance covers 37 of them."""
    price, affordable, total = Decimal("3.00"), 37, 100
    customer = await saga.create_customer(price * affordable + Decimal("1.50"))
    start = await money_of(saga_env_module.databases.customer_url, [customer])

    orders = await asyncio.gather(*(saga.create_order(customer, price) for _ in range(total)))
    outcomes = await asyncio.gather(*(saga.wait_for_status(o["id"], TERMINAL, timeout=60) for o in orders))

    statuses = [o["status"] for o in outcomes]
    assert statuses.count("fulfilled") == affordable
    assert statuses.count("rejected") == total - affordable
    assert {o["rejection_reason"] for o in outcomes if o["status"] == "rejected"} == {"insufficient_balance"}
    end = await money_of(saga_env_module.databases.customer_url, [customer])
    assert end["min_balance"] >= 0
    assert end["balance"] == Decimal("1.50")
    assert end["total"] == start["total"], "balance + active reservations must equal the starting balance"
