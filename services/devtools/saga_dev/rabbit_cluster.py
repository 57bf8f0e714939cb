"""A real three-node RabbitMQ cluster on this machine, from Debian's `rabbitmq-server`, for the chaos tier
and the benchmark.

Each node (`rabbitmq_node.RabbitNode`) gets its own name, AMQP and distribution ports, config and data
directories under one temporary directory; as root they run as the `rabbitmq` user and share its Erlang cookie.
No other node on the machine is touched.

    cluster = RabbitCluster.start()        # boots 3 nodes in parallel, joins 2 and 3 to 1, waits
    cluster.kill(1)                         # kill -9 of node 1's Erlang VM
    cluster.restart(1)                      # same name, same data: it rejoins
    cluster.leaders(vhost)                  # {queue: (leader, members, online)}
    cluster.stop()                          # SIGTERM to each node, then SIGKILL of whatever is left

A run directory holds the pid of the pytest process that owns it; a later run stops the nodes of a run whose
owner is gone (a pytest that was itself killed), so leftovers never pile up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from saga_dev.probes import free_port, pid_alive
from saga_dev.rabbitmq_node import (
    BOOT_TIMEOUT_S,
    SERVER,
    RabbitNode,
    is_our_beam,
    rabbitmqctl,
    short_hostname,
)
from saga_dev.system_packages import fix_for

RUN_DIR_PREFIX = "saga-chaos-rabbit-"
NODE_PREFIX = "sagachaos"


@dataclass
class RabbitCluster:
    nodes: list[RabbitNode]
    base: Path
    user: str = "guest"
    password: str = "guest"
    formed_in_s: float = 0.0
    vhosts: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, size: int = 3) -> RabbitCluster:
        if not Path(SERVER).exists():
            raise RuntimeError(f"rabbitmq-server is not installed: {fix_for('rabbitmq-server')}")
        stop_orphaned_clusters()
        started = time.monotonic()
        base = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
        run_id = uuid.uuid4().hex[:6]
        host = short_hostname()
        nodes = [
            RabbitNode(i, f"{NODE_PREFIX}{i}_{run_id}@{host}", free_port(), free_port(), base / f"node{i}")
            for i in range(1, size + 1)
        ]
        cluster = cls(nodes, base)
        (base / "owner.pid").write_text(str(os.getpid()))
        (base / "nodes.json").write_text(json.dumps([n.name for n in nodes]))
        for node in nodes:
            node.prepare()
        if os.geteuid() == 0:
            shutil.chown(base, "rabbitmq", "rabbitmq")
        try:
            for node in nodes:
                node.launch()
            for node in nodes:
                node.wait_listening()
            for node in nodes[1:]:
                rabbitmqctl("stop_app", node=node.name)
                rabbitmqctl("join_cluster", nodes[0].name, node=node.name)
                rabbitmqctl("start_app", node=node.name)
            cluster.wait_formed()
        except BaseException:
            cluster.stop()
            raise
        cluster.formed_in_s = time.monotonic() - started
        return cluster

    def wait_formed(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        wanted = {n.name for n in self.nodes}
        while True:
            running = self.running_nodes(self.nodes[0].name)
            if running >= wanted:
                for node in self.nodes:
                    node.wait_listening(max(1.0, deadline - time.monotonic()))
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not formed after {timeout}s: running {sorted(running)}")
            time.sleep(1)

    def running_nodes(self, via: str) -> set[str]:
        out = rabbitmqctl("cluster_status", "--formatter", "json", node=via, check=False)
        try:
            return set(json.loads(out).get("running_nodes", []))
        except ValueError:
            return set()

    def node(self, index: int) -> RabbitNode:
        return self.nodes[index - 1]

    def alive(self) -> list[RabbitNode]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def url(self, index: int, vhost: str = "/", port: int | None = None) -> str:
        node = self.node(index)
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{port or node.amqp_port}/{quote(vhost, safe='')}"

    def urls(self, vhost: str = "/") -> list[str]:
        return [self.url(n.index, vhost) for n in self.nodes]

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """rabbitmqctl through a node that is up."""
        alive = self.alive()
        if not alive:
            raise RuntimeError("no node of the chaos cluster is running")
        return rabbitmqctl(*args, node=alive[0].name, timeout=timeout)

    def add_vhost(self, name: str) -> str:
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, self.user, ".*", ".*", ".*")
        self.vhosts.append(name)
        return name

    def delete_vhost(self, name: str) -> None:
        with contextlib.suppress(RuntimeError):
            self.ctl("delete_vhost", name)

    def queues(self, vhost: str) -> dict[str, dict[str, object]]:
        """name -> {type, leader, members, online, messages, arguments} as the cluster sees it."""
        out = self.ctl(
            "list_queues",
            "-p",
            vhost,
            *("name", "type", "leader", "members", "online", "messages", "arguments"),
            "--formatter",
            "json",
        )
        rows = json.loads(out or "[]")
        for row in rows:  # [[key, type, value], ...] -> {key: value}
            row["arguments"] = {item[0]: item[-1] for item in row.get("arguments") or []}
        return {row["name"]: row for row in rows}

    def kill(self, index: int) -> None:
        self.node(index).kill()

    def restart(self, index: int, timeout: float = BOOT_TIMEOUT_S) -> None:
        node = self.node(index)
        node.launch()
        node.wait_listening(timeout)

    def index_of(self, node_name: str) -> int:
        for node in self.nodes:
            if node.name == node_name:
                return node.index
        raise KeyError(node_name)

    def stop(self) -> None:
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n.stop(), self.nodes))
        shutil.rmtree(self.base, ignore_errors=True)

    def memory_mb(self) -> float:
        total = 0
        for node in self.nodes:
            pid = node.beam_pid()
            if pid is None:
                continue
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024


def stop_orphaned_clusters() -> None:
    """Stop the nodes of earlier runs whose pytest died before its teardown (their owner pid is gone)."""
    for run_dir in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"):
        try:
            owner = int((run_dir / "owner.pid").read_text())
            names = json.loads((run_dir / "nodes.json").read_text())
        except (OSError, ValueError):
            continue
        if pid_alive(owner):
            continue
        for i, name in enumerate(names, start=1):
            node = RabbitNode(i, name, 0, 0, run_dir / f"node{i}")
            pid = node.beam_pid()
            if pid is not None and pid_alive(pid) and is_our_beam(pid, name):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(run_dir, ignore_errors=True)
