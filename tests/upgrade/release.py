"""Release N of the services from a git revision, runnable beside the work tree (release N+1).

Release N is the parent of the first commit whose services mention `order.created` version 2 (found in the
history, so a fresh clone with its history finds it too). Its three service packages are extracted with
`git archive` and put first on PYTHONPATH of release N's processes: the venv's third-party packages are shared
and nothing is installed (an import resolves on PYTHONPATH before the venv's editable installs). Both releases
have the same third-party dependencies; a release that changed them would need a venv of its own.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services/common", "services/order", "services/customer")
# The name release N+1 brought: release N is the parent of the first commit with it anywhere under services/.
MARKER = "OrderCreatedV2"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def revision_before_v2() -> str:
    added = git("log", "--format=%H", "-S", MARKER, "--", "services")
    if not added:
        return git("rev-parse", "HEAD")  # version 2 is not committed yet: HEAD is the release before it
    return git("rev-parse", f"{added.splitlines()[-1]}^")


@dataclass(frozen=True)
class Release:
    revision: str
    root: Path
    built_in_s: float

    @classmethod
    def build(cls, revision: str, into: Path) -> Release:
        started = time.monotonic()
        archive = subprocess.run(
            ["git", "archive", "--format=tar", revision, *PACKAGES], cwd=ROOT, check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(into, filter="data")
        return cls(revision, into, time.monotonic() - started)

    def env(self) -> dict[str, str]:
        """The environment a process of this release needs on top of its settings."""
        return {"PYTHONPATH": os.pathsep.join(str(self.root / package) for package in PACKAGES)}

    def run(self, *args: str, env: dict[str, str]) -> str:
        """`python -m <args>` with this release's packages (e.g. its `migrate`)."""
        result = subprocess.run(
            [sys.executable, "-m", *args],
            env={**os.environ, **env, **self.env()},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{args} of release {self.revision[:10]} failed:\n{result.stdout}{result.stderr}"
        return result.stdout

    def imports_from_here(self, module: str) -> bool:
        """True when `module` is this release's copy (PYTHONPATH wins over the venv's editable install)."""
        where = subprocess.run(
            [sys.executable, "-c", f"import {module}; print({module}.__file__)"],
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return Path(where).is_relative_to(self.root)
