"""The benchmark's CPU accounting finds what it claims to: the children a process reaped (the postmaster's
backends that came and went) and the process listening on a port (a broker node)."""

import os
import socket
import subprocess
import sys

from saga_dev.bench import cpu

# A child that burns CPU, prints its own user + system time, and exits; its parent reaps it and stays up.
CHILD = "import os; sum(range(10**7)); t = os.times(); print(t.user + t.system)"
PARENT = f"""
import subprocess, sys, time
used = subprocess.run([sys.executable, "-c", {CHILD!r}], capture_output=True, text=True, check=True).stdout
print(used.strip(), flush=True)
time.sleep(60)
"""


def test_a_process_tree_counts_the_children_it_has_reaped():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_cpu_s = float(parent.stdout.readline())
        assert child_cpu_s > 0
        assert cpu.tree_s(parent.pid) >= child_cpu_s  # the child is gone: only cutime/cstime hold its time
    finally:
        parent.kill()
        parent.wait(10)


def test_the_process_listening_on_a_port_is_found():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert cpu.listening_pid(listener.getsockname()[1]) == os.getpid()
