"""The order service's API as sagactl uses it: read an order and its saga, list sagas, act on one.

Every failure is an `OrderApiError` whose message says what to fix (the URL, the token's scope), never a
traceback; a 409 keeps the service's own explanation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx

PAGE_SIZE = 100  # the API's largest page
ACTIONS = {"cancel": "cancel", "expire": "expire", "resend": "resend"}  # sagactl's verb -> the API's route
SCOPE_FOR = {"cancel": "orders:cancel", "expire": "orders:operate", "resend": "orders:operate"}


class OrderApiError(Exception):
    pass


class OrderApi:
    def __init__(self, base_url: str, token: str | None, *, timeout_s: float = 10.0) -> None:
        self.base = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.base, timeout=timeout_s, headers=headers)

    async def __aenter__(self) -> OrderApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def order(self, order_id: int) -> dict[str, Any]:
        return await self._call("GET", f"/orders/{order_id}", scope="orders:read", order_id=order_id)

    async def saga(self, order_id: int) -> dict[str, Any]:
        return await self._call("GET", f"/orders/{order_id}/saga", scope="orders:read", order_id=order_id)

    async def act(self, order_id: int, action: str) -> dict[str, Any]:
        """cancel, expire or resend one saga; the order (or, for resend, the id sent again)."""
        path = f"/orders/{order_id}/{ACTIONS[action]}"
        return await self._call("POST", path, scope=SCOPE_FOR[action], order_id=order_id)

    async def orders(
        self,
        *,
        status: str,
        customer_id: int | None,
        created_before: datetime | None,
        limit: int,
    ) -> AsyncIterator[dict[str, Any]]:
        """Orders in `status`, newest first, at most `limit`, page by page (ids below the last one seen)."""
        params: dict[str, Any] = {"status": status, "limit": min(PAGE_SIZE, limit)}
        if customer_id is not None:
            params["customer_id"] = customer_id
        if created_before is not None:
            params["created_before"] = created_before.isoformat()
        seen = 0
        while seen < limit:
            page = await self._call("GET", "/orders", scope="orders:read", params=params)
            for order in page[: limit - seen]:
                yield order
            seen += len(page)
            if len(page) < params["limit"]:
                return
            params["before_id"] = page[-1]["id"]

    async def _call(
        self, method: str, path: str, *, scope: str, order_id: int | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        try:
            answer = await self._http.request(method, path, params=params)
        except httpx.HTTPError as exc:
            raise OrderApiError(
                f"cannot reach the order service at {self.base} ({exc}); set ORDER_SERVICE_URL"
            ) from None
        if answer.status_code == 404 and order_id is not None:
            raise OrderApiError(f"order {order_id} not found at {self.base}")
        if answer.status_code in (401, 403):
            raise OrderApiError(
                f"the order service refused the request ({answer.status_code}: {_detail(answer)}); "
                f"set SAGACTL_TOKEN to a token with the {scope} scope"
            )
        if answer.status_code == 409:
            raise OrderApiError(_detail(answer))
        if answer.is_error:
            raise OrderApiError(f"{method} {path} answered {answer.status_code}: {_detail(answer)}")
        return answer.json()


def _detail(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("detail"))
    except ValueError:
        return answer.text[:200]
