"""The user's file stays the user's: official images, published ports, its own network; `docker compose config`
accepts it alone and with the override, and the override changes nothing of the services' environment but what
the host network needs."""

from __future__ import annotations

import subprocess

import yaml

from tests.support.compose import OVERRIDE, USER_FILE, Compose, compose_binary, load

OFFICIAL_IMAGES = {
    "postgres": "postgres:17.6-bookworm",
    "rabbitmq": "rabbitmq:4.1.4-management",
    "jaeger": "jaegertracing/jaeger:2.20.0",
}


def config(*files) -> dict:
    args = [arg for path in files for arg in ("--file", str(path))]
    result = subprocess.run(
        [compose_binary(), *args, "config"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_the_users_file_keeps_the_official_images_and_its_own_network():
    user = load(USER_FILE)
    for service, image in OFFICIAL_IMAGES.items():
        assert user["services"][service]["image"] == image
    assert not any("network_mode" in spec or "extra_hosts" in spec for spec in user["services"].values())
    rendered = config(USER_FILE)
    assert rendered["name"] == "saga"
    assert set(rendered["networks"]) == {"default"}, "a user gets the default bridge network of compose"
    published = {
        (port["host_ip"], port["published"]) for spec in rendered["services"].values() for port in spec.get("ports", [])
    }
    assert {("127.0.0.1", "8001"), ("127.0.0.1", "8002"), ("127.0.0.1", "16686")} <= published
    assert {ip for ip, _ in published} == {"127.0.0.1"}, "every port is published on 127.0.0.1 only"


def test_our_services_have_healthchecks_in_the_users_file():
    rendered = config(USER_FILE)
    for service, port in {"order-service": 8001, "customer-service": 8002}.items():
        test = rendered["services"][service]["healthcheck"]["test"]
        assert f"http://127.0.0.1:{port}/readyz" in " ".join(test)


def test_the_override_swaps_only_network_and_images():
    user = config(USER_FILE)
    merged = config(USER_FILE, OVERRIDE)
    assert set(merged["services"]) == set(user["services"]), "the override adds or removes no service"
    assert "networks" not in merged, "every service on the host network: no network for compose to create"
    stand_in_env = {"POSTGRES_LISTEN_ADDRESSES", "OTLP_LISTEN_ADDRESS"} | {
        key for key in merged["services"]["rabbitmq"].get("environment", {}) if key.startswith(("RABBITMQ_", "ERL_"))
    }
    for name, spec in merged["services"].items():
        original = user["services"][name]
        assert spec["network_mode"] == "host" and not spec.get("ports"), name
        assert set(spec["extra_hosts"]) == {"postgres=127.0.0.2", "rabbitmq=127.0.0.3", "jaeger=127.0.0.4"}
        added = set(spec.get("environment", {})) - set(original.get("environment", {}))
        assert added <= stand_in_env | {"SAGA_HTTP_HOST"}, f"{name}: unexpected variables {added}"
        for key, value in original.get("environment", {}).items():
            assert spec["environment"][key] == value, f"{name}: {key} changed by the override"
        for key in ("command", "entrypoint", "depends_on", "volumes", "read_only", "cap_drop", "restart"):
            assert spec.get(key) == original.get(key), f"{name}: {key} changed by the override"
        if name in ("order-service", "customer-service"):
            assert spec["healthcheck"] == original["healthcheck"], f"{name}: the user's healthcheck is the one run"
    for name in OFFICIAL_IMAGES:
        assert merged["services"][name]["image"].startswith("local/"), "no official name is shadowed"


def test_the_override_runs_with_the_users_project_directory(engine):
    """The compose driver resolves `..` (the build context) from docker/ even for a copy of the file."""
    command = Compose(engine, "saga-config-check").command("config", "--quiet")
    assert "--project-directory" in command and str(USER_FILE.parent) in command
    result = subprocess.run(command, env=engine.env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
