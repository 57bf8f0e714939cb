"""The customer service's database as the integration tests read and seed it, straight through asyncpg."""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from tests.support.processes import sql
from tests.support.waiting import eventually

# A bug shipped in the customer service's database (every reservation fails), and its fix.
FAIL_RESERVATIONS = """
    CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'injected failure: reservations are read-only today'; END $$;
    CREATE TRIGGER injected_failure BEFORE INSERT ON reservations FOR EACH ROW EXECUTE FUNCTION injected_failure();
"""
FIX_RESERVATIONS = "DROP TRIGGER injected_failure ON reservations; DROP FUNCTION injected_failure();"


async def new_customer(saga_env, balance: str) -> int:
    query = "INSERT INTO customers (name, balance) VALUES ('t', $1) RETURNING id"
    (row,) = await sql(saga_env.databases.customer_url, query, Decimal(balance))
    return row["id"]


async def reservations_for(saga_env, order_id: int) -> list[asyncpg.Record]:
    return await sql(saga_env.databases.customer_url, "SELECT * FROM reservations WHERE order_id = $1", order_id)


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """`eventually` named after the predicate, for probes whose function name says what is awaited."""
    return await eventually(predicate, timeout=timeout, interval=interval, what=getattr(predicate, "__name__", ""))
