"""TLS on the broker and database hops, with verification on: a PostgreSQL (ssl=on) and a RabbitMQ node (an
AMQPS listener) of this module's own, their certificates signed by a CA the test makes (saga_dev.tls). The
services need no TLS code of their own: asyncpg takes `sslmode=verify-full&sslrootcert=...` in DATABASE_URL,
aio-pika `amqps://...?cafile=...` in RABBITMQ_BROKER_URL (docs/security.md#tls)."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import ssl
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from customer_service.settings import CustomerSettings
from saga_common.contract.topology import CUSTOMER_SERVICE
from saga_common.messaging.broker import Broker
from saga_common.persistence.db import create_pool
from saga_common.runtime import topology_from
from saga_dev.localstack import ServiceProcess
from saga_dev.postgres_server import SUPERUSER, PrivatePostgres
from saga_dev.probes import free_port, port_open
from saga_dev.rabbitmq_node import RabbitNode, short_hostname
from saga_dev.tls import Authority
from tests.support.waiting import TimedOut, eventually, wait_until


@dataclass
class TlsServers:
    postgres_port: int
    amqps_port: int
    ca: Path  # the CA that signed both servers' certificates
    other_ca: Path  # a CA that signed neither

    def database_url(self, database: str = "postgres", *, ca: Path | None = None, host: str = "127.0.0.1") -> str:
        root = ca or self.ca
        return f"postgresql://{SUPERUSER}@{host}:{self.postgres_port}/{database}?sslmode=verify-full&sslrootcert={root}"

    def broker_url(self, *, ca: Path | None = None) -> str:
        return f"amqps://guest:guest@127.0.0.1:{self.amqps_port}/?cafile={ca or self.ca}"


def _hand_to(user: str, *paths: Path) -> None:
    if os.geteuid() == 0:
        account = pwd.getpwnam(user)
        for path in paths:
            os.chown(path, account.pw_uid, account.pw_gid)


@pytest.fixture(scope="module")
def tls_servers() -> Iterator[TlsServers]:
    base = Path(tempfile.mkdtemp(prefix="saga-tls-", dir="/var/tmp"))
    base.chmod(0o755)  # the servers' own users must reach their folders
    authority = Authority.create("saga test CA")
    client = base / "client"
    client.mkdir()
    (client / "ca.pem").write_bytes(authority.pem)
    (client / "other-ca.pem").write_bytes(Authority.create("someone else's CA").pem)

    pg_tls = authority.write_server_files(base / "pg-tls", ["127.0.0.1"])
    _hand_to(SUPERUSER, pg_tls.ca.parent, pg_tls.ca, pg_tls.cert, pg_tls.key)
    postgres = PrivatePostgres(
        base / "pg",
        free_port(),
        settings=(("ssl", "on"), ("ssl_cert_file", str(pg_tls.cert)), ("ssl_key_file", str(pg_tls.key))),
    )
    amqps_port = free_port()
    node_base = base / "rabbit"
    rabbit_tls = authority.write_server_files(node_base / "tls", ["127.0.0.1"])
    node = RabbitNode(
        index=0,
        name=f"saga-tls-{uuid.uuid4().hex[:6]}@{short_hostname()}",
        amqp_port=free_port(),
        dist_port=free_port(),
        base=node_base,
        extra_config=[
            f"listeners.ssl.default = 127.0.0.1:{amqps_port}",
            f"ssl_options.cacertfile = {rabbit_tls.ca}",
            f"ssl_options.certfile = {rabbit_tls.cert}",
            f"ssl_options.keyfile = {rabbit_tls.key}",
            "ssl_options.verify = verify_none",
            "ssl_options.fail_if_no_peer_cert = false",
        ],
    )
    try:
        postgres.start()
        node.prepare()  # hands the node's folder, the certificates included, to the rabbitmq user
        node.launch()
        node.wait_listening()
        try:
            wait_until(lambda: port_open(amqps_port), timeout=30, interval=0.2, what="the AMQPS listener")
        except TimedOut as exc:
            raise AssertionError(f"{exc}\n{node.log_tail()}") from None
        yield TlsServers(postgres.port, amqps_port, client / "ca.pem", client / "other-ca.pem")
    finally:
        node.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_the_database_pool_connects_with_verify_full_and_the_hop_is_encrypted(tls_servers):
    settings = CustomerSettings(database_url=tls_servers.database_url())
    pool = await create_pool(settings)
    try:
        ssl_in_use = await pool.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await pool.close()
    assert ssl_in_use is True


@pytest.mark.parametrize(
    ("ca", "host", "why"),
    [("other", "127.0.0.1", "unable to get local issuer"), ("ours", "localhost", "Hostname mismatch")],
    ids=["untrusted-ca", "wrong-host-name"],
)
async def test_the_database_refuses_a_server_it_cannot_verify(tls_servers, ca, host, why):
    root = tls_servers.other_ca if ca == "other" else tls_servers.ca
    with pytest.raises(ssl.SSLCertVerificationError, match=why):
        await asyncpg.connect(tls_servers.database_url(ca=root, host=host), timeout=10)


async def test_the_broker_connects_over_amqps_with_verification_and_refuses_an_untrusted_ca(tls_servers, caplog):
    settings = CustomerSettings(rabbitmq_broker_url=tls_servers.broker_url())
    trusted = Broker(settings.broker_urls, topology_from(settings), prefetch=1, service=CUSTOMER_SERVICE)
    task = asyncio.create_task(trusted.run())
    try:
        await eventually(lambda: trusted.is_connected, interval=0.1, what="an AMQPS session with the trusted CA")
        # The topology was declared over it: the work queue exists.
        await trusted.session.publish_channel.declare_queue(f"{CUSTOMER_SERVICE}.events", passive=True)
    finally:
        await trusted.close()
        task.cancel()

    caplog.set_level(logging.WARNING, "saga_common.messaging.broker")
    untrusted = Broker([tls_servers.broker_url(ca=tls_servers.other_ca)], topology_from(settings), prefetch=1)
    task = asyncio.create_task(untrusted.run())
    try:
        await eventually(
            lambda: "certificate verify failed" in caplog.text.lower(), what="the refused handshake in the log"
        )
        assert not untrusted.is_connected
    finally:
        await untrusted.close()
        task.cancel()


def test_a_service_migrates_and_serves_over_tls_on_both_hops(tls_servers):
    database_url = tls_servers.database_url("customers")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")} | {"DATABASE_URL": database_url}
    migrated = subprocess.run(
        [sys.executable, "-m", "customer_service", "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    service = ServiceProcess("customer_service", database_url, tls_servers.broker_url())
    try:
        service.start()
        created = httpx.post(f"{service.base_url}/customers", json={"name": "tls", "balance": "10.00"}, timeout=10)
        assert created.status_code == 201, created.text
        ready = httpx.get(f"{service.base_url}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
    finally:
        service.stop()
