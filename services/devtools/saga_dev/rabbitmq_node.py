"""One RabbitMQ node of the project's own, from Debian's `rabbitmq-server`: its name, ports, config and data
under one directory, started as a child process and stopped by its pid. The three-node cluster of the chaos
tier (`rabbit_cluster`) and the private broker of `make run` and the tests (`infra`) are made of these.

As root the node runs as the `rabbitmq` user with that user's home (every node and `rabbitmqctl` share the
Erlang cookie in `/var/lib/rabbitmq`); as anyone else it runs as the caller, with its cookie in its own directory.
The machine's own node (rabbit@host, /etc/rabbitmq) is never touched: each node has a config file of ours.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from saga_dev.probes import pid_alive, port_open

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # not /usr/sbin's wrapper, which refuses users but rabbitmq
CTL = "/usr/sbin/rabbitmqctl"
USER = "rabbitmq"
BOOT_TIMEOUT_S = 90.0


def rabbitmqctl(*args: str, node: str, timeout: float = 60, check: bool = True) -> str:
    """Run rabbitmqctl against one of our nodes (never the machine's default node: `-n` is mandatory)."""
    command = [CTL, "-n", node, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr or result.stdout}")
    return result.stdout


def short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def runs_as_rabbitmq_user() -> bool:
    return os.geteuid() == 0


@dataclass
class RabbitNode:
    index: int
    name: str  # sname@host
    amqp_port: int
    dist_port: int
    base: Path
    management_port: int | None = None  # the management plugin on 127.0.0.1, or none
    extra_config: list[str] = field(default_factory=list)
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
        home = pwd.getpwnam(USER).pw_dir if runs_as_rabbitmq_user() else str(self.base)
        return keep | {
            "HOME": home,  # the Erlang cookie lives there
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
        """Write the node's files (every start: the ports may have changed) and hand them to its user."""
        (self.base / "mnesia").mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        plugins = "[rabbitmq_management]" if self.management_port else "[]"
        (self.base / "enabled_plugins").write_text(f"{plugins}.\n")
        (self.base / "rabbitmq-env.conf").write_text(
            "# a node of the project's own: everything comes from the environment\n"
        )
        lines = [
            f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}",
            # A node cut off from the majority pauses instead of serving a split brain.
            "cluster_partition_handling = pause_minority",
            "log.console = false",
            "log.file.level = info",
        ]
        if self.management_port:
            # Loopback only. (With the plugin off, these lines would stop the node from booting.)
            lines += ["management.tcp.ip = 127.0.0.1", f"management.tcp.port = {self.management_port}"]
        (self.base / "rabbitmq.conf").write_text("\n".join([*lines, *self.extra_config, ""]))
        if runs_as_rabbitmq_user():
            user = pwd.getpwnam(USER)
            for path in [self.base, *self.base.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)

    def launch(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        log = (self.base / "stdout.log").open("ab")
        as_user = {"user": USER, "group": USER} if runs_as_rabbitmq_user() else {}
        self.process = subprocess.Popen(
            [SERVER],
            env=self.env(),
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C of the caller must not reach the node before its own teardown does
            **as_user,  # type: ignore[arg-type]
        )
        log.close()

    def ports(self) -> list[int]:
        return [self.amqp_port, *([self.management_port] if self.management_port else [])]

    def wait_listening(self, timeout: float = BOOT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"node {self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if all(port_open(port) for port in self.ports()):
                return
            time.sleep(0.2)
        raise TimeoutError(f"node {self.name} not listening on {self.ports()} after {timeout}s:\n{self.log_tail()}")

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
        while port_open(self.amqp_port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the Erlang VM (a clean stop, as `rabbitmqctl stop` makes, about 6 s); SIGKILL if it hangs."""
        pid = self.beam_pid()
        if pid is None or not pid_alive(pid) or not is_our_beam(pid, self.name):
            self._kill_leftovers()
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while is_our_beam(pid, self.name) and time.monotonic() < deadline:
            time.sleep(0.1)
            if self.process is not None:
                self.process.poll()  # reap it, or it stays a zombie
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        pid = self.beam_pid()
        if pid is not None and pid_alive(pid) and is_our_beam(pid, self.name):
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


def is_our_beam(pid: int, node_name: str) -> bool:
    """Only ever signal a live VM started for this node (its name is in its environment, not its command line)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return state != "Z" and f"RABBITMQ_NODENAME={node_name}".encode() in environ
