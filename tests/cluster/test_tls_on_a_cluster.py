"""The chart's `tls.enabled` on the real cluster, after the main release is gone: a release whose databases and
brokers speak TLS only (certificates the chart generates), installed with `--wait`, its `helm test` saga
fulfilled, and every connection the services hold encrypted, seen from the servers themselves."""

from __future__ import annotations

from collections.abc import Iterator

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
