"""The project's own Docker Engine, for the images, compose and cluster tiers (its packages come from `make
system-packages`): started with a data-root, exec-root, pidfile and socket of its own (so it never meets another
daemon) and no bridge network (loopback is the only network here: every build and container runs with
`--network host`).

The data-root lives outside the checkout (SAGA_DOCKER_ROOT, default /var/lib/saga-docker) and is kept between
runs, so a second run finds its base images and build cache. When the official Python base cannot be pulled
(no registry), a local stand-in is made: debootstrap from the Debian mirror apt already uses, `docker import`,
then docker/local-base/python.Dockerfile.

By hand: `python -m saga_dev.docker_engine start|base|stop` (start prints the DOCKER_HOST to export).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from saga_dev.probes import pid_alive
from saga_dev.system_packages import fix_for, missing

ROOT = Path(os.environ.get("SAGA_REPO_ROOT", Path(__file__).resolve().parents[3]))
OFFICIAL_PYTHON_IMAGE = "python:3.11.13-slim-bookworm"
LOCAL_DEBIAN_IMAGE = "local/debian:bookworm"
LOCAL_PYTHON_IMAGE = "local/python:3.11-bookworm"
# Debian's engine; a newer client elsewhere on PATH may not speak to it.
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
ENGINE_PACKAGES = ["docker.io", "debootstrap"]
CA_SOURCE = Path("/usr/local/share/ca-certificates")


def log(message: str) -> None:
    print(f"[docker-engine] {message}", file=sys.stderr, flush=True)


def require_engine() -> None:
    """Debian's docker.io (Engine 20.10, containerd, runc) and debootstrap: `make system-packages` installs them."""
    absent = missing("test", ENGINE_PACKAGES)
    if absent:
        raise RuntimeError(f"{', '.join(p.name for p in absent)} not installed: {fix_for(*ENGINE_PACKAGES)}")


@dataclass
class DockerEngine:
    root: Path

    @classmethod
    def default(cls) -> DockerEngine:
        return cls(Path(os.environ.get("SAGA_DOCKER_ROOT", "/var/lib/saga-docker")))

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.root / "dockerd.pid"

    @property
    def env(self) -> dict[str, str]:
        """The environment for `docker` and `make images` against this engine, with the engine's own client."""
        return {**os.environ, "DOCKER_HOST": self.host, "PATH": f"/usr/bin:{os.environ['PATH']}"}

    def docker(self, *args: str, check: bool = True, capture: bool = True, timeout: float = 600) -> str:
        result = subprocess.run(
            [DOCKER, *args], env=self.env, capture_output=capture, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout if capture else ""

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        probe = subprocess.run([DOCKER, "version"], env=self.env, capture_output=True, timeout=10, check=False)
        return probe.returncode == 0

    def start(self) -> bool:
        """Start the daemon unless it answers already; True when this call started it (the caller stops it)."""
        require_engine()
        if self.running():
            return False
        self._stop_stale()
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "exec").mkdir(parents=True, exist_ok=True)
        log(f"starting dockerd (data-root {self.root / 'data'}, no bridge)")
        with (self.root / "dockerd.log").open("ab") as out:
            subprocess.Popen(
                [
                    DOCKERD,
                    f"--data-root={self.root / 'data'}",
                    f"--exec-root={self.root / 'exec'}",
                    f"--pidfile={self.pidfile}",
                    f"--host={self.host}",
                    "--bridge=none",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--ip-forward=false",
                    "--ip-masq=false",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not self.running():
            if time.monotonic() > deadline:
                tail = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"dockerd did not answer on {self.socket} within 60 s:\n{tail}")
            time.sleep(0.2)
        return True

    def stop(self) -> None:
        pid = self._pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.2)

    def _pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _stop_stale(self) -> None:
        """A daemon of ours that no longer answers (killed test run): end it before starting a new one."""
        pid = self._pid()
        if pid is not None and pid_alive(pid):
            self.stop()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    # ------------------------------------------------------------------------------------------------------
    # images

    def has_image(self, ref: str) -> bool:
        return bool(self.docker("images", "--quiet", ref).strip())

    def python_base(self) -> str:
        """The PYTHON_IMAGE our Dockerfiles build on: the official one when it can be pulled, else a local one."""
        if self.has_image(OFFICIAL_PYTHON_IMAGE):
            return OFFICIAL_PYTHON_IMAGE
        try:
            self.docker("pull", OFFICIAL_PYTHON_IMAGE, timeout=120)
            return OFFICIAL_PYTHON_IMAGE
        except (RuntimeError, subprocess.TimeoutExpired):
            log(f"{OFFICIAL_PYTHON_IMAGE} cannot be pulled here: using the local base {LOCAL_PYTHON_IMAGE}")
        self.build_local_python()
        return LOCAL_PYTHON_IMAGE

    def build_local_debian(self) -> None:
        if self.has_image(LOCAL_DEBIAN_IMAGE):
            return
        mirror = debian_mirror()
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            rootfs = Path(tmp) / "rootfs"
            log("debootstrap --variant=minbase bookworm from apt's own mirror (25-55 s)")
            subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            # debootstrap leaves the packages it downloaded and apt's lists behind: 80 MB nobody runs.
            for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / leftovers).glob("*"):
                    if path.is_file():
                        path.unlink()
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run([DOCKER, "import", "-", LOCAL_DEBIAN_IMAGE], stdin=tar.stdout, env=self.env, check=True)
            if tar.wait() != 0:
                raise RuntimeError("tar of the debootstrap root filesystem failed")
        log(f"{LOCAL_DEBIAN_IMAGE} made in {time.monotonic() - started:.0f} s")

    def build_local_python(self) -> None:
        if self.has_image(LOCAL_PYTHON_IMAGE):
            return
        self.build_local_debian()
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as context:
            certificates = Path(context) / "ca-certificates"
            certificates.mkdir()
            for certificate in CA_SOURCE.glob("*.crt"):
                shutil.copy(certificate, certificates)
            shutil.copy(ROOT / "docker" / "local-base" / "python.Dockerfile", Path(context) / "Dockerfile")
            self.docker(
                "build",
                "--network=host",
                "--build-arg",
                f"DEBIAN_IMAGE={LOCAL_DEBIAN_IMAGE}",
                "--tag",
                LOCAL_PYTHON_IMAGE,
                context,
                timeout=900,
            )
        log(f"{LOCAL_PYTHON_IMAGE} built in {time.monotonic() - started:.0f} s")


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 sources first, then sources.list)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        uris = suites = None
        for line in path.read_text().splitlines():
            if line.startswith("URIs:"):
                uris = line.split()[1]
            elif line.startswith("Suites:"):
                suites = line.split()[1:]
            elif not line.strip():
                if uris and suites and "bookworm" in suites:
                    return uris
                uris = suites = None
        if uris and suites and "bookworm" in suites:
            return uris
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == "bookworm":
                return next(p for p in parts[1:] if "://" in p)
    raise RuntimeError("no Debian bookworm mirror in apt's sources: cannot debootstrap a base image")


def main(argv: list[str]) -> int:
    engine = DockerEngine.default()
    match argv:
        case ["start"]:
            engine.start()
            print(f"export DOCKER_HOST={engine.host}")
        case ["base"]:
            engine.start()
            print(engine.python_base())
        case ["stop"]:
            engine.stop()
        case _:
            print("usage: python -m saga_dev.docker_engine start|base|stop", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
