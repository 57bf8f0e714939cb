"""No 500 on any string input (issue 25, item 7), with the services as real processes: a NUL character
(PostgreSQL refuses U+0000 in text) or a lone surrogate (JSON's "\\ud800" escape decodes to one; it has no
UTF-8 encoding) in a JSON body field, a field's name, a query parameter or a header is a 4xx that says why,
and nothing is stored."""

from __future__ import annotations

import asyncio

import httpx

from saga_dev.localstack import SagaEnvironment, ServiceProcess

ORDER = '{"customer_id": 1, "product_id": 1, "quantity": 1, "total_price": "1.00"}'


async def raw_request(service: ServiceProcess, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """An HTTP/1.1 request written byte for byte (httpx refuses to send a NUL in a header)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1]), answer


async def test_nul_and_lone_surrogates_in_strings_are_a_422_not_a_500(saga_env: SagaEnvironment):
    customer = saga_env.customer_service()
    order = saga_env.order_service()
    # (service, path, JSON text as sent (the escapes are JSON's), the field the 422 must name, what it says)
    bodies = [
        (customer, "/customers", '{"name": "a\\u0000b", "balance": "1.00"}', "name", "NUL"),
        (customer, "/customers", '{"name": "\\ud800", "balance": "1.00"}', "name", "surrogate"),
        (customer, "/customers", '{"name": "ok \\udfff", "balance": "1.00"}', "name", "surrogate"),
        (customer, "/customers", '{"name": "ok", "balance": "\\ud800"}', "balance", ""),
        # A lone surrogate in a field's name: the JSON parser refuses the whole body.
        (customer, "/customers", '{"name": "ok", "balance": "1", "\\ud800": 1}', "body", "unicode"),
        (order, "/orders/", ORDER.replace('"1.00"', '"\\u0000"'), "total_price", ""),
        (order, "/orders/", ORDER.replace('"1.00"', '"\\ud83d"'), "total_price", ""),
        (order, "/orders/", ORDER.replace("}", ', "status": "pending\\u0000"}'), "status", ""),
        (order, "/orders/", ORDER.replace("}", ', "\\udc80\\u0000": "x"}'), "body", "unicode"),
        (order, "/orders/", ORDER.replace("}", ', "x\\u0000": "x"}'), "x\x00", ""),
    ]
    queries = [
        (order, "/orders?status=%00", "status"),
        (order, "/orders?status=%ED%A0%80", "status"),
        (order, "/orders?customer_id=1%00", "customer_id"),
        (order, "/orders/1?wait=%ED%A0%80", "wait"),
        (customer, "/customers?limit=%00", "limit"),
        (customer, "/customers/1/reservations?before_id=%ED%A0%80", "before_id"),
    ]
    await asyncio.to_thread(customer.start)
    await asyncio.to_thread(order.start)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            body_answers = [
                await http.post(
                    f"{service.base_url}{path}", content=content, headers={"content-type": "application/json"}
                )
                for service, path, content, _, _ in bodies
            ]
            query_answers = [await http.get(f"{service.base_url}{path}") for service, path, _ in queries]
            # A NUL byte in the Idempotency-Key header: the HTTP parser's 400, or the API's 422; never a 500.
            nul_key, nul_answer = await raw_request(
                order,
                b"POST /orders/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: a\x00b\r\n",
                ORDER.encode(),
            )
            # Bytes that are UTF-8 for a surrogate (ED A0 80) and Latin-1 text: an ordinary key, accepted.
            odd_key, odd_answer = await raw_request(
                order,
                b"POST /orders/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Idempotency-Key: \xed\xa0\x80-\xff\r\n",
                ORDER.encode(),
            )
            customers_after = (await http.get(f"{customer.base_url}/customers")).json()
    finally:
        order.stop()
        customer.stop()
    for (_, path, content, field, says), response in zip(bodies, body_answers, strict=True):
        assert response.status_code == 422, f"{path} {content}: {response.status_code} {response.text}"
        errors = response.json()["detail"]
        assert field in {str(part) for error in errors for part in error["loc"]}, f"{content}: {response.text}"
        assert says in " ".join(error["msg"] for error in errors), f"{content}: {response.text}"
    for (_, path, field), response in zip(queries, query_answers, strict=True):
        assert response.status_code == 422, f"{path}: {response.status_code} {response.text}"
        assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}, response.text
    assert nul_key in {400, 422}, nul_answer.decode("latin-1")
    assert odd_key == 201, odd_answer.decode("latin-1")
    assert customers_after == []
    for service in (order, customer):
        assert "Traceback" not in service.log_text(), service.log_tail()
