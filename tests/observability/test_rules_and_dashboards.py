"""The Grafana dashboards and the Prometheus alert rules, checked without running anything.

promtool checks and unit-tests the rules; every PromQL expression of the dashboards and the rules parses and
names only metrics (and labels) the services expose; the dashboards use the provisioned data sources only and
link the saga panels to Jaeger.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from saga_dev.system_packages import fix_for
from tests.support.promql import (
    DASHBOARDS_DIR,
    PROMETHEUS_DIR,
    PROMETHEUS_SERIES,
    TARGET_LABELS,
    Expression,
    dashboard_files,
    exposed_metrics,
    iter_panels,
    located_expressions,
    parse,
    rule_files,
    selectors_in_expression,
    substitute_variables,
)

pytestmark = pytest.mark.observability

EXPECTED_DASHBOARDS = {"saga-overview.json", "order-service.json", "customer-service.json"}
DATASOURCE_UIDS = {"prometheus", "jaeger"}
OPERATIONS_HEADINGS = re.findall(
    r"^#+ (.+)$", (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(), flags=re.MULTILINE
)
SEVERITIES = {"critical", "warning", "info"}
ALERTS = PROMETHEUS_DIR / "alerts.yaml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yaml"


def _collect_expressions() -> tuple[list[Expression], str | None]:
    try:
        return located_expressions(), None
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        return [], f"{type(exc).__name__}: {exc}"


EXPRESSIONS, COLLECTION_ERROR = _collect_expressions()


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if path is None:
        pytest.fail(f"promtool is missing: {fix_for('prometheus')}")
    return path


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def load_dashboards() -> dict[str, dict[str, Any]]:
    dashboards = {}
    for path in dashboard_files():
        try:
            dashboards[path.name] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            pytest.fail(f"{path.name} is not JSON: {exc}")
    return dashboards


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"] if "alert" in rule
    ]


# --- Prometheus rules ---------------------------------------------------------------------------------------


def test_promtool_check_rules(promtool: str) -> None:
    files = rule_files()
    assert ALERTS in files, f"{ALERTS} is missing"
    result = run([promtool, "check", "rules", *map(str, files)], PROMETHEUS_DIR)
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}{result.stderr}"


def test_promtool_test_rules(promtool: str) -> None:
    result = run([promtool, "test", "rules", ALERT_TESTS.name], PROMETHEUS_DIR)
    assert result.returncode == 0, f"promtool test rules {ALERT_TESTS.name} failed:\n{result.stdout}{result.stderr}"


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    problems = []
    for rule in alert_rules():
        name, labels, annotations = rule["alert"], rule.get("labels", {}), rule.get("annotations", {})
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: label severity is {labels.get('severity')!r}, not one of {sorted(SEVERITIES)}")
        for key in ("summary", "description", "runbook"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: annotation {key} is missing")
        runbook = str(annotations.get("runbook", ""))
        if "docs/operations.md" not in runbook and "sagactl" not in runbook:
            problems.append(f"{name}: the runbook annotation names neither a docs/operations.md section nor sagactl")
        for section in re.findall(r'docs/operations\.md, section "([^"]+)"', runbook):
            topic = section.removeprefix("Operations: ")  # one heading covers "a service is down, broker outage, ..."
            if not any(topic in heading for heading in OPERATIONS_HEADINGS):
                problems.append(f"{name}: docs/operations.md has no section {section!r}")
    assert not problems, f"{ALERTS.name}:\n" + "\n".join(problems)


def test_every_alert_has_a_test_that_fires_it_and_one_where_it_stays_quiet() -> None:
    firing: Counter[str] = Counter()
    quiet: Counter[str] = Counter()
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        checks = test.get("alert_rule_test", [])
        fired_here = {check["alertname"] for check in checks if check.get("exp_alerts")}
        firing.update(fired_here)
        # "Not yet" checks before an alert's `for` has passed do not count: healthy series never fire it.
        quiet.update({check["alertname"] for check in checks} - fired_here)
    alerts = {rule["alert"] for rule in alert_rules()}
    problems = [f"{name}: no test where it fires" for name in sorted(alerts - set(firing))]
    problems += [f"{name}: no test where healthy series leave it quiet" for name in sorted(alerts - set(quiet))]
    problems += [
        f"{name}: tested but not defined in {ALERTS.name}" for name in sorted((firing | quiet).keys() - alerts)
    ]
    assert not problems, f"{ALERT_TESTS.name}:\n" + "\n".join(problems)


# --- Grafana dashboards -------------------------------------------------------------------------------------


def test_dashboards_parse_with_unique_uids_and_titles() -> None:
    dashboards = load_dashboards()
    missing = EXPECTED_DASHBOARDS - set(dashboards)
    assert not missing, f"missing dashboards in {DASHBOARDS_DIR}: {sorted(missing)}"
    problems = []
    for key in ("uid", "title"):
        seen: defaultdict[str, list[str]] = defaultdict(list)
        for name, dashboard in dashboards.items():
            value = dashboard.get(key)
            if not isinstance(value, str) or not value:
                problems.append(f"{name}: no {key}")
            else:
                seen[value].append(name)
        problems += [f"{key} {value!r} is used by {files}" for value, files in seen.items() if len(files) > 1]
    for name, dashboard in dashboards.items():
        if len(dashboard.get("uid", "")) > 40:
            problems.append(f"{name}: uid longer than Grafana's 40 characters")
        if not 36 <= dashboard.get("schemaVersion", 0) <= 41:
            problems.append(f"{name}: schemaVersion {dashboard.get('schemaVersion')} is not a Grafana 10/11 one")
        if dashboard.get("id") is not None:
            problems.append(f"{name}: a provisioned dashboard carries no database id (id must be null or absent)")
    assert not problems, "\n".join(problems)


def test_dashboard_panels_have_unique_ids_and_fit_the_grid() -> None:
    problems = []
    for name, dashboard in load_dashboards().items():
        ids = Counter(panel.get("id") for panel in iter_panels(dashboard))
        problems += [f"{name}: panel id {panel_id} used {n} times" for panel_id, n in ids.items() if n > 1]
        for panel in iter_panels(dashboard):
            grid = panel.get("gridPos", {})
            if not {"x", "y", "w", "h"} <= grid.keys() or grid["x"] + grid["w"] > 24:
                problems.append(f"{name}: panel {panel.get('id')} {panel.get('title')!r} has gridPos {grid}")
            if panel.get("type") != "row" and not panel.get("targets"):
                problems.append(f"{name}: panel {panel.get('id')} {panel.get('title')!r} has no query")
    assert not problems, "\n".join(problems)


def _datasource_references(node: Any, path: str) -> list[tuple[str, Any]]:
    """Every `datasource` value anywhere in the dashboard, with a readable path to it."""
    found = []
    if isinstance(node, dict):
        label = f"{path} {node['title']!r}" if "title" in node and "type" in node else path
        for key, value in node.items():
            if key == "datasource":
                found.append((label, value))
            else:
                found += _datasource_references(value, f"{label}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _datasource_references(value, f"{path}[{i}]")
    return found


def test_dashboards_use_only_the_provisioned_datasource_uids() -> None:
    problems = []
    for name, dashboard in load_dashboards().items():
        for where, datasource in _datasource_references(dashboard, "dashboard"):
            uid = datasource.get("uid") if isinstance(datasource, dict) else datasource
            if uid not in DATASOURCE_UIDS:
                problems.append(f"{name}: {where} uses data source {datasource!r}, not uid prometheus or jaeger")
        for panel in iter_panels(dashboard):
            if panel.get("type") != "row" and not isinstance(panel.get("datasource"), dict):
                problems.append(f"{name}: panel {panel.get('id')} {panel.get('title')!r} names no data source uid")
    assert not problems, "\n".join(problems)


def _jaeger_explore_queries(url: str) -> list[dict[str, Any]]:
    """The Jaeger queries of a Grafana Explore link (`/explore?panes=...`), or [] for any other link."""
    parts = urlsplit(url)
    if not parts.path.endswith("/explore"):
        return []
    panes_param = parse_qs(parts.query).get("panes", ["{}"])[0]
    panes = json.loads(panes_param.replace("${__from}", "0").replace("${__to}", "1"))
    return [
        query
        for pane in panes.values()
        if pane.get("datasource") == "jaeger"
        for query in pane.get("queries", [])
        if query.get("datasource", {}).get("uid") == "jaeger"
    ]


def test_saga_panels_link_to_jaeger() -> None:
    overview = load_dashboards()["saga-overview.json"]
    problems = []
    dashboard_links = [q for link in overview.get("links", []) for q in _jaeger_explore_queries(link.get("url", ""))]
    if not any(query.get("service") == "order-service" for query in dashboard_links):
        problems.append("no dashboard link opens Jaeger's search for order-service")
    saga_panels = [
        panel
        for panel in iter_panels(overview)
        if any(
            "saga_finished_total" in t.get("expr", "") or "saga_duration" in t.get("expr", "")
            for t in panel.get("targets", [])
        )
        and panel.get("type") == "timeseries"
    ]
    assert saga_panels, "saga-overview.json has no time series panel on saga_finished_total or saga_duration_seconds"
    for panel in saga_panels:
        links = panel.get("links", []) + panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
        if not any(_jaeger_explore_queries(link.get("url", "")) for link in links):
            problems.append(f"panel {panel['id']} {panel['title']!r} has no link to Jaeger")
    latency = [p for p in saga_panels if any("saga_duration_seconds_bucket" in t["expr"] for t in p["targets"])]
    if not any(t.get("exemplar") for panel in latency for t in panel["targets"]):
        problems.append("no saga latency panel shows exemplars (target `exemplar: true`)")
    if not any(p.get("datasource", {}).get("uid") == "jaeger" for p in iter_panels(overview)):
        problems.append("no panel queries Jaeger itself")
    assert not problems, "saga-overview.json:\n" + "\n".join(problems)


# --- PromQL everywhere --------------------------------------------------------------------------------------


def test_there_are_expressions_to_check() -> None:
    assert COLLECTION_ERROR is None, f"cannot read the dashboards and rules: {COLLECTION_ERROR}"
    sources = {expression.source.name for expression in EXPRESSIONS}
    assert EXPECTED_DASHBOARDS | {ALERTS.name} <= sources, f"expressions found only in {sorted(sources)}"


@pytest.mark.parametrize("expression", EXPRESSIONS, ids=str)
def test_promql_parses(expression: Expression) -> None:
    try:
        parse(expression.expr)
    except ValueError as exc:
        pytest.fail(f"{expression}: PromQL does not parse: {exc}")


def _selectors(expression: Expression) -> list[tuple[str, set[str]]]:
    try:
        return selectors_in_expression(expression.expr)
    except ValueError:
        return []  # test_promql_parses names it


def test_dashboard_promql_also_passes_prometheus_own_parser(promtool: str, tmp_path: Path) -> None:
    """promtool parses the dashboards' queries too, as recording rules: Prometheus's parser is the reference."""
    dashboard_exprs = [e for e in EXPRESSIONS if e.source.suffix == ".json"]
    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": substitute_variables(e.expr)}
        for i, e in enumerate(dashboard_exprs)
    ]
    rule_file = tmp_path / "dashboard_queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = run([promtool, "check", "rules", str(rule_file)], tmp_path)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        named = [f"{e}: {e.expr}" for i, e in enumerate(dashboard_exprs) if f"query_{i}:" in output]
        pytest.fail("promtool rejects dashboard queries:\n" + output + "\n" + "\n".join(named))


def test_every_metric_is_one_the_services_expose() -> None:
    exposed = exposed_metrics() | PROMETHEUS_SERIES
    problems = []
    for expression in EXPRESSIONS:
        for name, _labels in _selectors(expression):
            if name not in exposed:
                problems.append(f"{expression}: metric {name} is not one the services expose")
    assert not problems, "\n".join(problems) + "\n(see services/common/saga_common/observability/metrics.py)"


def test_every_label_matcher_names_a_label_of_its_metric() -> None:
    exposed = exposed_metrics() | PROMETHEUS_SERIES
    problems = []
    for expression in EXPRESSIONS:
        for name, labels in _selectors(expression):
            if name not in exposed:
                continue  # reported by the test above
            unknown = labels - exposed[name] - TARGET_LABELS
            if unknown:
                problems.append(
                    f"{expression}: {name} has no label {', '.join(sorted(unknown))} "
                    f"(it has {', '.join(sorted(exposed[name] | TARGET_LABELS))})"
                )
    assert not problems, "\n".join(problems)
