"""PostgreSQL servers on this machine: a private cluster of the project's own (initdb and pg_ctl in a directory
of its own), and the restart of whichever server answers at a URL (the chaos tier restarts it under load).

PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user Debian's package creates.
Authentication: `postgres` is trusted on loopback (the seed's URLs carry no password), every other role gives
its password (scram), so the tests of the services' roles log in as a real server would make them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from saga_dev.system_packages import fix_for

SUPERUSER = "postgres"
PG_HBA = f"""# written by saga_dev.postgres_server: loopback only
local all all trust
host  all {SUPERUSER} 127.0.0.1/32 trust
host  all all      127.0.0.1/32 scram-sha-256
"""


def bin_dir() -> Path:
    """The newest server binaries Debian installed (/usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError(f"the PostgreSQL server (initdb, pg_ctl) is not installed: {fix_for('postgresql')}")
    return Path(found[-1]).parent


def _owner_kwargs(path: Path) -> dict[str, int]:
    """Run as the data directory's owner (postgres when we are root, else ourselves)."""
    if os.geteuid() != 0:
        return {}
    stat = path.stat()
    return {"user": stat.st_uid, "group": stat.st_gid}


def _run(command: list[str], path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, cwd="/", **_owner_kwargs(path)
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr or result.stdout}")
    return result


@dataclass
class PrivatePostgres:
    """A cluster in `base/data`, listening on 127.0.0.1:`port`, its socket and log beside the data."""

    base: Path
    port: int
    # More server settings (`-c name=value`), e.g. a TLS variant's ssl=on and its files; the defaults have none.
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgresql.log"

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)
            shutil.chown(self.base, user.pw_uid, user.pw_gid)
            self.base.chmod(0o700)
        _run(
            [
                str(bin_dir() / "initdb"),
                f"--pgdata={self.data}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            self.base,
        )
        (self.data / "pg_hba.conf").write_text(PG_HBA)
        if os.geteuid() == 0:
            shutil.chown(self.data / "pg_hba.conf", SUPERUSER, SUPERUSER)

    def start(self, timeout: float = 60) -> None:
        if not self.initialised():
            self.init()
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.base}"
        options += "".join(f" -c {name}={value}" for name, value in self.settings)
        _run(
            [
                str(bin_dir() / "pg_ctl"),
                f"--pgdata={self.data}",
                f"--log={self.log}",
                f"--options={options}",
                "--wait",
                f"--timeout={int(timeout)}",
                "start",
            ],
            self.base,
            timeout=timeout + 10,
        )

    def running(self) -> bool:
        status = subprocess.run(
            [str(bin_dir() / "pg_ctl"), f"--pgdata={self.data}", "status"],
            capture_output=True,
            check=False,
            **_owner_kwargs(self.base),
        )
        return status.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        if self.initialised() and self.running():
            _run([str(bin_dir() / "pg_ctl"), f"--pgdata={self.data}", f"--mode={mode}", "--wait", "stop"], self.base)


@dataclass(frozen=True)
class PostgresServer:
    """Whatever PostgreSQL answers at a URL, as far as restarting it goes: a cluster whose configuration is in
    its data directory (ours, initdb's) restarts with pg_ctl; a Debian cluster (config in /etc/postgresql)
    with pg_ctlcluster."""

    data_directory: Path
    config_file: Path
    major: int

    @classmethod
    async def of(cls, url: str) -> PostgresServer:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            data = await conn.fetchval("SHOW data_directory")
            config = await conn.fetchval("SHOW config_file")
            version = await conn.fetchval("SHOW server_version_num")
        finally:
            await conn.close()
        return cls(Path(data), Path(config), int(version) // 10000)

    def _command(self, action: str) -> list[str]:
        if self.config_file.parent == self.data_directory:
            # The log where PrivatePostgres keeps it; without --log the server would write into our pipe.
            ours = self.data_directory.parent / "postgresql.log"
            log = ours if ours.exists() else self.data_directory / "postgresql.log"
            mode = ["--mode=fast"] if action != "start" else []
            return [
                str(bin_dir() / "pg_ctl"),
                f"--pgdata={self.data_directory}",
                f"--log={log}",
                *mode,
                "--wait",
                action,
            ]
        cluster = self.config_file.parent.name  # /etc/postgresql/<major>/<cluster>/postgresql.conf
        return ["pg_ctlcluster", "--skip-systemctl-redirect", str(self.major), cluster, action]

    def restart(self) -> None:
        """Every connection is dropped; returns once the server accepts connections again."""
        _run(self._command("restart"), self.data_directory)

    def start(self) -> None:
        _run(self._command("start"), self.data_directory)
