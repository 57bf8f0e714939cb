"""The chart's `tls.enabled` on the real cluster, after the main release is gone: a release whose databases and
brokers speak TLS only and whose APIs speak HTTPS only (certificates the chart generates), installed with `--wait`
(so the HTTPS probes pass), its `helm test` saga fulfilled over HTTPS, every connection the services hold
encrypted, seen from the servers themselves, the APIs answering a client that verifies the release's CA and no
other, and Prometheus scraping both services over HTTPS."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import FIGURES, TAG, ClusterFailure, ClusterUnderTest, say

pytestmark = pytest.mark.timeout(900)

RELEASE = "saga"
NAMESPACE = "saga-tls"


@pytest.fixture(scope="module")
def tls_release(cluster: ClusterUnderTest) -> Iterator[ClusterUnderTest]:
    say(f"helm install {RELEASE} into {NAMESPACE} with tls.enabled=true, --wait")
    FIGURES["install with TLS on every hop, helm install --wait (s)"] = cluster.install(
        RELEASE, NAMESPACE, "--set", f"serviceDefaults.image.tag={TAG}", "--set", "tls.enabled=true"
    )
    yield cluster
    cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--ignore-not-found", timeout=300, check=False)


def in_pod(cluster: ClusterUnderTest, pod: str, *command: str) -> str:
    return cluster.kubectl("exec", "--namespace", NAMESPACE, pod, "--", *command).strip()


def test_a_saga_runs_with_tls_on_every_hop(tls_release: ClusterUnderTest) -> None:
    result = tls_release.helm("test", RELEASE, "--namespace", NAMESPACE, "--logs", check=False)
    if result.returncode != 0:
        raise ClusterFailure(f"helm test failed: {result.stderr or result.stdout}\n{tls_release.diagnose(NAMESPACE)}")
    assert "fulfilled" in result.stdout, result.stdout
    # Over HTTPS: the test pod (kept after its run) called the APIs at https:// URLs, verifying the release's CA.
    pod = tls_release.kubectl_json("get", "pod", f"{RELEASE}-test", "--namespace", NAMESPACE)
    env = {item["name"]: item.get("value") for item in pod["spec"]["containers"][0]["env"]}
    assert env["ORDER_URL"].startswith("https://") and env["CUSTOMER_URL"].startswith("https://"), env
    assert env["SSL_CERT_FILE"], env


@pytest.fixture(scope="module")
def api_ca(tls_release: ClusterUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA of the APIs' certificate, as NOTES.txt tells a user to fetch it."""
    secret = tls_release.kubectl_json("get", "secret", f"{RELEASE}-tls-api", "--namespace", NAMESPACE)
    path = tmp_path_factory.mktemp("api-ca") / "ca.crt"
    path.write_bytes(base64.b64decode(secret["data"]["ca.crt"]))
    return path


@pytest.mark.parametrize(("service", "port"), [("order-service", 8001), ("customer-service", 8002)])
def test_the_api_answers_https_verified_with_the_release_ca_and_nothing_else(
    tls_release: ClusterUnderTest, api_ca: Path, service: str, port: int
) -> None:
    name = f"{RELEASE}-{service}"
    with tls_release.port_forward(NAMESPACE, f"svc/{name}", port) as local:
        url = f"https://127.0.0.1:{local}/healthz"
        # The certificate names the Service, not 127.0.0.1: the TLS client checks the Service's name (curl's
        # --resolve in NOTES.txt does the same).
        as_the_service = {"sni_hostname": name}
        release_ca = ssl.create_default_context(cafile=api_ca)
        with httpx.Client(verify=release_ca, timeout=10) as verifying:
            verified = verifying.get(url, extensions=as_the_service)
            assert verified.status_code == 200, verified.text
        # A client of its own: httpx pools connections by address, so the first client would reuse the connection
        # already verified for the Service's name instead of making a handshake that checks 127.0.0.1.
        with httpx.Client(verify=release_ca, timeout=10) as by_address:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                by_address.get(url)  # 127.0.0.1 is not a name of the certificate
        say(f"{name}: answered over TLS, verified with {RELEASE}-tls-api's ca.crt for the name {name}")
        with httpx.Client(timeout=10) as public_cas_only, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY"):
            public_cas_only.get(url, extensions=as_the_service)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{local}/healthz", timeout=10)  # plain HTTP: no HTTP answer


def test_prometheus_scrapes_both_services_over_https(tls_release: ClusterUnderTest) -> None:
    with tls_release.port_forward(NAMESPACE, f"svc/{RELEASE}-prometheus", 9090) as local:

        def targets() -> list[dict]:
            answer = httpx.get(f"http://127.0.0.1:{local}/api/v1/targets", params={"state": "active"}, timeout=10)
            return [t for t in answer.json()["data"]["activeTargets"] if t["labels"].get("job") == "saga-services"]

        found = tls_release.wait_for(
            "Prometheus's saga-services targets all up",
            targets,
            until=lambda ts: len(ts) >= 2 and all(t["health"] == "up" for t in ts),
            timeout=120,
        )
    say(f"Prometheus scrapes {[t['scrapeUrl'] for t in found]}")
    assert {t["labels"]["service"] for t in found} == {"order-service", "customer-service"}
    assert all(t["scrapeUrl"].startswith("https://") for t in found), found


@pytest.mark.parametrize(("pod", "database"), [("saga-order-db-0", "orders"), ("saga-customer-db-0", "customers")])
def test_every_database_connection_over_the_network_is_encrypted(
    tls_release: ClusterUnderTest, pod: str, database: str
) -> None:
    # Over the local socket (trust), as an operator would look; the services' sessions come over TCP.
    counts = in_pod(
        tls_release,
        pod,
        "psql",
        "--username=postgres",
        f"--dbname={database}",
        "--tuples-only",
        "--no-align",
        "--command=SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a "
        "USING (pid) WHERE a.client_addr IS NOT NULL",
    )
    encrypted, total = (int(n) for n in counts.split("|"))
    say(f"{pod}: {encrypted} of {total} network connections encrypted")
    assert total > 0 and encrypted == total, counts


def test_every_broker_connection_is_tls(tls_release: ClusterUnderTest) -> None:
    flags = in_pod(tls_release, "saga-rabbitmq-0", "rabbitmqctl", "list_connections", "ssl", "--silent").split()
    say(f"broker connections, TLS flag of each: {flags}")
    assert flags and set(flags) == {"true"}, flags
