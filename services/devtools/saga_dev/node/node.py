"""The single-node Kubernetes: every part a plain process in a network namespace of its own, started in order,
waited on, stopped by its pid.

    node = Node.default()
    node.up(log)       # finds a running node, or cleans up after a crashed one and starts afresh
    node.kubeconfig    # for kubectl and helm on this machine's loopback (the API through socat)
    node.down(log)     # nothing left: processes, mounts, namespaces, the pods' data

The namespace `saga-node` has `lo` and a veth pair with both ends inside it, the node's address on one end and a
route for the Service range only: no default route, so a pod's pull or DNS query toward anything outside fails
at once ("network is unreachable") and no packet leaves. Pods get 10.244.0.0/24 on the bridge cni0 (Debian's
CNI plugins); CoreDNS answers cluster names and nothing else (no `forward`); local-path-provisioner is the
default StorageClass; kube-router's policy controller enforces NetworkPolicies, as kind's CNI does. The API
server is reached from the machine's loopback through socat (127.0.0.1:SAGA_NODE_API_PORT, default 16443), so
kubectl, helm and `kubectl port-forward` run outside as a user's do.

What stays between runs (ROOT, default /var/lib/saga-node): the certificates and containerd's image store.
What goes with `down`: etcd's data (each `up` is a new cluster), the kubelet's and the pods' files.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saga_dev.node.build import binary
from saga_dev.node.images import HELPER, PAUSE, Archive
from saga_dev.node.parts import KUBERNETES_VERSION
from saga_dev.probes import pid_alive, port_open

NODE_NAME = "saga-node"
NETNS = "saga-node"
NODE_IP = "10.250.0.2"
PEER_IP = "10.250.0.3"
POD_CIDR = "10.244.0.0/16"
NODE_POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN = "/usr/lib/cni"

Log = Callable[[str], None]


class NodeError(RuntimeError):
    pass


def _run(command: list[str], *, check: bool = True, timeout: float = 120, **kwargs: Any) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip() or result.stdout}")
    return result.stdout


def in_namespace(function: Callable[[], Any]) -> Any:
    """Run `function` on a thread that has entered the node's network namespace (setns acts on one thread):
    its sockets are the node's."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = os.open(f"/run/netns/{NETNS}", os.O_RDONLY)
        try:
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "setns")
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=target, name="in-node-netns")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    def get() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    return bool(in_namespace(get))


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Component:
    name: str
    argv: list[str]
    ready: Callable[[], bool] | None = None
    ready_timeout_s: float = 60
    stop_timeout_s: float = 20
    env: dict[str, str] | None = None
    in_namespace: bool = True


