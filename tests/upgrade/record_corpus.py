"""Record the version 1 corpus: one body of every event type as release N's real services published it.

    flock /tmp/saga-tests.lock .venv/bin/python -m tests.upgrade.record_corpus

Release N (tests/upgrade/release.py) runs against a private environment on the tests' PostgreSQL and RabbitMQ:
an order fulfilled and then cancelled (order.created, order.fulfilled, order.cancelled, credit.released) and one
rejected (order.rejected). The bodies go byte for byte to tests/unit/data/contract-v1/<type>.json, which the
unit tier decodes and the integration tier applies (tests/unit/test_contract_compat.py,
tests/integration/test_message_versions.py). Recorded once; re-recording changes the ids, nothing else.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from saga_dev.localstack import Databases, SagaEnvironment, Vhost, local_servers, unique_name
from tests.support.broker import broker_tool
from tests.support.processes import Saga
from tests.upgrade.release import Release, revision_before_v2

CORPUS = Path(__file__).resolve().parents[1] / "unit" / "data" / "contract-v1"
TYPES = ("order.created", "order.fulfilled", "order.rejected", "order.cancelled", "credit.released")


async def record(release: Release, env: SagaEnvironment) -> dict[str, bytes]:
    async with broker_tool(env.broker_url) as broker, broker.capture(*TYPES) as capture:
        async with Saga(env, order_env=release.env(), customer_env=release.env()) as (_, client):
            rich = await client.create_customer("100.00")
            poor = await client.create_customer("1.00")
            fulfilled = await client.create_order(rich, "25.50")
            await client.wait_for_status(fulfilled["id"], {"fulfilled"})
            rejected = await client.create_order(poor, "9.99")
            await client.wait_for_status(rejected["id"], {"rejected"})
            assert (await client.cancel(fulfilled["id"])).status_code in (200, 202)
            await client.wait_for_status(fulfilled["id"], {"cancelled"})
            await capture.settle(1.0)
    bodies = {message.type or "": message.body for message in capture.messages}
    assert set(bodies) == set(TYPES), sorted(bodies)
    return bodies


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        release = Release.build(revision_before_v2(), Path(scratch) / "release-n")
        home = Path(os.environ.get("SAGA_TEST_INFRA_HOME", "/var/tmp/saga-test-infra"))
        with local_servers(home=home, node_name="saga-test", log=print):
            databases = Databases.fresh("sagacorpus")
            release.run("order_service", "migrate", env={"DATABASE_URL": databases.order_url})
            release.run("customer_service", "migrate", env={"DATABASE_URL": databases.customer_url})
            env = SagaEnvironment(databases, Vhost(unique_name("saga-corpus")).create())
            try:
                bodies = asyncio.run(record(release, env))
            finally:
                env.destroy()
    CORPUS.mkdir(parents=True, exist_ok=True)
    for event_type, body in bodies.items():
        (CORPUS / f"{event_type}.json").write_bytes(body + b"\n")
    print(f"recorded {len(bodies)} bodies of release {release.revision[:10]} in {CORPUS}")


if __name__ == "__main__":
    main()
