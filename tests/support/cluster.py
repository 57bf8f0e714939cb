"""The cluster the tier runs the chart on, and what the tier does to it with kubectl and the Helm CLI.

Two sources (`ClusterUnderTest.from_environment`):
- `SAGA_CLUSTER_CONTEXT` names a kubeconfig context (a kind cluster on a laptop): kubectl and helm from PATH,
  our images built with the user's Docker and loaded with `kind load` (SAGA_KIND_CLUSTER, default from the
  context name), the chart's own images pulled by the cluster;
- otherwise the single-node cluster of `saga_dev.node`, built and started here: its own kubectl and Helm, the
  images imported into its containerd, the registry's images swapped by tests/cluster/values-local.yaml.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saga_dev.probes import free_port, port_open
from tests.support.waiting import TimedOut, wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "saga"
LOCAL_VALUES = ROOT / "tests" / "cluster" / "values-local.yaml"

TAG = "cluster"
NEXT_TAG = "cluster-next"  # the same images under a new tag: `helm upgrade` rolls every pod of both services
FIGURES: dict[str, float] = {}  # the tier's timings, filled by its fixtures and tests, printed at the end


def say(line: str) -> None:
    print(f"[cluster] {line}", flush=True)


class ClusterFailure(AssertionError):
    pass


@dataclass
class ClusterUnderTest:
    kubectl_bin: str
    helm_bin: str
    kubeconfig: Path | None = None
    context: str | None = None
    values_files: list[Path] = field(default_factory=list)

    # -- commands ---------------------------------------------------------------------------------------

    def base_args(self, context_flag: str = "--context") -> list[str]:
        """Which cluster: kubectl names the context's flag --context, helm --kube-context."""
        args = []
        if self.kubeconfig:
            args.append(f"--kubeconfig={self.kubeconfig}")
        if self.context:
            args.append(f"{context_flag}={self.context}")
        return args

    def kubectl(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        result = subprocess.run(
            [self.kubectl_bin, *self.base_args(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterFailure(f"kubectl {' '.join(args)} failed: {result.stderr.strip() or result.stdout}")
        return result.stdout

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def helm(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.helm_bin, *self.base_args("--kube-context"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterFailure(f"helm {' '.join(args)} failed:\n{result.stderr.strip() or result.stdout}")
        return result

    def env(self) -> dict[str, str]:
        """The environment a user's shell would have for this cluster (make targets read it)."""
        env = dict(os.environ)
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        path = [str(Path(self.kubectl_bin).parent), str(Path(self.helm_bin).parent)]
        env["PATH"] = ":".join([*path, env.get("PATH", "")])
        return env

    # -- what the tier does -----------------------------------------------------------------------------

    def install(self, release: str, namespace: str, *extra: str, timeout: str = "10m") -> float:
        """`helm upgrade --install --wait` (the Makefile's `make deploy`); on failure, the reason per pod."""
        values = [arg for path in self.values_files for arg in ("--values", str(path))]
        started = time.monotonic()
        result = self.helm(
            "upgrade",
            "--install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--create-namespace",
            *values,
            *extra,
            "--wait",
            f"--timeout={timeout}",
            check=False,
        )
        if result.returncode != 0:
            raise ClusterFailure(
                f"helm upgrade --install {release} failed after {time.monotonic() - started:.0f} s: "
                f"{result.stderr.strip()}\n{self.diagnose(namespace)}"
            )
        return time.monotonic() - started

    def diagnose(self, namespace: str) -> str:
        """Every pod of the namespace that is not ready, and why (container states, probes, events)."""
        try:
            pods = self.kubectl_json("get", "pods", "--namespace", namespace)["items"]
            events = self.kubectl_json("get", "events", "--namespace", namespace)["items"]
        except (ClusterFailure, subprocess.TimeoutExpired, ValueError) as exc:
            return f"(no diagnosis: {exc})"
        lines = []
        for pod in pods:
            name = pod["metadata"]["name"]
            reasons = pod_problems(pod)
            if not reasons:
                continue
            seen = [e for e in events if e["involvedObject"].get("name") == name and e.get("type") == "Warning"]
            for event in seen[-3:]:
                reasons.append(f"event {event.get('reason')}: {event.get('message', '').strip()[:300]}")
            lines.append(f"pod {name}: " + "; ".join(reasons))
        return "\n".join(lines) or "every pod is ready"

    def wait_for(self, what: str, probe: Callable[[], Any], until: Callable[[Any], bool], timeout: float) -> Any:
        try:
            return wait_until(
                probe,
                until=until,
                timeout=timeout,
                interval=1,
                ignoring=(ClusterFailure, subprocess.TimeoutExpired),
                what=what,
            )
        except TimedOut as exc:
            raise ClusterFailure(str(exc)) from None

    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, port: int, *, resilient: bool = False) -> Iterator[int]:
        """`kubectl port-forward` as a user runs it; yields the local port. A forward to a Service holds one of
        its pods: `resilient` starts it again on the same port when that pod goes (a rolling upgrade), as a user
        would, so new connections reach a pod that is there."""
        local = free_port()
        command = [
            self.kubectl_bin,
            *self.base_args(),
            "port-forward",
            "--namespace",
            namespace,
            target,
            f"{local}:{port}",
            "--address=127.0.0.1",
        ]
        current: list[subprocess.Popen[str]] = []
        stop = threading.Event()

        def launch() -> subprocess.Popen[str]:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            current[:] = [process]
            return process

        process = launch()
        try:
            wait_until(
                lambda: port_open(local) or process.poll() is not None,
                timeout=30,
                interval=0.1,
                what=f"kubectl port-forward {target} listening on {local}",
            )
        except TimedOut as exc:
            raise ClusterFailure(str(exc)) from None
        if not port_open(local):
            raise ClusterFailure(
                f"kubectl port-forward {target} exited: {process.stderr.read() if process.stderr else ''}"
            )

        def keep() -> None:
            while not stop.wait(0.5):
                if current[0].poll() is not None:
                    launch()

        keeper = threading.Thread(target=keep, daemon=True)
        if resilient:
            keeper.start()
        try:
            yield local
        finally:
            stop.set()
            if resilient:
                keeper.join(5)
            for running in current:
                running.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    running.wait(10)


def pod_problems(pod: dict[str, Any]) -> list[str]:
    """Why a pod is not ready (empty when it is, or when it completed)."""
    status = pod.get("status", {})
    if status.get("phase") == "Succeeded":
        return []
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
    if ready and ready.get("status") == "True":
        return []
    reasons = [f"phase {status.get('phase')}"]
    scheduled = next((c for c in status.get("conditions", []) if c["type"] == "PodScheduled"), None)
    if scheduled and scheduled.get("status") != "True":
        reasons.append(f"not scheduled: {scheduled.get('message')}")
    for container in [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]:
        state = container.get("state", {})
        if "waiting" in state:
            waiting = state["waiting"]
            reasons.append(f"{container['name']} waiting: {waiting.get('reason')} {waiting.get('message', '')}".strip())
        elif "terminated" in state and state["terminated"].get("exitCode") != 0:
            terminated = state["terminated"]
            reasons.append(f"{container['name']} exited {terminated.get('exitCode')} ({terminated.get('reason')})")
        elif not container.get("ready"):
            reasons.append(f"{container['name']} running, not ready")
        last = container.get("lastState", {}).get("terminated")
        if last:
            reasons.append(f"{container['name']} last exit {last.get('exitCode')} ({last.get('reason')})")
    return reasons
