"""k8s/kind-config.yaml and skaffold.yaml: valid against strict schemas of the project's own (no schema is
published in any package here), and consistent with the chart, the Dockerfiles and the Makefile."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from saga_dev.chart import CHART_DIR, ROOT
from tests.support.chart import render

SCHEMAS = Path(__file__).parent / "schemas"
KIND_CONFIG = ROOT / "k8s" / "kind-config.yaml"
SKAFFOLD = ROOT / "skaffold.yaml"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


def check(schema: str, document: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--schemafile", str(SCHEMAS / schema), str(document)], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("schema", "document"), [("kind-config.schema.json", KIND_CONFIG), ("skaffold.schema.json", SKAFFOLD)]
)
def test_the_config_is_valid(schema: str, document: Path) -> None:
    result = check(schema, document)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("schema", "document", "path"),
    [
        ("kind-config.schema.json", KIND_CONFIG, ["nodes", 0, "rol"]),
        ("kind-config.schema.json", KIND_CONFIG, ["networkin"]),
        ("skaffold.schema.json", SKAFFOLD, ["deploy", "helm", "releases", 0, "setValueTemplate"]),
        ("skaffold.schema.json", SKAFFOLD, ["portForward", 0, "localport"]),
    ],
)
def test_the_schemas_refuse_unknown_fields(schema: str, document: Path, path: list[Any], tmp_path: Path) -> None:
    data = yaml.safe_load(document.read_text())
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = "x"
    broken = tmp_path / document.name
    broken.write_text(yaml.safe_dump(data))
    assert check(schema, broken).returncode != 0


@pytest.fixture(scope="module")
def skaffold() -> dict[str, Any]:
    return yaml.safe_load(SKAFFOLD.read_text())


def makefile_default(name: str) -> str:
    match = re.search(rf"^{name} \?= (\S+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert match, f"the Makefile has no default for {name}"
    return match.group(1)


def test_kind_skaffold_and_makefile_name_the_same_cluster(skaffold: dict[str, Any]) -> None:
    cluster = yaml.safe_load(KIND_CONFIG.read_text())["name"]
    assert makefile_default("KIND_CLUSTER") == cluster
    profile = next(p for p in skaffold["profiles"] if p["name"] == "kind")
    assert profile["activation"] == [{"kubeContext": f"kind-{cluster}"}]
    assert {"op": "add", "path": "/deploy/kubeContext", "value": f"kind-{cluster}"} in profile["patches"]
    release = skaffold["deploy"]["helm"]["releases"][0]
    assert release["name"] == makefile_default("HELM_RELEASE")
    assert release["namespace"] == makefile_default("K8S_NAMESPACE")


def sanitized(image: str) -> str:
    return re.sub(r"[/\-.:]", "_", image)


def test_skaffold_builds_both_images_and_deploys_the_chart_with_them(skaffold: dict[str, Any]) -> None:
    artifacts = {a["image"]: a for a in skaffold["build"]["artifacts"]}
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    release = skaffold["deploy"]["helm"]["releases"][0]
    assert (ROOT / release["chartPath"]).resolve() == CHART_DIR
    templates = release["setValueTemplates"]
    for key in ("order", "customer"):
        image = values["services"][key]["image"]["repository"]
        artifact = artifacts[image]
        assert (ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
        assert templates[f"services.{key}.image.repository"] == f"{{{{.IMAGE_REPO_{sanitized(image)}}}}}"
        assert templates[f"services.{key}.image.tag"] == f"{{{{.IMAGE_TAG_{sanitized(image)}}}}}"
    assert skaffold["build"]["local"]["push"] is False, "kind loads local images; nothing is pushed"
    # The keys skaffold sets are values the chart accepts (its schema refuses unknown keys).
    overrides: dict[str, Any] = {}
    for dotted in templates:
        node = overrides
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = "skaffold-placeholder"
    rendered = render(overrides)
    images = {c["image"] for w in rendered.workloads() for c in w.containers()}
    assert "skaffold-placeholder:skaffold-placeholder" in images


def test_skaffold_forwards_the_order_api_jaeger_and_grafana(skaffold: dict[str, Any]) -> None:
    release = skaffold["deploy"]["helm"]["releases"][0]
    rendered = render(name=release["name"], namespace=release["namespace"])
    forwarded = {}
    for forward in skaffold["portForward"]:
        assert forward["namespace"] == release["namespace"]
        service = rendered.get("Service", forward["resourceName"])
        assert forward["port"] in {p["port"] for p in service["spec"]["ports"]}
        forwarded[service["metadata"]["labels"]["app.kubernetes.io/component"]] = forward["localPort"]
    assert forwarded == {"order-service": 8001, "jaeger": 16686, "grafana": 3000}


def test_yamllint_passes_on_the_yaml_files_and_the_rendered_chart(tmp_path: Path) -> None:
    rendered = tmp_path / "rendered"
    for name, text in render().templates.items():
        if text.strip() and not name.endswith("NOTES.txt"):
            target = rendered / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    files = [
        ROOT / "k8s",
        SKAFFOLD,
        ROOT / "docker" / "compose.yaml",
        CHART_DIR / "values.yaml",
        CHART_DIR / "Chart.yaml",
        rendered,
    ]
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("yamllint")),
            "--strict",
            "-c",
            str(Path(__file__).parent / "yamllint.yaml"),
        ]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
