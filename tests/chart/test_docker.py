"""The images and the compose file: hadolint, the shape of each Dockerfile, the build context, and the
compose file held to the same contract as the chart."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from saga_dev.chart import ROOT, chart
from tests.support.service_settings import OTEL_VARIABLES, PYTHON_VARIABLES, SETTINGS, settings_env_names

DOCKERFILES = {service: ROOT / "docker" / f"{service}.Dockerfile" for service in SETTINGS}
COMPOSE = ROOT / "docker" / "compose.yaml"
HADOLINT = Path(sys.executable).with_name("hadolint")


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "warning", *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, continuation lines joined, ARG defaults substituted in FROM."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    args: dict[str, str] = {}
    found: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not found and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        if instruction == "FROM":
            rest = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], rest)
            found.append([])
        if found:
            found[-1].append((instruction, rest))
    return found


@pytest.mark.parametrize("service", SETTINGS)
def test_the_dockerfile_builds_a_slim_non_root_image_without_build_tools(service: str) -> None:
    all_stages = stages(DOCKERFILES[service])
    assert len(all_stages) >= 2, "multi-stage"
    for stage in all_stages:
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[a-f0-9]{64})?", image), image
    final = all_stages[-1]
    instructions = [name for name, _ in final]
    assert "HEALTHCHECK" not in instructions, "Kubernetes probes the service; no HEALTHCHECK"
    user = [rest for name, rest in final if name == "USER"]
    assert user and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user[-1]), "a numeric non-root USER, for runAsNonRoot"
    runs = " ".join(rest for name, rest in final if name == "RUN")
    assert not re.search(r"apt-get|apk |gcc|build-essential|pip install", runs), "nothing built in the final stage"
    copies = [rest for name, rest in final if name == "COPY"]
    assert copies and all(rest.startswith("--from=") for rest in copies), "the final stage copies from the build only"
    env = " ".join(rest for name, rest in final if name == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "the root filesystem is read-only in the cluster"


@pytest.mark.parametrize("service", SETTINGS)
def test_the_image_runs_the_services_own_command_on_its_port(service: str) -> None:
    final = stages(DOCKERFILES[service])[-1]
    entrypoint = [yaml.safe_load(rest) for name, rest in final if name == "ENTRYPOINT"][-1]
    cmd = [yaml.safe_load(rest) for name, rest in final if name == "CMD"][-1]
    package = service.removesuffix("-service")
    scripts = tomllib.loads((ROOT / "services" / package / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == [service] and service in scripts
    assert cmd == ["serve"]
    exposed = [int(rest) for name, rest in final if name == "EXPOSE"]
    assert exposed == [SETTINGS[service]().http_port]
    build = " ".join(rest for name, rest in stages(DOCKERFILES[service])[0])
    assert f"services/{package}" in build and "services/common" in build and "-c constraints.txt" in build
    other = "customer" if package == "order" else "order"
    assert f"services/{other}" not in build, "each image holds common and its own package only"


def test_sagactl_is_in_the_order_image_only() -> None:
    """The chart's CronJobs run `sagactl` in the order-service image: saga-tools is installed there, the same
    way as the service's own packages (pinned by constraints.txt, wheels only), and nowhere else."""
    tools = tomllib.loads((ROOT / "services" / "tools" / "pyproject.toml").read_text())["project"]
    assert tools["scripts"]["sagactl"] == "saga_tools.sagactl:main"
    names = {re.split(r"[<>=!~\[ ;]", dependency, maxsplit=1)[0].lower() for dependency in tools["dependencies"]}
    assert names == {"saga-common", "httpx", "tabulate"}
    pinned = {line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text().split()}
    assert names - {"saga-common"} <= pinned, "every third-party dependency of sagactl is pinned"

    order, customer = (stages(DOCKERFILES[s]) for s in ("order-service", "customer-service"))
    build = order[0]
    copies = [rest for name, rest in build if name == "COPY"]
    assert "services/tools ./services/tools" in copies
    install = next(rest for name, rest in build if name == "RUN" and re.search(r"pip .*install", rest))
    assert "./services/tools" in install and "-c constraints.txt" in install and "--only-binary=:all:" in install
    final_env = " ".join(rest for name, rest in order[-1] if name == "ENV")
    assert "PATH=/opt/saga/bin:" in final_env, "`command: [sagactl]` finds the script on the PATH"
    assert "services/tools" not in " ".join(rest for stage in customer for _, rest in stage)


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_the_build_context_holds_the_packages_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    kept = {path for path in tracked if not dockerignore_excludes(path, patterns)}
    assert "constraints.txt" in kept
    # tools: sagactl, in the order-service image.
    for package in ("common", "order", "customer", "tools"):
        assert any(p.startswith(f"services/{package}/") and p.endswith(".py") for p in kept), package
        assert f"services/{package}/pyproject.toml" in kept
    assert "services/tools/saga_tools/sagactl.py" in kept
    pattern = r"services/(common|order|customer|tools)/"
    assert all(p == "constraints.txt" or re.match(pattern, p) for p in kept), sorted(kept)
    for path in (
        "services/order/x.egg-info/PKG-INFO",
        "services/tools/saga_tools.egg-info/PKG-INFO",
        "services/common/saga_common/__pycache__/a.pyc",
        ".venv/bin/python",
        "tests/support/chart.py",
        "bench-results/x.json",
        ".git/HEAD",
    ):
        assert dockerignore_excludes(path, patterns), path


# ----------------------------------------------------------------------------------------------------------
# docker/compose.yaml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_the_same_images_as_the_chart(compose: dict[str, Any]) -> None:
    services = compose["services"]
    values = chart().values
    for key in ("postgresql", "rabbitmq", "jaeger"):
        image = values[key]["image"]
        wanted = f"{image['repository']}:{image['tag']}"
        assert services["postgres" if key == "postgresql" else key]["image"] == wanted, key
    for service in SETTINGS:
        assert (
            services[service]["image"]
            == f"{values['services'][service.removesuffix('-service')]['image']['repository']}:dev"
        )
        assert services[service]["build"]["dockerfile"] == f"docker/{service}.Dockerfile"
        assert (COMPOSE.parent / services[service]["build"]["context"]).resolve() == ROOT


def test_compose_references_resolve_and_ports_stay_local(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), image


@pytest.mark.parametrize("service", SETTINGS)
def test_compose_sets_only_variables_the_service_reads_and_they_parse(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("SAGA_", "OTEL_")) or name in {"DATABASE_URL", "RABBITMQ_BROKER_URL"}:
            monkeypatch.delenv(name)
    migrate = service.removesuffix("-service") + "-migrate"
    for name in (service, migrate):
        env = compose["services"][name]["environment"]
        assert set(env) <= settings_env_names(SETTINGS[service]) | OTEL_VARIABLES | PYTHON_VARIABLES
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        settings = SETTINGS[service]()
        assert settings.environment == "development"
        assert settings.database_url.startswith("postgresql://postgres@postgres:5432/")
    assert compose["services"][service]["ports"] == [f"127.0.0.1:{settings.http_port}:{settings.http_port}"]
