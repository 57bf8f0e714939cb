"""PostgreSQL and RabbitMQ for a machine that runs neither: what `make run` and the tests start when needed.

For each URL: when something answers there, it is used as it is (a developer's own servers, a compose stack, a
port-forward) and never stopped. When nothing answers and the URL names this machine, a private server is
started at that address and port, with its data in a directory of its own that is kept between runs (initdb
once; the broker's definitions survive), and `stop()` stops it.

    infra = LocalInfrastructure.ensure(postgres_url, rabbitmq_url, home=Path(".saga"), node_name="saga-dev")
    ...                                   # infra.started() says what was started, for a banner
    infra.stop()

The directory records the pid of the process that started its servers; a later `ensure` on the same directory
stops the servers of an owner that is gone (killed with -9), then starts afresh.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from saga_dev.postgres_server import PrivatePostgres
from saga_dev.probes import free_port, pid_alive, port_open
from saga_dev.rabbitmq_node import SERVER, RabbitNode, short_hostname
from saga_dev.system_packages import fix_for, missing

LOOPBACK_NAMES = {"localhost": "127.0.0.1", "ip6-localhost": "127.0.0.1"}


def _address(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    return LOOPBACK_NAMES.get(host, host), parts.port or default_port


def _on_this_machine(host: str) -> bool:
    return host.startswith("127.")


@dataclass
class LocalInfrastructure:
    home: Path
    node_name: str
    postgres: PrivatePostgres | None = None  # set when we started it
    rabbitmq: RabbitNode | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def owner_file(self) -> Path:
        return self.home / "owner.pid"

    @classmethod
    def ensure(
        cls,
        postgres_url: str,
        rabbitmq_url: str,
        *,
        home: Path,
        node_name: str,
        management_port: int | None = None,
        install: Callable[[list[str]], None] | None = None,
        log: Callable[[str], None] = print,
    ) -> LocalInfrastructure:
        """Start what does not answer. `install` is given the missing Debian packages (`make run` installs
        them as root); without it, a missing server is an error naming the fix."""
        infra = cls(home.resolve(), node_name)
        infra.stop_orphans(log)
        pg_host, pg_port = _address(postgres_url, 5432)
        mq_host, mq_port = _address(rabbitmq_url, 5672)
        need_postgres = not port_open(pg_port, pg_host)
        need_rabbitmq = not port_open(mq_port, mq_host)
        for needed, host, what in ((need_postgres, pg_host, "PostgreSQL"), (need_rabbitmq, mq_host, "RabbitMQ")):
            if needed and not _on_this_machine(host):
                raise RuntimeError(f"{what} does not answer at {host}, and a private one can only run on this machine")
        packages = [
            name for name, needed in (("postgresql", need_postgres), ("rabbitmq-server", need_rabbitmq)) if needed
        ]
        absent = [p.name for p in missing("run", packages)]
        if absent:
            if install is None:
                raise RuntimeError(f"nothing answers and {', '.join(absent)} is not installed: {fix_for(*absent)}")
            install(absent)
        try:
            if need_postgres:
                infra._start_postgres(pg_port, log)
            if need_rabbitmq:
                infra._start_rabbitmq(rabbitmq_url, mq_port, management_port, log)
        except BaseException:
            infra.stop()
            raise
        return infra

    def _claim(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.owner_file.write_text(str(os.getpid()))

    def _start_postgres(self, port: int, log: Callable[[str], None]) -> None:
        self._claim()
        postgres = PrivatePostgres(self.home / "postgres", port)
        fresh = not postgres.initialised()
        started = time.monotonic()
        postgres.start()
        self.postgres = postgres
        what = "initialised and started" if fresh else "started"
        self.notes.append(f"PostgreSQL on 127.0.0.1:{port}: private, data in {postgres.data}")
        log(f"PostgreSQL {what} on 127.0.0.1:{port} in {time.monotonic() - started:.1f} s (data in {postgres.data})")

    def _start_rabbitmq(self, url: str, port: int, management_port: int | None, log: Callable[[str], None]) -> None:
        if not Path(SERVER).exists():
            raise RuntimeError(f"rabbitmq-server is not installed: {fix_for('rabbitmq-server')}")
        self._claim()
        parts = urlsplit(url)
        first_boot = []  # read on the node's first boot only (a fresh database): the URL's user and vhost
        if parts.username:
            first_boot += [
                f"default_user = {unquote(parts.username)}",
                f"default_pass = {unquote(parts.password or '')}",
            ]
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else ""
        if vhost:
            first_boot.append(f"default_vhost = {vhost}")
        node = RabbitNode(
            0,
            f"{self.node_name}@{short_hostname()}",
            port,
            free_port(),
            self.home / "rabbitmq",
            management_port=management_port,
            extra_config=first_boot,
        )
        started = time.monotonic()
        node.prepare()
        node.launch()
        self.rabbitmq = node
        node.wait_listening()
        self.notes.append(f"RabbitMQ on 127.0.0.1:{port}: private node {node.name}, data in {node.base}")
        log(f"RabbitMQ node {node.name} started on 127.0.0.1:{port} in {time.monotonic() - started:.1f} s")

    def started(self) -> list[str]:
        return list(self.notes)

    def stop(self) -> None:
        if self.rabbitmq is not None:
            self.rabbitmq.stop()
            self.rabbitmq = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        with contextlib.suppress(FileNotFoundError):
            self.owner_file.unlink()

    def stop_orphans(self, log: Callable[[str], None]) -> None:
        """Servers this directory's last owner started and did not stop (it was killed)."""
        try:
            owner = int(self.owner_file.read_text())
        except (OSError, ValueError):
            return
        if pid_alive(owner):
            return  # in use by a live owner: its servers answer, and are used as they are
        log(f"stopping the servers a process that is gone (pid {owner}) left in {self.home}")
        postgres = PrivatePostgres(self.home / "postgres", 0)
        if postgres.initialised():
            postgres.stop(mode="immediate")
        node = RabbitNode(0, f"{self.node_name}@{short_hostname()}", 0, 0, self.home / "rabbitmq")
        node.stop(timeout=15)
        self.owner_file.unlink()
