"""Build the node's parts from their wrapper modules (k8s/node/modules/<part>), cached by version.

    build_all(log)            # every part not yet in the cache; then the Go caches are removed
    binary("kubelet")         # the cached path of one binary
    update_module(part)       # regenerate a wrapper module's go.mod/go.sum (saga-node update PART)

The binaries live in CACHE/bin/<part>-<version>-<digest of go.mod and go.sum>/ (a `complete` marker says the
part built whole), so a warm run builds nothing. Go's module and build caches are private to the node
(CACHE/go) and removed after a cold build: they grow to about 14 GB, the binaries to about 1 GB.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from saga_dev.node.parts import PARTS, Part

REPO = Path(os.environ.get("SAGA_REPO_ROOT", Path(__file__).resolve().parents[4]))
MODULES = REPO / "k8s" / "node" / "modules"
CACHE = Path(os.environ.get("SAGA_NODE_CACHE", "/var/cache/saga-node"))
GO_CACHE = CACHE / "go"


def go_env() -> dict[str, str]:
    return {
        **os.environ,
        "GOTOOLCHAIN": "local",
        "GOMODCACHE": str(GO_CACHE / "mod"),
        "GOCACHE": str(GO_CACHE / "build"),
        "GOFLAGS": "-modcacherw",  # so the cache can be removed without chmod
        "GOPATH": str(GO_CACHE / "path"),
    }


def _go(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 3600) -> str:
    result = subprocess.run(
        ["go", *args], cwd=cwd, env=env or go_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} (in {cwd}) failed:\n{result.stderr[-4000:]}")
    return result.stdout


def module_dir(part: Part) -> Path:
    return MODULES / part.name


def digest(part: Part) -> str:
    sha = hashlib.sha256(part.key.encode())
    for name in ("go.mod", "go.sum"):
        path = module_dir(part) / name
        sha.update(path.read_bytes() if path.exists() else b"")
    return sha.hexdigest()[:12]


def bin_dir(part: Part) -> Path:
    return CACHE / "bin" / f"{part.key}-{digest(part)}"


def is_built(part: Part) -> bool:
    return (bin_dir(part) / "complete").exists()


def binary(name: str) -> Path:
    for part in PARTS.values():
        if name in part.binaries:
            path = bin_dir(part) / name
            if not path.exists():
                raise RuntimeError(f"{name} is not built: run `saga-node build` (part {part.name})")
            return path
    raise KeyError(name)


def build(part: Part, log: Callable[[str], None]) -> float:
    """Build one part into its cache directory; returns the seconds it took (0 when it was there)."""
    if is_built(part):
        return 0.0
    started = time.monotonic()
    target = bin_dir(part)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    env = go_env() | {"CGO_ENABLED": "1" if part.cgo else "0"} | part.env
    for name, package in part.binaries.items():
        log(f"building {name} ({part.module}@{part.version})")
        args = ["build", "-mod=readonly", "-trimpath", "-o", str(target / name)]
        if part.tags:
            args += ["-tags", " ".join(part.tags)]
        ldflags = ["-s", "-w", *part.ldflags]
        args += ["-ldflags", " ".join(ldflags), package]
        _go(args, module_dir(part), env)
    (target / "complete").write_text(f"{part.module}@{part.version}\n")
    return time.monotonic() - started


def build_all(log: Callable[[str], None], *, clean_go_caches: bool = True) -> dict[str, float]:
    """Every part not in the cache; the figures are seconds per part built."""
    if not all(is_built(part) for part in PARTS.values()) and shutil.which("go") is None:
        raise RuntimeError("the node's parts build with Go 1.26 or later (k8s/node/modules): no `go` on PATH")
    built = {}
    for part in PARTS.values():
        seconds = build(part, log)
        if seconds:
            built[part.name] = seconds
            log(f"{part.name} built in {seconds:.0f} s")
    if built and clean_go_caches and GO_CACHE.exists():
        log(f"removing the Go caches ({_size_gb(GO_CACHE):.1f} GB in {GO_CACHE})")
        shutil.rmtree(GO_CACHE, ignore_errors=True)
    return built


def _size_gb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total / 1e9


# --- regenerating a wrapper module (a developer's step when a version changes) ------------------------------


def update_module(part: Part, log: Callable[[str], None]) -> None:
    directory = module_dir(part)
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("go.mod", "go.sum"):
        (directory / name).unlink(missing_ok=True)
    _go(["mod", "init", f"saga.local/node/{part.name}"], directory)
    if part.staging_replaces:
        _add_staging_replaces(part, directory)
    for package in part.binaries.values():
        log(f"go get -tool {package}@{part.version}")
        _go(["get", "-tool", f"{package}@{part.version}"], directory)
    _go(["mod", "tidy"], directory)


def _add_staging_replaces(part: Part, directory: Path) -> None:
    """k8s.io/kubernetes requires its staging modules at v0.0.0 and maps them to ./staging: a module of ours
    maps each to its published version instead (v1.36.3 -> v0.36.3), with the same go and godebug lines."""
    info = _go(["mod", "download", "-json", f"{part.module}@{part.version}"], directory)
    gomod = Path(re.search(r'"GoMod":\s*"([^"]+)"', info)[1]).read_text()  # type: ignore[index]
    staging = re.findall(r"^\s*(\S+)\s*=>\s*\./staging/", gomod, flags=re.MULTILINE)
    published = "v0." + part.version.lstrip("v").split(".", 1)[1]
    go_line = re.search(r"^go (\S+)$", gomod, flags=re.MULTILINE)
    godebug = re.search(r"^godebug .+$", gomod, flags=re.MULTILINE)
    text = (directory / "go.mod").read_text()
    if go_line:
        text = re.sub(r"^go \S+$", f"go {go_line[1]}", text, flags=re.MULTILINE)
    if godebug:
        text += f"\n{godebug[0]}\n"
    text += "\nreplace (\n" + "".join(f"\t{name} => {name} {published}\n" for name in staging) + ")\n"
    (directory / "go.mod").write_text(text)
    _go(["mod", "edit", f"-require={part.module}@{part.version}"], directory)
