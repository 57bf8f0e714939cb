"""The rendered chart's own pods, run on the project's Docker engine against the machine's PostgreSQL and
RabbitMQ (tests/support/kubelet.py runs each container as a kubelet would).

What the chart's infrastructure pods would have created is created from the rendered objects themselves:
- each PostgreSQL StatefulSet's POSTGRES_DB and its owner (SAGA_DATABASE_OWNER / _PASSWORD, what the chart's
  init script creates on first boot: no superuser) become a database and its owner role in the local PostgreSQL;
- the RabbitMQ definitions in the chart's ConfigMap (vhost, the services' users, their permissions and topic
  permissions) are applied to the local RabbitMQ, each user with the password the definitions init container
  would hash (from the rendered Secrets). The administrator is left out: none of our pods uses it.
The values only give the release names of its own (databases, roles, vhost) and free ports, so nothing collides
with what else the machine runs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from cryptography.hazmat.primitives import serialization

from saga_dev.docker_engine import DockerEngine
from saga_dev.localstack import POSTGRES_URL, free_port, rabbitmqctl, unique_name
from saga_tools import tokens
from tests.support.chart import Rendered, Workload, render
from tests.support.kubelet import Kubelet, PodFailed, RunningContainer

IMAGE_TAG = "dev"
PROBES = ("startup", "readiness", "liveness")
OUR_IMAGES = ("saga/order-service", "saga/customer-service")


def test_values(prefix: str, otlp_endpoint: str) -> dict[str, Any]:
    """Names and ports of this run's own; everything else is the chart's defaults."""
    return {
        "serviceDefaults": {"image": {"tag": IMAGE_TAG}},
        "services": {
            key: {"port": free_port(), "database": {"name": f"{prefix}_{key}s", "username": f"{prefix}_{key}"}}
            for key in ("order", "customer")
        },
        "rabbitmq": {"vhost": prefix},
        # Jaeger cannot be pulled here: the traces go to the test's OTLP receiver, as to an outside collector.
        "jaeger": {"enabled": False},
        "tracing": {"otlpEndpoint": otlp_endpoint},
    }


@dataclass
class BuiltImages:
    """Both images as `make images` built them on the project's engine, and how long that took."""

    engine: DockerEngine
    python_image: str
    seconds: float

    def size_mb(self, image: str) -> float:
        return int(self.engine.docker("image", "inspect", "--format", "{{.Size}}", image).strip()) / 1e6


