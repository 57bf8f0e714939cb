"""charts/saga/files/topology.yaml is the code's broker topology (saga_dev.chart_topology) and must not drift from it;
the chart fills in only what its values decide. That the rendered definitions are the code's own, for the
defaults and for changed settings, is test_rabbitmq.py's contract test."""

from __future__ import annotations

import shutil
from pathlib import Path

import helm_python
import pytest
import yaml

from saga_common.contract import topology
from saga_dev import chart_topology
from saga_dev.chart import CHART_DIR


def test_the_committed_topology_is_what_the_code_generates() -> None:
    assert chart_topology.TOPOLOGY_FILE == CHART_DIR / "files" / "topology.yaml"
    assert chart_topology.TOPOLOGY_FILE.read_text() == chart_topology.render(), (
        "charts/saga/files/topology.yaml differs from saga_common.contract.topology: run `make chart-topology`"
    )


def test_a_changed_topology_changes_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    before = chart_topology.render()
    monkeypatch.setitem(
        topology.BINDINGS, topology.ORDER_SERVICE, (*topology.BINDINGS[topology.ORDER_SERVICE], "order.shipped")
    )
    assert chart_topology.render() != before


def test_every_service_and_queue_type_of_the_code_is_in_the_file() -> None:
    generated = yaml.safe_load(chart_topology.TOPOLOGY_FILE.read_text())
    assert set(generated["services"]) == set(topology.BINDINGS)
    assert chart_topology.QUEUE_TYPES == ("quorum", "classic")
    for service, own in generated["services"].items():
        assert set(own["queues"]) == set(chart_topology.QUEUE_TYPES), service
    # The settings' own defaults, for a service whose settings do not say.
    assert generated["defaults"] == {
        "SAGA_EXCHANGE": "saga.events",
        "SAGA_QUEUE_TYPE": "quorum",
        "SAGA_DELIVERY_LIMIT": "20",
        "SAGA_RETRY_DELAYS_MS": "[500, 2000, 10000]",
    }


def test_a_placeholder_the_chart_does_not_fill_in_fails_the_render(tmp_path: Path) -> None:
    chart = tmp_path / "saga"
    shutil.copytree(CHART_DIR, chart)
    file = chart / "files" / "topology.yaml"
    file.write_text(file.read_text().replace("${delivery_limit}", "${delivery_limit_per_queue}"))
    with pytest.raises(helm_python.HelmError, match=r"a placeholder the chart does not fill in.*make chart-topology"):
        helm_python.Chart.load(str(chart)).render({}, name="saga", namespace="saga")
