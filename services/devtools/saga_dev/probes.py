"""Small questions the harness asks of this machine: a free loopback port, whether something listens, whether a
process still runs. One place, for the private servers, the service processes, the node and the tiers."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs: it exists (signal 0 sends nothing) and is not a zombie waiting to
    be reaped, which a child we started and killed is until its parent waits for it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: it exists, as far as signal 0 can tell
    return state != "Z"
