"""Errors that tell the truth, with the services as real processes: a database server that is full is a 503
to retry (not a 500), and JSON numbers that are not finite are a 422 naming the field (not a 500)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx

from saga_dev.localstack import SagaEnvironment, ServiceProcess, unique_name
from tests.support.waiting import TimedOut, eventually

ORDER = {"customer_id": 1, "product_id": 1, "quantity": 1, "total_price": "1.00"}


async def wait_until_alive(http: httpx.AsyncClient, service: ServiceProcess) -> None:
    async def alive() -> bool:
        return (await http.get(f"{service.base_url}/healthz")).status_code == 200

    try:
        await eventually(alive, timeout=30, interval=0.1, ignoring=(httpx.HTTPError,), what=f"{service.module} alive")
    except TimedOut as exc:
        raise AssertionError(f"{exc}\n{service.log_text()[-2000:]}") from None


async def test_a_database_server_that_is_full_is_a_503_to_retry_not_a_500(saga_env: SagaEnvironment):
    # "Too many clients" without exhausting the machine's PostgreSQL: a role whose connection limit the test
    # fills itself. The server refuses the service's connections with the same SQLSTATE (53300,
    # too_many_connections) as when max_connections is reached.
    role, password = unique_name("saga_full"), uuid.uuid4().hex
    admin = await asyncpg.connect(saga_env.databases.order_url)
    await admin.execute(f"CREATE ROLE \"{role}\" LOGIN CONNECTION LIMIT 2 PASSWORD '{password}'")
    await admin.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
    await admin.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    limited_url = saga_env.databases.order_url.replace("://postgres@", f"://{role}:{password}@", 1)
    assert limited_url != saga_env.databases.order_url
    # One connection for the pool (size 1) and one for the LISTEN connection, once the server has room.
    order = ServiceProcess("order_service", limited_url, saga_env.broker_url, extra_env={"SAGA_DB_POOL_SIZE": "1"})
    held = [await asyncpg.connect(limited_url) for _ in range(2)]
    try:
        await asyncio.to_thread(order.start, False)
        async with httpx.AsyncClient(timeout=30) as http:
            await wait_until_alive(http, order)
            full = [
                await http.post(f"{order.base_url}/orders/", json=ORDER, headers={"Idempotency-Key": "full"}),
                await http.get(f"{order.base_url}/orders/1"),
                await http.get(f"{order.base_url}/orders"),
            ]
            for connection in held:
                await connection.close()
            held = []
            # What a client told to retry does: the same request, with the same Idempotency-Key.
            retried = await eventually(
                lambda: http.post(f"{order.base_url}/orders/", json=ORDER, headers={"Idempotency-Key": "full"}),
                until=lambda answer: answer.status_code != 503,
                timeout=20,
                interval=0.2,
                what="the retried request answered once the server has room",
            )
    finally:
        for connection in held:
            await connection.close()
        order.stop()
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()
    log = order.log_text()
    for response in full:
        assert response.status_code == 503, f"{response.status_code} {response.text}"
        assert response.headers["retry-after"] == "1"
        assert "retry" in response.json()["detail"]
    assert "TooManyConnectionsError" in log, "the test must have met the server's refusal, not another failure"
    assert retried.status_code == 201, retried.text
    assert "Traceback" not in log


async def test_json_numbers_that_are_not_finite_get_a_422_naming_the_field(saga_env: SagaEnvironment):
    # Python's JSON parser accepts the literals NaN, Infinity and -Infinity; JSON itself cannot carry them.
    customer = saga_env.customer_service()
    order = saga_env.order_service()
    body = '{"customer_id": 1, "product_id": 1, "quantity": 1, "total_price": "1.00"'
    cases = [
        (order, "/orders/", body.replace('"1.00"', "NaN") + "}", "total_price"),
        (order, "/orders/", body.replace('"1.00"', "Infinity") + "}", "total_price"),
        (order, "/orders/", body.replace('"quantity": 1', '"quantity": -Infinity') + "}", "quantity"),
        (order, "/orders/", body.replace('"customer_id": 1', '"customer_id": NaN') + "}", "customer_id"),
        (order, "/orders/", body + ', "discount": NaN}', "discount"),
        # A missing field's error echoes the whole body, NaN inside it.
        (order, "/orders/", body.replace('"customer_id": 1, ', "").replace('"1.00"', "NaN") + "}", "customer_id"),
        (customer, "/customers", '{"name": "Nan", "balance": NaN}', "balance"),
        (customer, "/customers", '{"name": "Inf", "balance": Infinity}', "balance"),
        (customer, "/customers", '{"name": "-Inf", "balance": -Infinity}', "balance"),
    ]
    await asyncio.to_thread(customer.start)
    await asyncio.to_thread(order.start)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            answers = []
            for service, path, content, _ in cases:
                response = await http.post(
                    f"{service.base_url}{path}", content=content, headers={"content-type": "application/json"}
                )
                answers.append(response)
            orders_after = (await http.get(f"{order.base_url}/orders")).json()
            customers_after = (await http.get(f"{customer.base_url}/customers")).json()
    finally:
        order.stop()
        customer.stop()
    for (_, path, content, field), response in zip(cases, answers, strict=True):
        assert response.status_code == 422, f"{path} {content}: {response.status_code} {response.text}"
        fields = {str(part) for error in response.json()["detail"] for part in error["loc"]}
        assert field in fields, f"{content}: {response.text}"
    assert orders_after == [] and customers_after == []
