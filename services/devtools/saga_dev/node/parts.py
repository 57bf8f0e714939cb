"""What the node is made of: each part, the Go module and version it is built from, and how.

Every part has a wrapper module of the project's own in k8s/node/modules/<part>/ (go.mod and go.sum committed,
no code): one module per part, because one shared module would upgrade libraries past what another part
builds with (k8s.io/cri-api past containerd's, for one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The one Kubernetes release of the node (its six binaries, kubectl and the staging modules).
KUBERNETES_VERSION = "v1.36.3"


@dataclass(frozen=True)
class Part:
    name: str  # the wrapper module's directory
    module: str
    version: str
    binaries: dict[str, str]  # binary -> Go package
    tags: tuple[str, ...] = ()
    cgo: bool = False
    ldflags: tuple[str, ...] = ()
    # Modules k8s.io/kubernetes maps to ./staging: required at the published v0.<minor>.<patch> instead.
    staging_replaces: bool = False
    notes: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


def _kubernetes_stamps(version: str) -> tuple[str, ...]:
    major, minor = version.lstrip("v").split(".")[:2]
    stamps = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        stamps += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate=2026-01-01T00:00:00Z",
        ]
    return tuple(stamps)


PARTS: dict[str, Part] = {
    part.name: part
    for part in (
        Part(
            "kubernetes",
            "k8s.io/kubernetes",
            KUBERNETES_VERSION,
            {
                name: f"k8s.io/kubernetes/cmd/{name}"
                for name in (
                    "kube-apiserver",
                    "kube-controller-manager",
                    "kube-scheduler",
                    "kubelet",
                    "kube-proxy",
                    "kubeadm",
                    "kubectl",
                )
            },
            ldflags=_kubernetes_stamps(KUBERNETES_VERSION),
            staging_replaces=True,
            notes="the version stamps, or the server says v0.0.0 and the chart's kubeVersion check fails",
        ),
        Part("etcd", "go.etcd.io/etcd/server/v3", "v3.6.13", {"etcd": "go.etcd.io/etcd/server/v3"}),
        Part(
            "containerd",
            "github.com/containerd/containerd/v2",
            "v2.3.4",
            {
                "containerd": "github.com/containerd/containerd/v2/cmd/containerd",
                "containerd-shim-runc-v2": "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
                "ctr": "github.com/containerd/containerd/v2/cmd/ctr",
            },
            tags=("no_btrfs", "no_devmapper", "no_zfs"),
        ),
        Part(
            "runc",
            "github.com/opencontainers/runc",
            "v1.4.3",
            {"runc": "github.com/opencontainers/runc"},
            tags=("seccomp",),
            cgo=True,
            notes="cgo with Debian's libseccomp-dev",
        ),
        Part("crictl", "sigs.k8s.io/cri-tools", "v1.37.0", {"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"}),
        Part("coredns", "github.com/coredns/coredns", "v1.14.7", {"coredns": "github.com/coredns/coredns"}),
        Part(
            "local-path-provisioner",
            "github.com/rancher/local-path-provisioner",
            "v0.0.30",
            {"local-path-provisioner": "github.com/rancher/local-path-provisioner"},
        ),
        Part(
            "kube-router",
            "github.com/cloudnativelabs/kube-router/v2",
            "v2.1.0",
            {"kube-router": "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"},
            notes="NetworkPolicy enforcement only (the one version served; it runs inside the node's namespace)",
        ),
        Part(
            "helm",
            "helm.sh/helm/v4",
            "v4.3.2",
            {"helm": "helm.sh/helm/v4/cmd/helm"},
            ldflags=("-X helm.sh/helm/v4/internal/version.version=v4.3.2",),
        ),
        Part(
            "jaeger",
            "github.com/jaegertracing/jaeger",
            "v1.75.0",
            {"jaeger": "github.com/jaegertracing/jaeger/cmd/jaeger"},
            notes="Jaeger v2 (all-in-one, in-memory), the in-cluster trace store",
        ),
        Part(
            "prometheus",
            "github.com/prometheus/prometheus",
            "v0.305.0",  # Prometheus v3.5.0 (v3.x.y is published as module v0.3xx.y), the chart's default
            {"prometheus": "github.com/prometheus/prometheus/cmd/prometheus"},
            ldflags=("-X github.com/prometheus/common/version.Version=3.5.0",),
            notes="with Kubernetes service discovery, which Debian's build leaves out (the chart scrapes pods)",
        ),
    )
}
