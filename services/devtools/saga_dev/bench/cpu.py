"""CPU time (user + system) of every process a scenario runs on, read from /proc.

A process's figure is its own time, the time of its children it has reaped (`cutime`, `cstime`: the
postmaster reaps every backend that ends, so backends that came and went are counted) and the same for each
live child. Sampled at the start and at the end of the measured window; the difference is the window's CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # gone: whatever it used is in its parent's reaped-children time
    # After the parenthesised command name: field 3 (state) is index 0, so utime (14) is index 11.
    return text.rsplit(")", 1)[1].split()


def parent_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree_s(pid: int) -> float:
    """CPU seconds used by `pid`, its reaped children and its live descendants."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    live = sum(tree_s(child) for child in _children(pid))
    return sum(int(f) for f in fields[11:15]) / TICK + live


def own_s() -> float:
    """CPU seconds of this process alone (every thread; not its children, which are the services)."""
    times = os.times()
    return times.user + times.system


def listening_pid(port: int) -> int | None:
    """The process holding the listening TCP socket on `port` (this runs as root on the build machine; as
    another user, other users' sockets cannot be matched and the result is None)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{parts[9]}]")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def broker_pids(broker_urls: Iterable[str]) -> list[int]:
    """The Erlang VM (beam.smp) of each broker node the services use, found by its AMQP port."""
    pids = {listening_pid(urlsplit(url).port or 5672) for url in broker_urls}
    return sorted(pid for pid in pids if pid is not None)


class CpuMeter:
    """Named groups of process trees, plus this process (the load generator)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def sample(self) -> dict[str, float]:
        used = {name: sum(tree_s(pid) for pid in pids) for name, pids in self.groups.items()}
        used["load_generator"] = own_s()
        return used
