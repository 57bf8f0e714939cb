"""A real three-node RabbitMQ cluster on this machine, from Debian's `rabbitmq-server`, for the chaos tier
and the benchmark.

Each node gets its own name, AMQP and distribution ports, config and data directories under one temporary
directory owned by the `rabbitmq` user; all share `/var/lib/rabbitmq/.erlang.cookie` (the Debian wrapper runs
everything as `rabbitmq`, whose home holds it). The machine's own node (rabbit@localhost, 5672) is never
touched: its config file (which pins a listener on 5672) is replaced per node by one of ours.

    cluster = RabbitCluster.start()        # boots 3 nodes in parallel, joins 2 and 3 to 1, waits
    cluster.kill(1)                         # kill -9 of node 1's Erlang VM
    cluster.restart(1)                      # same name, same data: it rejoins
    cluster.leaders(vhost)                  # {queue: (leader, members, online)}
    cluster.stop()                          # rabbitmqctl stop, then SIGKILL of whatever is left

A run directory holds the pid of the pytest process that owns it; a later run stops the nodes of a run whose
owner is gone (a pytest that was itself killed), so leftovers never pile up.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

RUN_DIR_PREFIX = "saga-chaos-rabbit-"
NODE_PREFIX = "sagachaos"
SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/sbin/rabbitmqctl"
USER = "rabbitmq"
BOOT_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rabbitmqctl(*args: str, node: str, timeout: float = 60, check: bool = True) -> str:
    """Run rabbitmqctl against one of our nodes (never the machine's default node: `-n` is mandatory)."""
    command = [CTL, "-n", node, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr or result.stdout}")
    return result.stdout


@dataclass
class RabbitNode:
    index: int
    name: str
    amqp_port: int
    dist_port: int
    base: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.base / "rabbit.pid"

    @property
    def log_dir(self) -> Path:
        return self.base / "log"

    def beam_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return keep | {
            "HOME": pwd.getpwnam(USER).pw_dir,  # the shared Erlang cookie lives there
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            # Not /etc/rabbitmq/rabbitmq-env.conf: it names the machine's node.
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def prepare(self) -> None:
        (self.base / "mnesia").mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("# the chaos tier's node: everything comes from the environment\n")
        (self.base / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}",
                    # A node cut off from the majority pauses instead of serving a split brain.
                    "cluster_partition_handling = pause_minority",
                    "log.console = false",
                    "log.file.level = info",
                    "",
                ]
            )
        )

    def launch(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        log = (self.base / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            [SERVER],
            env=self.env(),
            cwd=self.base,
            user=USER,
            group=USER,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C of pytest must not reach the nodes before our teardown does
        )
        log.close()

    def wait_listening(self, timeout: float = BOOT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"node {self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if _port_open(self.amqp_port):
                return
            time.sleep(0.2)
        raise TimeoutError(f"node {self.name} not listening on {self.amqp_port} after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """kill -9 of the Erlang VM: no goodbye to the cluster, no flush."""
        pid = self.beam_pid()
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        deadline = time.monotonic() + 10
        while _port_open(self.amqp_port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self._kill_leftovers()
            return
        try:
            rabbitmqctl("stop", node=self.name, timeout=30, check=False)
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            pass
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        pid = self.beam_pid()
        if pid is not None and pid_alive(pid) and _is_our_beam(pid, self.name):
            os.kill(pid, signal.SIGKILL)
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        texts = []
        for path in [self.base / "stdout.log", *sorted(self.log_dir.glob("*.log"))]:
            if path.exists():
                texts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(texts)


def _is_our_beam(pid: int, node_name: str) -> bool:
    """Only ever kill a VM whose command line names one of our nodes."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return node_name.split("@")[0] in cmdline and NODE_PREFIX in cmdline


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
        if shutil.which("rabbitmq-server") is None or not Path(SERVER).exists():
            raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        stop_orphaned_clusters()
        started = time.monotonic()
        base = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
        run_id = uuid.uuid4().hex[:6]
        host = socket.gethostname().split(".")[0]
        nodes = [
            RabbitNode(i, f"{NODE_PREFIX}{i}_{run_id}@{host}", _free_port(), _free_port(), base / f"node{i}")
            for i in range(1, size + 1)
        ]
        cluster = cls(nodes, base)
        (base / "owner.pid").write_text(str(os.getpid()))
        (base / "nodes.json").write_text(json.dumps([n.name for n in nodes]))
        for node in nodes:
            node.prepare()
        uid, gid = pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid
        for path in [base, *base.rglob("*")]:
            os.chown(path, uid, gid)
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
            if pid is not None and pid_alive(pid) and _is_our_beam(pid, name):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(run_dir, ignore_errors=True)
