"""Run a rendered pod's containers with `docker run`, the way a kubelet would, on a machine without Kubernetes.

Everything about a container comes from the rendered chart, nothing is restated here:
- image, `command` (replaces the ENTRYPOINT) and `args` (replace the CMD);
- env: `value` (with `$(VAR)` expansion), `secretKeyRef` and `configMapKeyRef` resolved from the rendered
  Secrets and ConfigMaps, `fieldRef` from the pod's metadata;
- securityContext (container over pod): runAsUser/runAsGroup, fsGroup as a supplementary group,
  readOnlyRootFilesystem, dropped and added capabilities, allowPrivilegeEscalation=false as no-new-privileges;
- volumes: `emptyDir` as a tmpfs at each mountPath (sizeLimit kept), `configMap` and `secret` as read-only files;
- resources.limits as --memory/--cpus; terminationGracePeriodSeconds as the stop timeout, preStop sleep first;
- probes (httpGet on a named or numbered port, exec) run against the container within the times they declare.

What a cluster adds and this does not: the network. Every container shares the host's loopback (no bridge may be
made here), and the cluster's DNS names are mapped to 127.0.0.1 with --add-host, so the URLs the chart builds are
the URLs used. Containers whose image is not one of ours (e.g. the PostgreSQL wait-for-database init container)
cannot be pulled here and are reported as skipped.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from saga_dev.docker_engine import DockerEngine
from tests.support.chart import Rendered, Workload

_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_QUANTITY = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "k": 1000, "M": 1000**2, "G": 1000**3}


class PodFailed(AssertionError):
    """The pod did what a kubelet would report as a failure: a probe failed, a container exited non-zero..."""


def bytes_of(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]i?|k)?", str(quantity))
    if not match:
        raise ValueError(f"unsupported quantity {quantity!r}")
    return int(match.group(1)) * _QUANTITY.get(match.group(2) or "", 1)


def cpus_of(quantity: str) -> str:
    text = str(quantity)
    return f"{int(text[:-1]) / 1000:g}" if text.endswith("m") else f"{float(text):g}"


@dataclass
class Probe:
    """One probe of a running container, as the kubelet runs it."""

    kind: str
    spec: dict[str, Any]
    container: RunningContainer

    @property
    def period_s(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold", 3))

    @property
    def timeout_s(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    @property
    def budget_s(self) -> float:
        """How long the kubelet gives it: failureThreshold consecutive failures, periodSeconds apart."""
        return float(self.spec.get("initialDelaySeconds", 0)) + self.period_s * self.failure_threshold

    def once(self) -> tuple[bool, str]:
        if "httpGet" in self.spec:
            get = self.spec["httpGet"]
            port = self.container.port_number(get["port"])
            url = f"http://127.0.0.1:{port}{get.get('path', '/')}"
            try:
                response = httpx.get(url, timeout=self.timeout_s)
            except httpx.HTTPError as exc:
                return False, f"GET {url}: {type(exc).__name__}"
            # The kubelet counts 200-399 as success.
            return 200 <= response.status_code < 400, f"GET {url}: {response.status_code}"
        if "exec" in self.spec:
            result = self.container.exec(self.spec["exec"]["command"], timeout=self.timeout_s + 5)
            return result.returncode == 0, f"exec {self.spec['exec']['command']}: exit {result.returncode}"
        raise NotImplementedError(f"probe {self.spec}")

    def wait_success(self) -> float:
        """Run the probe every periodSeconds until it succeeds; fail after failureThreshold failures."""
        started = time.monotonic()
        failures, last = 0, ""
        time.sleep(float(self.spec.get("initialDelaySeconds", 0)))
        while True:
            self.container.raise_if_exited(f"while its {self.kind} probe ran")
            ok, last = self.once()
            if ok:
                return time.monotonic() - started
            failures += 1
            if failures >= self.failure_threshold:
                raise PodFailed(
                    f"{self.container.name}: {self.kind} probe failed {failures} times "
                    f"({self.budget_s:.0f} s budget), last: {last}\n{self.container.logs_tail()}"
                )
            # Probes that fail fast are rerun sooner than their period, so a healthy pod is seen early;
            # the failure count, not the clock, decides the verdict, as for the kubelet.
            time.sleep(min(self.period_s, 0.5) if self.kind != "liveness" else self.period_s)


@dataclass
class RunningContainer:
    name: str
    spec: dict[str, Any]
    kubelet: Kubelet
    grace_s: float
    started_at: float = field(default_factory=time.monotonic)

    def port_number(self, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for declared in self.spec.get("ports", []):
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise PodFailed(f"{self.name}: probe port {port!r} is not a declared port of the container")

    def probe(self, kind: str) -> Probe | None:
        spec = self.spec.get(f"{kind}Probe")
        return Probe(kind, spec, self) if spec else None

    def exec(self, command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/usr/bin/docker", "exec", self.name, *command],
            env=self.kubelet.engine.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def state(self) -> dict[str, Any]:
        return json.loads(self.kubelet.engine.docker("inspect", "--format", "{{json .State}}", self.name))  # type: ignore[no-any-return]

    def raise_if_exited(self, when: str) -> None:
        state = self.state()
        if not state["Running"]:
            raise PodFailed(f"{self.name} exited with code {state['ExitCode']} {when}\n{self.logs_tail()}")

    def logs(self) -> str:
        """stdout and stderr interleaved, as `kubectl logs` shows them."""
        return subprocess.run(
            ["/usr/bin/docker", "logs", self.name],
            env=self.kubelet.engine.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        ).stdout

    def logs_tail(self, lines: int = 30) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def wait_ready(self) -> dict[str, float]:
        """Startup probe first (liveness and readiness wait for it), then readiness, then one liveness round."""
        seen: dict[str, float] = {}
        for kind in ("startup", "readiness", "liveness"):
            probe = self.probe(kind)
            if probe is not None:
                seen[kind] = probe.wait_success()
        seen["ready_after_s"] = time.monotonic() - self.started_at
        return seen

    def stop(self) -> tuple[int, float]:
        """preStop, then SIGTERM; SIGKILL after terminationGracePeriodSeconds. Returns (exit code, seconds)."""
        started = time.monotonic()
        pre_stop = self.spec.get("lifecycle", {}).get("preStop", {})
        if "sleep" in pre_stop:
            time.sleep(float(pre_stop["sleep"]["seconds"]))
        elif "exec" in pre_stop:
            self.exec(pre_stop["exec"]["command"], timeout=self.grace_s)
        remaining = max(1, int(self.grace_s - (time.monotonic() - started)))
        self.kubelet.engine.docker("stop", "--time", str(remaining), self.name, timeout=remaining + 30)
        code = int(self.state()["ExitCode"])
        return code, time.monotonic() - started

    def remove(self) -> None:
        self.kubelet.engine.docker("rm", "--force", self.name, check=False)


@dataclass
class Kubelet:
    """Runs the containers of the rendered chart's pods on one Docker engine."""

    engine: DockerEngine
    rendered: Rendered
    our_images: Collection[str]
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="saga-kubelet-")))
    report: Callable[[str], None] = print
    started: list[RunningContainer] = field(default_factory=list)

    # --- what the cluster's DNS and API server would give ---------------------------------------------

    @property
    def namespace(self) -> str:
        return str(self.rendered.objects[0]["metadata"].get("namespace", "saga"))

    def cluster_hosts(self) -> list[str]:
        """Every DNS name the cluster would answer for the rendered Services and StatefulSet pods."""
        domain = "cluster.local"
        hosts: set[str] = set()
        for service in self.rendered.of_kind("Service"):
            name, namespace = service["metadata"]["name"], service["metadata"].get("namespace", self.namespace)
            hosts |= {name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.{domain}"}
        for statefulset in self.rendered.of_kind("StatefulSet"):
            headless = statefulset["spec"]["serviceName"]
            namespace = statefulset["metadata"].get("namespace", self.namespace)
            for ordinal in range(int(statefulset["spec"].get("replicas", 1))):
                pod = f"{statefulset['metadata']['name']}-{ordinal}"
                hosts.add(f"{pod}.{headless}.{namespace}.svc.{domain}")
        return sorted(hosts)

    def secret_value(self, name: str, key: str) -> str:
        secret = self.rendered.get("Secret", name)
        if key in secret.get("stringData", {}):
            return str(secret["stringData"][key])
        return base64.b64decode(secret["data"][key]).decode()

    def config_map_value(self, name: str, key: str) -> str:
        return str(self.rendered.get("ConfigMap", name)["data"][key])

    def env_of(self, workload: Workload, container: dict[str, Any], pod_name: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), str(item["value"]))
                continue
            source = item["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = self.secret_value(ref["name"], ref["key"])
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[item["name"]] = self.config_map_value(ref["name"], ref["key"])
            elif "fieldRef" in source:
                env[item["name"]] = self._field(workload, source["fieldRef"]["fieldPath"], pod_name)
            else:
                raise NotImplementedError(f"env source {source}")
        return env

    def _field(self, workload: Workload, path: str, pod_name: str) -> str:
        if path == "metadata.name":
            return pod_name
        if path == "metadata.namespace":
            return self.namespace
        match = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
        if match:
            return str(workload.labels[match.group(1)])
        raise NotImplementedError(f"fieldRef {path}")

    # --- docker run ---------------------------------------------------------------------------------------

    def is_ours(self, container: dict[str, Any]) -> bool:
        return container["image"].rsplit(":", 1)[0] in self.our_images

    def run_args(self, workload: Workload, container: dict[str, Any], name: str) -> list[str]:
        pod_security = workload.spec.get("securityContext", {})
        security = {**pod_security, **container.get("securityContext", {})}
        args = ["--name", name, "--network", "host", "--hostname", name[:63]]
        for host in self.cluster_hosts():
            args += ["--add-host", f"{host}:127.0.0.1"]
        if "runAsUser" in security:
            args += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"]
        if "fsGroup" in pod_security:
            args += ["--group-add", str(pod_security["fsGroup"])]
        if security.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        for capability in security.get("capabilities", {}).get("drop", []):
            args += ["--cap-drop", capability]
        for capability in security.get("capabilities", {}).get("add", []):
            args += ["--cap-add", capability]
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        limits = container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            args += ["--memory", str(bytes_of(limits["memory"]))]
        if "cpu" in limits:
            args += ["--cpus", cpus_of(limits["cpu"])]
        args += self._volume_args(workload, container, name)
        for key, value in self.env_of(workload, container, name).items():
            args += ["--env", f"{key}={value}"]
        command, arguments = container.get("command"), container.get("args")
        if command:
            args += ["--entrypoint", command[0]]
        args.append(container["image"])
        if command:
            args += command[1:]
            args += arguments or []
        elif arguments:
            args += arguments
        return args

    def _volume_args(self, workload: Workload, container: dict[str, Any], name: str) -> list[str]:
        volumes = {volume["name"]: volume for volume in workload.spec.get("volumes", [])}
        args: list[str] = []
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                options = ["rw", "mode=1777"]
                if "sizeLimit" in volume["emptyDir"]:
                    options.append(f"size={bytes_of(volume['emptyDir']['sizeLimit'])}")
                args += ["--tmpfs", f"{mount['mountPath']}:{','.join(options)}"]
            elif "configMap" in volume or "secret" in volume:
                folder = self._project_files(workload, volume, self.workdir / name / mount["name"])
                args += ["--volume", f"{folder}:{mount['mountPath']}:ro"]
            else:
                raise NotImplementedError(f"volume {volume}")
        return args

    def _project_files(self, workload: Workload, volume: dict[str, Any], folder: Path) -> Path:
        """A configMap or secret volume as the kubelet writes it: a file per key (or per `items` entry), with
        `defaultMode` (0644 unless set), group-owned by the pod's fsGroup."""
        if "configMap" in volume:
            source = volume["configMap"]
            files = {key: text.encode() for key, text in self.rendered.get("ConfigMap", source["name"])["data"].items()}
        else:
            source = volume["secret"]
            secret = self.rendered.get("Secret", source["secretName"])
            files = {key: base64.b64decode(value) for key, value in secret.get("data", {}).items()}
            files |= {key: str(value).encode() for key, value in secret.get("stringData", {}).items()}
        paths = {item["key"]: item["path"] for item in source.get("items", [])} or {key: key for key in files}
        mode = int(source.get("defaultMode", 0o644))
        group = workload.spec.get("securityContext", {}).get("fsGroup", -1)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        for key, path in paths.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[key])
            os.chown(target, -1, group)
            target.chmod(mode)
        return folder

    def container_name(self, workload: Workload, container: dict[str, Any]) -> str:
        owner = workload.owner["metadata"]["name"]
        return f"{owner}-{container['name']}-{uuid.uuid4().hex[:5]}"

    def start(self, workload: Workload, container: dict[str, Any]) -> RunningContainer:
        name = self.container_name(workload, container)
        self.engine.docker("run", "--detach", *self.run_args(workload, container, name))
        grace = float(workload.spec.get("terminationGracePeriodSeconds", 30))
        running = RunningContainer(name, container, self, grace)
        self.started.append(running)
        return running

    def run_to_completion(self, workload: Workload, container: dict[str, Any], timeout: float) -> tuple[int, str]:
        name = self.container_name(workload, container)
        self.engine.docker("run", "--detach", *self.run_args(workload, container, name))
        running = RunningContainer(name, container, self, 0)
        try:
            code = int(self.engine.docker("wait", name, timeout=timeout).strip())
            return code, running.logs()
        finally:
            running.remove()

    def run_job(self, workload: Workload, timeout: float = 300) -> float:
        """A Job's pod: init containers in order, then its container; each must exit 0. Returns seconds taken."""
        started = time.monotonic()
        for container in workload.containers():
            if not self.is_ours(container):
                self.report(f"  {workload.name}: container {container['name']} skipped (image {container['image']})")
                continue
            code, logs = self.run_to_completion(workload, container, timeout)
            if code != 0:
                raise PodFailed(f"{workload.name}: container {container['name']} exited {code}\n{logs[-3000:]}")
        return time.monotonic() - started

    def cleanup(self) -> None:
        for container in self.started:
            container.remove()
        shutil.rmtree(self.workdir, ignore_errors=True)


def mutated(workload: Workload, change: Callable[[dict[str, Any]], None]) -> Workload:
    """A copy of the workload with its pod spec changed (for the tests that show a broken pod fails)."""
    spec = copy.deepcopy(workload.spec)
    change(spec)
    return Workload(workload.owner, workload.metadata, spec)
