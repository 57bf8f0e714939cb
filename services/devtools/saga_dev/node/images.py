"""The images the node runs, made here because no registry can be pulled from.

- from a static binary, as a one-layer docker-archive written with tarfile: the sandbox (pause, a few lines of
  C), the volume helper of local-path-provisioner (busybox), Jaeger v2 and Prometheus (built from their Go
  modules: Debian's Prometheus has no Kubernetes service discovery);
- with the project's Docker engine on the local Debian base: the stand-ins for the official PostgreSQL and
  RabbitMQ images (docker/standins), and our two service images (`make images`), saved with `docker save`.

Each archive is cached under CACHE/images by the digest of what went into it; `node.py` imports the ones
containerd lacks (`ctr images import`).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from saga_dev.docker_engine import LOCAL_DEBIAN_IMAGE, DockerEngine
from saga_dev.node.build import CACHE, REPO, binary
from saga_dev.node.parts import PARTS

IMAGES = CACHE / "images"
PAUSE = "saga.local/pause:1"
HELPER = "saga.local/busybox:1"
JAEGER = f"saga.local/jaeger:{PARTS['jaeger'].version}"
PROMETHEUS = "saga.local/prometheus:v3.5.0"  # the release of module version PARTS["prometheus"].version
# The stand-ins (docker/standins/<name>), by the image of the chart they stand in for.
STANDINS = {
    "postgres": "saga.local/postgres:15-debian",
    "rabbitmq": "saga.local/rabbitmq:3.10-debian",
}
SERVICE_IMAGES = ("saga/order-service", "saga/customer-service")


@dataclass(frozen=True)
class Archive:
    ref: str
    path: Path


def _digest(*parts: bytes | Path) -> str:
    sha = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            for path in sorted(part.rglob("*")) if part.is_dir() else [part]:
                if path.is_file():
                    sha.update(str(path.relative_to(part.parent)).encode())
                    sha.update(path.read_bytes())
        else:
            sha.update(part)
    return sha.hexdigest()[:16]


def _archive_path(ref: str, digest: str) -> Path:
    return IMAGES / f"{ref.replace('/', '_').replace(':', '_')}-{digest}.tar"


def single_layer_image(
    ref: str,
    files: dict[str, tuple[bytes | Path, int]],
    entrypoint: list[str],
    out: Path,
    links: dict[str, str] | None = None,
) -> None:
    """A docker-archive (what `docker save` writes) of one layer holding `files` (path -> content, mode) and
    symbolic `links` (path -> target)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        directories = sorted({str(Path(p).parent) for p in files if str(Path(p).parent) not in (".", "/")})
        for directory in [*directories, "tmp"]:
            info = tarfile.TarInfo(directory.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        for path, (content, mode) in sorted(files.items()):
            data = content.read_bytes() if isinstance(content, Path) else content
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        for path, target in sorted((links or {}).items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "saga_dev.node.images"}],
    }
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out.with_suffix(".partial"), mode="w") as tar:
        for name, data in (
            ("layer.tar", layer_bytes),
            (config_name, config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.with_suffix(".partial").rename(out)


def pause_image() -> Archive:
    source = REPO / "k8s" / "node" / "pause.c"
    out = _archive_path(PAUSE, _digest(source))
    if not out.exists():
        with tempfile.TemporaryDirectory() as tmp:
            program = Path(tmp) / "pause"
            subprocess.run(["gcc", "-static", "-O2", "-o", str(program), str(source)], check=True)
            single_layer_image(PAUSE, {"/pause": (program, 0o755)}, ["/pause"], out)
    return Archive(PAUSE, out)


def helper_image() -> Archive:
    """busybox (Debian's busybox-static) with the applets the helper's scripts use."""
    busybox = Path("/bin/busybox")
    out = _archive_path(HELPER, _digest(busybox))
    if not out.exists():
        # busybox runs as the applet its link is named after
        applets = ("sh", "mkdir", "rm", "chmod", "ls", "cat", "sleep", "nc", "nslookup", "wget")
        links = {f"/bin/{applet}": "busybox" for applet in applets}
        single_layer_image(HELPER, {"/bin/busybox": (busybox, 0o755)}, ["/bin/sh"], out, links)
    return Archive(HELPER, out)


def jaeger_image() -> Archive:
    program = binary("jaeger")
    out = _archive_path(JAEGER, _digest(program))
    if not out.exists():
        single_layer_image(JAEGER, {"/jaeger": (program, 0o755)}, ["/jaeger"], out)
    return Archive(JAEGER, out)


def prometheus_image() -> Archive:
    """As the official image: the binary is the entrypoint (the chart gives the flags); /prometheus, its data
    directory, is the chart's volume."""
    program = binary("prometheus")
    out = _archive_path(PROMETHEUS, _digest(program))
    if not out.exists():
        single_layer_image(PROMETHEUS, {"/bin/prometheus": (program, 0o755)}, ["/bin/prometheus"], out)
    return Archive(PROMETHEUS, out)


def _saved(engine: DockerEngine, ref: str, digest: str) -> Path:
    out = _archive_path(ref, digest)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        engine.docker("save", "--output", str(out.with_suffix(".partial")), ref, timeout=600)
        out.with_suffix(".partial").rename(out)
    return out


def standin_images(engine: DockerEngine, log: Callable[[str], None]) -> list[Archive]:
    engine.build_local_debian()
    archives = []
    for name, ref in STANDINS.items():
        context = REPO / "docker" / "standins" / name
        # Built every time, as the service images are: Docker's cache makes an unchanged stand-in a matter of
        # seconds, and a changed one (its entrypoint, say) must not be served from an older build of the tag.
        started = time.monotonic()
        engine.docker(
            "build",
            "--network=host",
            "--build-arg",
            f"DEBIAN_IMAGE={LOCAL_DEBIAN_IMAGE}",
            "--tag",
            ref,
            str(context),
            timeout=900,
        )
        log(f"{ref} built in {time.monotonic() - started:.0f} s")
        image_id = engine.docker("image", "inspect", "--format", "{{.Id}}", ref).strip()
        archives.append(Archive(ref, _saved(engine, ref, _digest(image_id.encode()))))
    return archives


def service_images(engine: DockerEngine, tag: str, log: Callable[[str], None]) -> list[Archive]:
    """Both service images of the working tree (`make images`, cached by Docker's build cache)."""
    started = time.monotonic()
    python_image = engine.python_base()
    subprocess.run(
        [
            "make",
            "--no-print-directory",
            "images",
            f"IMAGE_TAG={tag}",
            f"PYTHON_IMAGE={python_image}",
            "DOCKER_BUILD_FLAGS=--network=host",
            "DOCKER=/usr/bin/docker",
        ],
        cwd=REPO,
        env=engine.env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    log(f"service images {tag} built in {time.monotonic() - started:.0f} s")
    archives = []
    for repository in SERVICE_IMAGES:
        ref = f"{repository}:{tag}"
        image_id = engine.docker("image", "inspect", "--format", "{{.Id}}", ref).strip()
        archives.append(Archive(ref, _saved(engine, ref, _digest(image_id.encode()))))
    return archives


def prune(keep: list[Archive]) -> None:
    """Archives of older builds (a new digest replaces them)."""
    kept = {archive.path for archive in keep}
    for path in IMAGES.glob("*.tar"):
        if path not in kept:
            path.unlink()
    for path in IMAGES.glob("*.partial"):
        path.unlink()


def docker_engine() -> DockerEngine:
    return DockerEngine.default()


def retagged(engine: DockerEngine, archives: list[Archive], tag: str) -> list[Archive]:
    """The same images under another tag: a `helm upgrade` to it rolls the pods without a rebuild."""
    out = []
    for archive in archives:
        repository = archive.ref.rsplit(":", 1)[0]
        ref = f"{repository}:{tag}"
        engine.docker("tag", archive.ref, ref)
        image_id = engine.docker("image", "inspect", "--format", "{{.Id}}", ref).strip()
        out.append(Archive(ref, _saved(engine, ref, _digest(image_id.encode(), tag.encode()))))
    return out
