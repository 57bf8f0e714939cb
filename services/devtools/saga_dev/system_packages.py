"""The system packages `make run` and `make test` need, installed with apt-get when missing.

Standard library only: `make` runs it with the machine's Python before any virtualenv exists, and the tests
import `missing()` / `fix_for()` to name the fix when a tool is absent (never to install it themselves).

    python3 services/devtools/saga_dev/system_packages.py --for test     # what make test needs
    python3 services/devtools/saga_dev/system_packages.py --for run      # what make run needs
    python3 services/devtools/saga_dev/system_packages.py --for test --check   # report only, exit 1 if missing

Quick when everything is there (it looks for files, it does not ask dpkg). As root with apt-get it installs what
is missing and says why; otherwise it stops at once, naming every missing package and the command that installs it.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Package:
    name: str  # the Debian package
    why: str
    present: tuple[str, ...]  # glob patterns; the package is there when each matches a file
    needed_for: frozenset[str]


RUN = frozenset({"run", "test"})
TEST = frozenset({"test"})

PACKAGES = (
    Package(
        "postgresql",
        "a private PostgreSQL (initdb, pg_ctl) when none answers: make run, every tier with a database",
        ("/usr/lib/postgresql/*/bin/initdb", "/usr/lib/postgresql/*/bin/pg_ctl"),
        RUN,
    ),
    Package(
        "rabbitmq-server",
        "a private RabbitMQ node when none answers (make run, the tests), the chaos tier's three-node cluster, "
        "the chart tier's `erl`",
        ("/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/sbin/rabbitmqctl", "/usr/bin/erl"),
        RUN,
    ),
    Package(
        "prometheus",
        "the observability tier scrapes both services with a real Prometheus; promtool checks the alert rules",
        ("/usr/bin/prometheus", "/usr/bin/promtool"),
        TEST,
    ),
    Package(
        "docker.io",
        "the images, compose and cluster tiers build our images on a Docker Engine of the project's own",
        ("/usr/sbin/dockerd", "/usr/bin/docker"),
        TEST,
    ),
    # The cluster tier's single-node Kubernetes (services/devtools/saga_dev/node).
    Package(
        "libseccomp-dev",
        "the cluster tier builds runc with seccomp (cgo)",
        ("/usr/include/seccomp.h",),
        TEST,
    ),
    Package(
        "containernetworking-plugins",
        "the cluster tier's pod network: the bridge, host-local, portmap and loopback CNI plugins",
        ("/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/portmap", "/usr/lib/cni/loopback"),
        TEST,
    ),
    Package("conntrack", "kube-proxy clears stale UDP flows with it (cluster tier)", ("/usr/sbin/conntrack",), TEST),
    Package("ipset", "kube-router enforces NetworkPolicies with ipsets (cluster tier)", ("/usr/sbin/ipset",), TEST),
    Package("iptables", "kube-proxy and kube-router (cluster tier)", ("/usr/sbin/iptables",), TEST),
    Package("iproute2", "the cluster tier's network namespace and veth pair", ("/usr/sbin/ip",), TEST),
    Package("socat", "the cluster tier's API server, reached from the machine's loopback", ("/usr/bin/socat",), TEST),
    Package(
        "busybox-static",
        "the shell of the cluster tier's volume helper image (local-path-provisioner)",
        ("/bin/busybox",),
        TEST,
    ),
    Package("gcc", "the cluster tier's pause image (a static C program) and runc's cgo", ("/usr/bin/gcc",), TEST),
    Package(
        "debootstrap",
        "the local Debian base image for the images, compose and cluster tiers (no registry image can be pulled)",
        ("/usr/sbin/debootstrap",),
        TEST,
    ),
)


def is_present(package: Package) -> bool:
    return all(glob.glob(pattern) for pattern in package.present)


def missing(purpose: str = "test", names: list[str] | None = None) -> list[Package]:
    wanted = [p for p in PACKAGES if purpose in p.needed_for and (names is None or p.name in names)]
    return [p for p in wanted if not is_present(p)]


def install_command(packages: list[Package]) -> str:
    return "apt-get update && apt-get install -y --no-install-recommends " + " ".join(p.name for p in packages)


def fix_for(*names: str) -> str:
    """What a test says when a tool is absent: the command that installs it, and the make target that does."""
    packages = [p for p in PACKAGES if p.name in names]
    return f"run `make system-packages` (as root), or: {install_command(packages)}"


def _can_install() -> str | None:
    """None when this process can install, else why not."""
    if shutil.which("apt-get") is None:
        return "apt-get is not on PATH (this is not a Debian/Ubuntu machine)"
    if os.geteuid() != 0:
        return "installing system packages needs root"
    return None


def _apt_get(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def install(packages: list[Package], purpose: str) -> None:
    """Install `packages` with apt-get, saying why each is needed; without root or apt-get, raise naming them
    and the command that installs them."""
    reason = _can_install()
    if reason is not None:
        lines = [f"system packages for make {purpose}: missing, and {reason}:"]
        lines += [f"  {package.name:16} {package.why}" for package in packages]
        lines.append(f"Install them with:\n  sudo sh -c '{install_command(packages)}'")
        raise MissingPackages("\n".join(lines))
    for package in packages:
        print(f"installing {package.name}: {package.why}", flush=True)
    started = time.monotonic()
    _apt_get("update", "-qq")
    _apt_get("install", "-y", "-qq", "--no-install-recommends", *(p.name for p in packages))
    still = [p for p in packages if not is_present(p)]
    if still:
        raise MissingPackages(f"apt-get installed, but still missing: {', '.join(p.name for p in still)}")
    print(f"installed {', '.join(p.name for p in packages)} in {time.monotonic() - started:.0f} s", flush=True)


def install_named(names: list[str], purpose: str = "run") -> None:
    install([p for p in PACKAGES if p.name in names], purpose)


class MissingPackages(RuntimeError):
    pass


def ensure(purpose: str, check_only: bool = False) -> int:
    absent = missing(purpose)
    if not absent:
        print(f"system packages for make {purpose}: all present")
        return 0
    if check_only:
        print(f"system packages for make {purpose}: missing {', '.join(p.name for p in absent)}", file=sys.stderr)
        print(f"Install them with: {install_command(absent)}", file=sys.stderr)
        return 1
    try:
        install(absent, purpose)
    except MissingPackages as exc:
        print(exc, file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"apt-get failed ({exc.returncode}): {' '.join(exc.cmd)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="system_packages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--for", dest="purpose", choices=["run", "test"], default="test")
    parser.add_argument("--check", action="store_true", help="report what is missing, install nothing")
    args = parser.parse_args(argv)
    return ensure(args.purpose, check_only=args.check)


if __name__ == "__main__":
    sys.exit(main())