@dataclass
class Node:
    root: Path
    api_port: int

    @classmethod
    def default(cls) -> Node:
        return cls(
            Path(os.environ.get("SAGA_NODE_ROOT", "/var/lib/saga-node")),
            int(os.environ.get("SAGA_NODE_API_PORT", "16443")),
        )

    # -- paths ----------------------------------------------------------------------------------------------

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def configs(self) -> Path:
        return self.root / "kubeconfigs"

    @property
    def kubeconfig(self) -> Path:
        """The administrator's kubeconfig on this machine's loopback (what kubectl and helm get)."""
        return self.root / "kubeconfig"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    # -- processes ------------------------------------------------------------------------------------------

    def _pid(self, name: str) -> int | None:
        try:
            return int(self.pid_file(name).read_text())
        except (OSError, ValueError):
            return None

    def _start(self, component: Component, log: Log) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_file(component.name).open("ab") as out:
            process = subprocess.Popen(
                [*(["nsenter", f"--net=/run/netns/{NETNS}", "--"] if component.in_namespace else []), *component.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # our pid is the process itself: nsenter execs it
                env={**os.environ, **(component.env or {})},
                cwd=self.root,
            )
        self.pid_file(component.name).write_text(str(process.pid))
        if component.ready is None:
            return
        deadline = time.monotonic() + component.ready_timeout_s
        while not component.ready():
            if process.poll() is not None:
                raise NodeError(f"{component.name} exited with {process.returncode}:\n{self.log_tail(component.name)}")
            if time.monotonic() > deadline:
                raise NodeError(
                    f"{component.name} not ready after {component.ready_timeout_s:.0f} s:\n"
                    f"{self.log_tail(component.name)}"
                )
            time.sleep(0.2)
        log(f"{component.name} ready in {time.monotonic() - started:.1f} s")

    def _stop(self, name: str, timeout_s: float = 20) -> None:
        pid = self._pid(name)
        if pid is not None and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.pid_file(name).unlink(missing_ok=True)

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.log_file(name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- state ----------------------------------------------------------------------------------------------

    COMPONENTS = (
        "etcd",
        "kube-apiserver",
        "api-forward",
        "kube-controller-manager",
        "kube-scheduler",
        "containerd",
        "kubelet",
        "kube-proxy",
        "coredns",
        "local-path-provisioner",
        "kube-router",
    )

    def running(self) -> list[str]:
        return [name for name in self.COMPONENTS if (pid := self._pid(name)) is not None and pid_alive(pid)]

    def is_up(self) -> bool:
        if self.running() != list(self.COMPONENTS):
            return False
        try:
            return self.kubectl("get", "--raw", "/readyz", timeout=10).strip() == "ok"
        except (NodeError, subprocess.TimeoutExpired):
            return False

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60, check: bool = True) -> str:
        return _run(
            [str(binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            timeout=timeout,
            check=check,
        )

    def apply(self, manifest: str) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest)

    # -- up -------------------------------------------------------------------------------------------------

    def up(self, images: list[Archive], log: Log) -> float:
        """Start the node (or find it running); returns the seconds it took."""
        started = time.monotonic()
        if self.is_up():
            log(f"node {NODE_NAME} already running (API on 127.0.0.1:{self.api_port})")
            self.import_images(images, log)
            return time.monotonic() - started
        if self.running() or Path(f"/run/netns/{NETNS}").exists():
            log("a node of an earlier run is partly there: cleaning up first")
            self.down(log)
        self._require_port_free()
        try:
            self._network(log)
            self._certificates(log)
            self._control_plane(log)
            self._runtime(images, log)
            self._node_agents(log)
            self._addons(log)
            self.wait_ready(log)
        except BaseException:
            log("the node did not come up; stopping what started")
            with contextlib.suppress(Exception):
                self.down(log, quiet=True)
            raise
        seconds = time.monotonic() - started
        log(f"node {NODE_NAME} ({KUBERNETES_VERSION}) ready in {seconds:.1f} s; KUBECONFIG={self.kubeconfig}")
        return seconds

    def _require_port_free(self) -> None:
        if port_open(self.api_port):
            raise NodeError(
                f"127.0.0.1:{self.api_port} is in use by something that is not this node: "
                "set SAGA_NODE_API_PORT to a free port"
            )

    def _network(self, log: Log) -> None:
        ip = ["ip", "-n", NETNS]
        _run(["ip", "netns", "add", NETNS])
        _run([*ip, "link", "set", "lo", "up"])
        _run([*ip, "link", "add", "veth-node", "type", "veth", "peer", "name", "veth-peer"])
        _run([*ip, "addr", "add", f"{NODE_IP}/24", "dev", "veth-node"])
        _run([*ip, "addr", "add", f"{PEER_IP}/24", "dev", "veth-peer"])
        _run([*ip, "link", "set", "veth-node", "up"])
        _run([*ip, "link", "set", "veth-peer", "up"])
        # The Service range only: kube-proxy's DNAT happens after the routing decision needs a route.
        _run([*ip, "route", "add", SERVICE_CIDR, "dev", "veth-node", "src", NODE_IP])
        for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.route_localnet=1"):
            _run(["ip", "netns", "exec", NETNS, "sysctl", "-qw", key])
        log(f"network namespace {NETNS}: node {NODE_IP}, pods {NODE_POD_CIDR}, services {SERVICE_CIDR}")

    def _certificates(self, log: Log) -> None:
        kubeadm = str(binary("kubeadm"))
        common = [f"--kubernetes-version={KUBERNETES_VERSION}", f"--apiserver-advertise-address={NODE_IP}"]
        if not (self.pki / "ca.crt").exists():
            self.pki.mkdir(parents=True, exist_ok=True)
            _run(
                [
                    kubeadm,
                    "init",
                    "phase",
                    "certs",
                    "all",
                    f"--cert-dir={self.pki}",
                    *common,
                    f"--apiserver-cert-extra-sans=127.0.0.1,{NODE_NAME}",
                    f"--service-cidr={SERVICE_CIDR}",
                    f"--service-dns-domain={CLUSTER_DOMAIN}",
                ]
            )
            log(f"certificates made in {self.pki}")
        if not (self.configs / "admin.conf").exists():
            self.configs.mkdir(parents=True, exist_ok=True)
            _run(
                [
                    kubeadm,
                    "init",
                    "phase",
                    "kubeconfig",
                    "all",
                    f"--cert-dir={self.pki}",
                    f"--kubeconfig-dir={self.configs}",
                    f"--node-name={NODE_NAME}",
                    *common,
                ]
            )
        admin = (self.configs / "admin.conf").read_text()
        self.kubeconfig.write_text(admin.replace(f"https://{NODE_IP}:6443", f"https://127.0.0.1:{self.api_port}"))
        self.kubeconfig.chmod(0o600)

    def _control_plane(self, log: Log) -> None:
        etcd_data = self.root / "etcd"
        shutil.rmtree(etcd_data, ignore_errors=True)
        self._start(
            Component(
                "etcd",
                [
                    str(binary("etcd")),
                    f"--data-dir={etcd_data}",
                    "--name=saga-node",
                    "--listen-client-urls=http://127.0.0.1:2379",
                    "--advertise-client-urls=http://127.0.0.1:2379",
                    "--listen-peer-urls=http://127.0.0.1:2380",
                    "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                    "--initial-cluster=saga-node=http://127.0.0.1:2380",
                    "--listen-metrics-urls=http://127.0.0.1:2381",
                    "--quota-backend-bytes=1073741824",
                    "--log-level=warn",
                ],
                ready=lambda: _http_ok("http://127.0.0.1:2381/health"),
            ),
            log,
        )
        pki = self.pki
        self._start(
            Component(
                "kube-apiserver",
                [
                    str(binary("kube-apiserver")),
                    f"--advertise-address={NODE_IP}",
                    "--secure-port=6443",
                    "--etcd-servers=http://127.0.0.1:2379",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    f"--client-ca-file={pki}/ca.crt",
                    f"--tls-cert-file={pki}/apiserver.crt",
                    f"--tls-private-key-file={pki}/apiserver.key",
                    f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
                    f"--kubelet-client-key={pki}/apiserver-kubelet-client.key",
                    "--kubelet-preferred-address-types=InternalIP",
                    f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
                    f"--service-account-key-file={pki}/sa.pub",
                    f"--service-account-signing-key-file={pki}/sa.key",
                    f"--proxy-client-cert-file={pki}/front-proxy-client.crt",
                    f"--proxy-client-key-file={pki}/front-proxy-client.key",
                    f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
                    "--requestheader-allowed-names=front-proxy-client",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-username-headers=X-Remote-User",
                    "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction",
                    "--allow-privileged=false",
                    "--profiling=false",
                ],
                ready=lambda: _http_ok(f"https://{NODE_IP}:6443/readyz", _insecure()),
                ready_timeout_s=90,
            ),
            log,
        )
        self._start(
            Component(
                "api-forward",
                # Outside the namespace: each connection to the machine's loopback enters it to reach the API.
                [
                    "socat",
                    f"TCP-LISTEN:{self.api_port},bind=127.0.0.1,reuseaddr,fork",
                    f"EXEC:nsenter --net=/run/netns/{NETNS} socat STDIO TCP\\:{NODE_IP}\\:6443",
                ],
                ready=self._api_answers_on_loopback,
                in_namespace=False,
            ),
            log,
        )
        self._bootstrap_rbac()
        configs = self.configs
        self._start(
            Component(
                "kube-controller-manager",
                [
                    str(binary("kube-controller-manager")),
                    f"--kubeconfig={configs}/controller-manager.conf",
                    f"--authentication-kubeconfig={configs}/controller-manager.conf",
                    f"--authorization-kubeconfig={configs}/controller-manager.conf",
                    "--bind-address=127.0.0.1",
                    "--allocate-node-cidrs=true",
                    f"--cluster-cidr={POD_CIDR}",
                    "--node-cidr-mask-size=24",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    f"--cluster-signing-cert-file={pki}/ca.crt",
                    f"--cluster-signing-key-file={pki}/ca.key",
                    f"--root-ca-file={pki}/ca.crt",
                    f"--service-account-private-key-file={pki}/sa.key",
                    "--use-service-account-credentials=true",
                    "--controllers=*,bootstrapsigner,tokencleaner",
                    "--profiling=false",
                ],
                ready=lambda: _http_ok("https://127.0.0.1:10257/healthz", _insecure()),
            ),
            log,
        )
        self._start(
            Component(
                "kube-scheduler",
                [
                    str(binary("kube-scheduler")),
                    f"--kubeconfig={configs}/scheduler.conf",
                    f"--authentication-kubeconfig={configs}/scheduler.conf",
                    f"--authorization-kubeconfig={configs}/scheduler.conf",
                    "--bind-address=127.0.0.1",
                    "--profiling=false",
                ],
                ready=lambda: _http_ok("https://127.0.0.1:10259/healthz", _insecure()),
            ),
            log,
        )

    def _api_answers_on_loopback(self) -> bool:
        try:
            return self.kubectl("get", "--raw", "/readyz", timeout=5, check=False).strip() == "ok"
        except subprocess.TimeoutExpired:
            return False

    def _bootstrap_rbac(self) -> None:
        """What `kubeadm init` would create: admin.conf's group is cluster-admin, and the API server may use
        the kubelet's API (exec, logs, port-forward are Forbidden without it)."""
        bindings = [
            ("kubeadm:cluster-admins", "cluster-admin", "Group", "kubeadm:cluster-admins"),
            ("kubeadm:apiserver-kubelet-client", "system:kubelet-api-admin", "User", "kube-apiserver-kubelet-client"),
        ]
        documents = [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
            }
            for name, role, kind, subject in bindings
        ]
        # admin.conf may not bind itself yet: the super-admin's certificate (system:masters) does.
        super_admin = self.configs / "super-admin.conf"
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
        _run(
            [
                str(binary("kubectl")),
                f"--kubeconfig={super_admin}",
                f"--server=https://127.0.0.1:{self.api_port}",
                "apply",
                "--server-side",
                "-f",
                "-",
            ],
            input=manifest,
        )

    def _runtime(self, images: list[Archive], log: Log) -> None:
        containerd = self.root / "containerd"
        (containerd / "root").mkdir(parents=True, exist_ok=True)
        shutil.rmtree(containerd / "state", ignore_errors=True)
        cni_conf = self.root / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        config = containerd / "config.toml"
        config.write_text(
            f"""version = 3
root = "{containerd / "root"}"
state = "{containerd / "state"}"

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{self.containerd_socket}.ttrpc"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE}"

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  # This machine's bounding set lacks CAP_SYS_RESOURCE: a sandbox's oom_score_adj of -998 would be refused.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{binary("runc")}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN}"]
    conf_dir = "{cni_conf}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""
        )
        shim_dir = binary("containerd-shim-runc-v2").parent
        self._start(
            Component(
                "containerd",
                [str(binary("containerd")), f"--config={config}", "--log-level=warn"],
                ready=lambda: self.containerd_socket.exists() and self._ctr("version", check=False) != "",
                env={"PATH": f"{shim_dir}:{os.environ['PATH']}"},
            ),
            log,
        )
        (cni_conf / "10-saga-node.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "saga-node",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": NODE_POD_CIDR}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )
        self.import_images(images, log)

    def _ctr(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        return _run(
            [str(binary("ctr")), f"--address={self.containerd_socket}", "--namespace=k8s.io", *args],
            check=check,
            timeout=timeout,
        )

    def image_refs(self) -> set[str]:
        return set(self._ctr("images", "list", "--quiet").split())

    def import_images(self, images: list[Archive], log: Log) -> None:
        """Import each archive unless containerd holds that very archive under its ref: an archive's name carries
        the digest of its image, so a rebuilt image of a fixed tag (the stand-ins) replaces the one held."""
        present = self.image_refs()
        record = self.root / "imported-images.json"
        imported: dict[str, str] = json.loads(record.read_text()) if record.exists() else {}
        for archive in images:
            if normalized(archive.ref) in present and imported.get(archive.ref) == archive.path.name:
                continue
            started = time.monotonic()
            self._ctr("images", "import", "--local", str(archive.path))
            imported[archive.ref] = archive.path.name
            record.write_text(json.dumps(imported, indent=2))
            log(f"image {archive.ref} imported in {time.monotonic() - started:.1f} s")

    def _node_agents(self, log: Log) -> None:
        kubelet_dir = self.root / "kubelet"
        shutil.rmtree(kubelet_dir, ignore_errors=True)  # unmounted by down(); a fresh cluster, a fresh kubelet
        kubelet_dir.mkdir(parents=True)
        resolv = self.root / "resolv.conf"
        resolv.write_text("")  # pods must never see the machine's resolver
        config = self.root / "kubelet-config.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "cgroupDriver": "cgroupfs",
                    "failCgroupV1": False,  # this machine has cgroup v1
                    "failSwapOn": False,
                    "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": True},
                        "x509": {"clientCAFile": str(self.pki / "ca.crt")},
                    },
                    "authorization": {"mode": "Webhook"},
                    "clusterDNS": [DNS_IP],
                    "clusterDomain": CLUSTER_DOMAIN,
                    "resolvConf": str(resolv),
                    "address": NODE_IP,
                    "healthzBindAddress": "127.0.0.1",
                    "serializeImagePulls": False,
                    "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "staticPodPath": "",
                    "shutdownGracePeriod": "0s",
                }
            )
        )
        self._start(
            Component(
                "kubelet",
                [
                    str(binary("kubelet")),
                    f"--config={config}",
                    f"--kubeconfig={self.configs}/kubelet.conf",
                    f"--root-dir={kubelet_dir}",
                    f"--cert-dir={kubelet_dir}/pki",
                    f"--node-ip={NODE_IP}",
                    f"--hostname-override={NODE_NAME}",
                ],
                ready=lambda: _http_ok("http://127.0.0.1:10248/healthz"),
            ),
            log,
        )
        self._start(
            Component(
                "kube-proxy",
                [
                    str(binary("kube-proxy")),
                    f"--kubeconfig={self.configs}/admin.conf",
                    "--proxy-mode=iptables",
                    f"--cluster-cidr={POD_CIDR}",
                    f"--hostname-override={NODE_NAME}",
                    "--conntrack-max-per-core=0",
                    "--healthz-bind-address=127.0.0.1:10256",
                    "--metrics-bind-address=127.0.0.1:10249",
                ],
                ready=lambda: _http_ok("http://127.0.0.1:10256/healthz"),
            ),
            log,
        )

    def _addons(self, log: Log) -> None:
        self.apply(_addon_manifest())
        corefile = self.root / "Corefile"
        corefile.write_text(
            f""".:53 {{
    errors
    health 127.0.0.1:8180
    ready 127.0.0.1:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.configs}/admin.conf
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""
        )
        self._start(
            Component(
                "coredns",
                [str(binary("coredns")), f"-conf={corefile}"],
                ready=lambda: _http_ok("http://127.0.0.1:8181/ready"),
            ),
            log,
        )
        self.storage.mkdir(parents=True, exist_ok=True)
        self.apply(_storage_manifest(self.storage))
        local_path_config = self.root / "local-path-config.json"
        local_path_config.write_text(
            json.dumps({"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [str(self.storage)]}]})
        )
        self._start(
            Component(
                "local-path-provisioner",
                [
                    str(binary("local-path-provisioner")),
                    "--debug=false",
                    "start",
                    f"--config={local_path_config}",
                    "--namespace=local-path-storage",
                    f"--helper-image={HELPER}",
                    "--service-account-name=local-path-provisioner-service-account",
                    "--configmap-name=local-path-config",
                    "--provisioner-name=rancher.io/local-path",
                ],
                env={"KUBECONFIG": str(self.configs / "admin.conf"), "POD_NAMESPACE": "local-path-storage"},
            ),
            log,
        )
        self._start(
            Component(
                "kube-router",
                [
                    str(binary("kube-router")),
                    f"--kubeconfig={self.configs}/admin.conf",
                    f"--hostname-override={NODE_NAME}",
                    "--run-router=false",
                    "--run-service-proxy=false",
                    "--run-firewall=true",
                    "--health-port=20244",
                    "--metrics-port=0",
                ],
                ready=lambda: _http_ok("http://127.0.0.1:20244/healthz"),
            ),
            log,
        )

    def wait_ready(self, log: Log, timeout_s: float = 120) -> None:
        started = time.monotonic()
        deadline = started + timeout_s
        last = ""
        while time.monotonic() < deadline:
            last = self.kubectl(
                "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
            ).strip()
            if last == "True":
                break
            time.sleep(0.5)
        else:
            raise NodeError(
                f"node {NODE_NAME} not Ready after {timeout_s:.0f} s (Ready={last!r}):\n{self.log_tail('kubelet')}"
            )
        log(f"node Ready in {time.monotonic() - started:.1f} s")
        while not self.dns_answers():  # through the kube-dns Service: kube-proxy has synced its rules
            if time.monotonic() > deadline:
                raise NodeError(f"cluster DNS ({DNS_IP}) does not answer:\n{self.log_tail('coredns')}")
            time.sleep(0.5)
        log(f"cluster DNS answers on {DNS_IP}")

    def dns_answers(self) -> bool:
        name = f"kubernetes.default.svc.{CLUSTER_DOMAIN}"
        lookup = ["nsenter", f"--net=/run/netns/{NETNS}", "busybox", "nslookup", name, DNS_IP]
        return "10.96.0.1" in _run(lookup, check=False, timeout=10)

    # -- down -----------------------------------------------------------------------------------------------

    def down(self, log: Log, *, quiet: bool = False) -> float:
        started = time.monotonic()
        self._stop("kubelet")
        if self.containerd_socket.exists():
            with contextlib.suppress(NodeError, subprocess.TimeoutExpired, KeyError, RuntimeError):
                _run(
                    [str(binary("crictl")), f"--runtime-endpoint=unix://{self.containerd_socket}", "rmp", "-af"],
                    check=False,
                    timeout=120,
                )
        for name in (
            "kube-router",
            "kube-proxy",
            "coredns",
            "local-path-provisioner",
            "kube-scheduler",
            "kube-controller-manager",
        ):
            self._stop(name)
        self._stop("kube-apiserver", 20)
        self._stop("api-forward")
        self._stop("containerd")
        self._stop("etcd")
        self._kill_leftovers()
        self._unmount_all()
        for line in _run(["ip", "netns", "list"], check=False).splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith("cni-"):
                _run(["ip", "netns", "delete", name], check=False)
        if Path(f"/run/netns/{NETNS}").exists():
            _run(["ip", "netns", "delete", NETNS], check=False)
        for transient in ("etcd", "kubelet", "storage", "containerd/state"):
            shutil.rmtree(self.root / transient, ignore_errors=True)
        seconds = time.monotonic() - started
        if not quiet:
            log(f"node {NODE_NAME} stopped and cleaned up in {seconds:.1f} s")
        return seconds

    def _kill_leftovers(self) -> None:
        """Shims of our containerd, and whatever still runs in the pods' cgroups (a killed shim leaves its
        container's processes behind, reparented to PID 1)."""
        ours = str(self.containerd_socket)
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "containerd-shim" in cmdline and ours in cmdline:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(proc.name), signal.SIGKILL)
        for procs in Path("/sys/fs/cgroup").glob("*/kubepods/**/cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.2)
        for directory in sorted(Path("/sys/fs/cgroup").glob("*/kubepods/**/"), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                directory.rmdir()
        for top in Path("/sys/fs/cgroup").glob("*/kubepods"):
            with contextlib.suppress(OSError):
                top.rmdir()

    def _unmount_all(self) -> None:
        root = str(self.root)
        mounts = []
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1].replace("\\040", " ")
            if target.startswith(root + "/") or (target.startswith("/run/netns/") and "cni-" in target):
                mounts.append(target)
        for target in sorted(set(mounts), key=len, reverse=True):
            subprocess.run(["umount", "--lazy", target], capture_output=True, check=False)


def normalized(ref: str) -> str:
    """An image reference as containerd names it (`saga/order-service:1` is docker.io/saga/order-service:1)."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if "/" in ref else f"docker.io/library/{ref}"


def _addon_manifest() -> str:
    """CoreDNS runs as a process on the node: the kube-dns Service points at it by an EndpointSlice of ours."""
    items: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {
                "clusterIP": DNS_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-node",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "saga-node",
                },
            },
            "addressType": "IPv4",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
            "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def _storage_manifest(storage: Path) -> str:
    setup = '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n'
    teardown = '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n'
    helper_pod = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "helper-pod"},
            "spec": {
                "priorityClassName": "system-node-critical",
                "containers": [{"name": "helper-pod", "image": HELPER, "imagePullPolicy": "Never"}],
            },
        }
    )
    items = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "local-path-storage"}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "local-path-provisioner-service-account", "namespace": "local-path-storage"},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "local-path-config", "namespace": "local-path-storage"},
            "data": {
                "config.json": json.dumps(
                    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [str(storage)]}]}
                ),
                "setup": setup,
                "teardown": teardown,
                "helperPod.yaml": helper_pod,
            },
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
