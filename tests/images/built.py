"""Both service images as `make images` built them on the project's own Docker engine."""

from __future__ import annotations

from dataclasses import dataclass

from saga_dev.docker_engine import DockerEngine

IMAGE_TAG = "dev"
OUR_IMAGES = ("saga/order-service", "saga/customer-service")


@dataclass
class BuiltImages:
    engine: DockerEngine
    seconds: float

    def size_mb(self, image: str) -> float:
        return int(self.engine.docker("image", "inspect", "--format", "{{.Size}}", image).strip()) / 1e6

    def user_of(self, image: str) -> str:
        return self.engine.docker("image", "inspect", "--format", "{{.Config.User}}", image).strip()

    def shell(self, image: str, script: str) -> str:
        """`script` run by sh in a container of `image` (our tag), its output."""
        return self.engine.docker(
            "run", "--rm", "--network", "host", "--entrypoint", "sh", f"{image}:{IMAGE_TAG}", "-c", script
        )