@dataclass
class ChartOnDocker:
    kubelet: Kubelet
    prefix: str
    roles: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    rabbit_users: list[str] = field(default_factory=list)
    vhost: str | None = None
    pods: dict[str, RunningContainer] = field(default_factory=dict)

    @property
    def rendered(self) -> Rendered:
        return self.kubelet.rendered

    def say(self, line: str) -> None:
        self.kubelet.report(line)

    # --- what the infrastructure pods would have made -------------------------------------------------

    def prepare_databases(self) -> None:
        for statefulset in self.rendered.of_kind("StatefulSet"):
            workload = Workload(
                statefulset, statefulset["spec"]["template"]["metadata"], statefulset["spec"]["template"]["spec"]
            )
            container = workload.spec["containers"][0]
            env = {item["name"] for item in container.get("env", [])}
            if not {"SAGA_DATABASE_OWNER", "SAGA_DATABASE_OWNER_PASSWORD", "POSTGRES_DB"} <= env:
                continue
            values = self.kubelet.env_of(workload, container, statefulset["metadata"]["name"] + "-0")
            owner, password = values["SAGA_DATABASE_OWNER"], values["SAGA_DATABASE_OWNER_PASSWORD"]
            asyncio.run(self._create_database(owner, password, values["POSTGRES_DB"]))
            self.say(f"  postgres: owner {owner}, database {values['POSTGRES_DB']} ({workload.name})")

    async def _create_database(self, user: str, password: str, database: str) -> None:
        conn = await asyncpg.connect(f"{POSTGRES_URL}/postgres")
        try:
            # As the chart's init script (create-owner.sh) makes the owner: no superuser, CREATEROLE so that
            # migrate, run as it, creates the service's own role. (The local superuser stands in for postgres.)
            await conn.execute(f'CREATE ROLE "{user}" LOGIN CREATEROLE NOSUPERUSER PASSWORD $${password}$$')
            self.roles.append(user)
            await conn.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')
            self.databases.append(database)
        finally:
            await conn.close()

    def prepare_broker(self) -> None:
        """Import the chart's RabbitMQ definitions, as every broker node does at boot, into the local RabbitMQ:
        the vhost, the services' users (password hashes made as the init container makes them, from the
        rendered Secrets), their permissions and topic permissions, and whatever topology they carry."""
        config_maps = [cm for cm in self.rendered.of_kind("ConfigMap") if "definitions.template.json" in cm["data"]]
        assert len(config_maps) == 1, "one RabbitMQ definitions template in the chart"
        definitions = json.loads(config_maps[0]["data"]["definitions.template.json"])
        statefulset = next(
            s
            for s in self.rendered.of_kind("StatefulSet")
            if any(c["name"] == "write-definitions" for c in s["spec"]["template"]["spec"].get("initContainers", []))
        )
        template = statefulset["spec"]["template"]
        workload = Workload(statefulset, template["metadata"], template["spec"])
        init = next(c for c in template["spec"]["initContainers"] if c["name"] == "write-definitions")
        passwords = self.kubelet.env_of(workload, init, statefulset["metadata"]["name"] + "-0")
        # The administrator stays out: none of our pods uses it, and the machine's broker is not ours to run.
        administrators = {u["name"] for u in definitions["users"] if "administrator" in u.get("tags", [])}
        definitions["users"] = [u for u in definitions["users"] if u["name"] not in administrators]
        for user in definitions["users"]:
            password = passwords[user["name"].upper().replace("-", "_") + "_PASSWORD"]
            user["password_hash"] = rabbit_password_hash(password)
        for key in ("permissions", "topic_permissions"):
            definitions[key] = [p for p in definitions.get(key, []) if p["user"] not in administrators]
        (vhost,) = [v["name"] for v in definitions["vhosts"]]
        self.vhost = vhost
        self.rabbit_users = [u["name"] for u in definitions["users"]]
        with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
            json.dump(definitions, file)
            file.flush()
            os.chmod(file.name, 0o644)  # rabbitmqctl runs as the rabbitmq user
            rabbitmqctl("import_definitions", file.name)
        topology = ", ".join(f"{len(definitions.get(k, []))} {k}" for k in ("exchanges", "queues", "bindings"))
        self.say(
            f"  rabbitmq: vhost {vhost}, users {', '.join(self.rabbit_users)}, {topology} (the chart's definitions)"
        )

    def teardown(self) -> None:
        self.kubelet.cleanup()
        if self.vhost:
            rabbitmqctl("delete_vhost", self.vhost)
        for user in self.rabbit_users:
            rabbitmqctl("delete_user", user)
        asyncio.run(self._drop())

    async def _drop(self) -> None:
        conn = await asyncpg.connect(f"{POSTGRES_URL}/postgres")
        try:
            for database in self.databases:
                await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            # The owners, and the roles migrate made for the services (named after their owners).
            made = await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE $1", f"{self.prefix}%")
            for role in sorted({*self.roles, *(r["rolname"] for r in made)}, key=len, reverse=True):
                await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await conn.close()

    # --- the pods ---------------------------------------------------------------------------------------

    def ours(self, kind: str) -> list[Workload]:
        return [
            w
            for w in self.rendered.workloads()
            if w.owner["kind"] == kind and any(self.kubelet.is_ours(c) for c in w.containers())
        ]

    def migration_jobs(self) -> list[Workload]:
        return [w for w in self.ours("Job") if w.component.endswith("-migrate")]

    def run_migrations(self) -> None:
        for job in self.migration_jobs():
            seconds = self.kubelet.run_job(job)
            self.say(f"pod {job.name}: ran {len(job.containers())} containers, all exit 0, in {seconds:.1f} s")

    def start_service(self, workload: Workload) -> RunningContainer:
        (container,) = workload.spec["containers"]
        running = self.kubelet.start(workload, container)
        try:
            seen = running.wait_ready()
            check_temporary_directory(running)
        except PodFailed:
            running.remove()  # as the kubelet would restart it: this one serves and consumes no more
            raise
        probes = ", ".join(f"{kind} ok after {seen[kind]:.1f} s" for kind in PROBES if kind in seen)
        self.say(f"pod {workload.name}: started, ready after {seen['ready_after_s']:.1f} s ({probes})")
        self.pods[workload.component] = running
        return running

    def start_services(self) -> None:
        # Customer first: the order service's saga needs someone to answer.
        for workload in sorted(self.ours("Deployment"), key=lambda w: w.component != "customer-service"):
            self.start_service(workload)

    def stop_service(self, component: str) -> tuple[int, float]:
        running = self.pods.pop(component)
        code, seconds = running.stop()
        self.say(
            f"pod {component}: stopped (preStop, SIGTERM, grace {running.grace_s:.0f} s): exit code {code} "
            f"after {seconds:.1f} s"
        )
        return code, seconds

    def auth_headers(self, *scopes: str) -> dict[str, str]:
        """A bearer token as the `helm test` pod mints one: signed with the chart's development signer (the
        key in the Secret that pod mounts), for the issuer and audience the services are given."""
        (test_pod,) = [w for w in self.ours("Pod") if w.owner["metadata"]["annotations"]["helm.sh/hook"] == "test"]
        signer = next(v["secret"] for v in test_pod.spec["volumes"] if "secret" in v)
        secret = self.rendered.get("Secret", signer["secretName"])
        key_name = signer["items"][0]["key"] if signer.get("items") else "signing-key.pem"
        key = serialization.load_pem_private_key(base64.b64decode(secret["data"][key_name]), password=None)
        (order,) = [w for w in self.ours("Deployment") if w.component == "order-service"]
        env = {e["name"]: e.get("value") for e in order.spec["containers"][0]["env"]}
        token = tokens.mint(
            key,  # type: ignore[arg-type]
            subject="images-tier",
            scopes=list(scopes),
            issuer=env["SAGA_AUTH_ISSUER"],
            audience=env["SAGA_AUTH_AUDIENCE"],
        )
        return {"Authorization": f"Bearer {token}"}

    def port_of(self, component: str) -> int:
        workload = next(w for w in self.ours("Deployment") if w.component == component)
        return int(workload.spec["containers"][0]["ports"][0]["containerPort"])


def rabbit_password_hash(password: str) -> str:
    """rabbit_password_hashing_sha256, as the chart's write-definitions script computes it with erl:
    base64(salt ++ sha256(salt ++ password)) with a random 4-byte salt."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def check_temporary_directory(pod: RunningContainer) -> None:
    """Python's tempfile must find a writable directory (uploads, libraries): with the root filesystem
    read-only, only the pod's emptyDir gives one."""
    result = pod.exec(["python", "-c", "import tempfile; tempfile.TemporaryFile().write(b'x')"], timeout=30)
    if result.returncode != 0:
        raise PodFailed(f"{pod.name}: no writable temporary directory: {result.stderr.strip().splitlines()[-1]}")


def new_stack(kubelet_factory: Any, otlp_endpoint: str) -> tuple[ChartOnDocker, Rendered]:
    prefix = unique_name("imgtest")
    rendered = render(test_values(prefix, otlp_endpoint))
    return ChartOnDocker(kubelet_factory(rendered), prefix), rendered
