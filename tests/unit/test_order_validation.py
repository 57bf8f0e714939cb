"""What the order API accepts: the seed's body as written, and a clear reason for everything else."""

from decimal import Decimal

import pytest
from pydantic import ValidationError

from order_service.schemas import OrderCreate

SEED = {"customer_id": 1, "product_id": 1, "status": "pending", "quantity": 1, "total_price": 50.0}


def test_the_seed_request_is_valid_and_money_is_decimal():
    order = OrderCreate.model_validate(SEED)
    assert order.total_price == Decimal("50")
    assert isinstance(order.total_price, Decimal)


@pytest.mark.parametrize("price", [50.0, "50.00", "0.01", 19.99, "9999999999.99"])
def test_price_as_number_or_string(price):
    assert OrderCreate.model_validate(SEED | {"total_price": price}).total_price == Decimal(str(price))


def test_status_is_optional():
    body = dict(SEED)
    del body["status"]
    assert OrderCreate.model_validate(body).status == "pending"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "fulfilled"}, "status"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"quantity": "2"}, "quantity"),
        ({"total_price": 0}, "total_price"),
        ({"total_price": -5}, "total_price"),
        ({"total_price": "50.001"}, "total_price"),
        ({"total_price": "NaN"}, "total_price"),
        ({"total_price": "Infinity"}, "total_price"),
        ({"total_price": "10000000000.00"}, "total_price"),
        ({"total_price": "abc"}, "total_price"),
        ({"customer_id": 0}, "customer_id"),
        ({"customer_id": -1}, "customer_id"),
        ({"customer_id": True}, "customer_id"),
        ({"customer_id": 2**63}, "customer_id"),
        ({"product_id": None}, "product_id"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_orders_name_the_field(change, field):
    with pytest.raises(ValidationError) as caught:
        OrderCreate.model_validate(SEED | change)
    assert field in {str(part) for error in caught.value.errors() for part in error["loc"]}


def test_same_body_same_fingerprint_whatever_the_json_spelling():
    a = OrderCreate.model_validate(SEED)
    for spelling in ("50.00", 50, "50.0"):
        b = OrderCreate.model_validate(SEED | {"total_price": spelling})
        assert a.fingerprint_source() == b.fingerprint_source()
    c = OrderCreate.model_validate(SEED | {"total_price": "50.01"})
    assert a.fingerprint_source() != c.fingerprint_source()
