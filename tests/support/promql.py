"""The PromQL of the Grafana dashboards and the Prometheus rules, and the metrics the services expose.

Reusable by any test that holds the dashboards and rules against the services: the static checks in
test_rules_and_dashboards.py, or a test that scrapes running services and looks for every metric name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = REPO_ROOT / "charts" / "saga" / "files" / "grafana" / "dashboards"
PROMETHEUS_DIR = REPO_ROOT / "charts" / "saga" / "files" / "prometheus"

# Grafana's global variables, replaced by values that parse where Grafana would put them (mostly ranges).
GRAFANA_BUILTINS: dict[str, str] = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__from": "0",
    "__to": "3600000",
}
# Sample values for the dashboards' own variables; any other variable becomes PLACEHOLDER (a label value).
DEFAULT_VARIABLES: dict[str, str] = {"service": "order-service", "pod": "order-service-0"}
PLACEHOLDER = "placeholder"

# Labels Prometheus's scrape config adds to every series of the services (`job`/`instance` always exist).
TARGET_LABELS = frozenset({"service", "pod", "job", "instance"})
# Series Prometheus makes up itself, not the services.
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {"up": TARGET_LABELS}

_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*(?P<label>\w+)\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$", re.DOTALL)

_SUFFIXES_BY_TYPE = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from, for messages that name the file and the panel."""

    source: Path
    where: str
    expr: str

    def __str__(self) -> str:
        return f"{self.source.name}: {self.where}"


def substitute_variables(expr: str) -> str:
    """Replace Grafana's `$var`, `${var}`, `${var:format}` and `[[var]]` by values that parse."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name.startswith("__"):
            raise ValueError(f"unknown Grafana built-in variable ${name} in {expr!r}")
        return DEFAULT_VARIABLES.get(name, PLACEHOLDER)

    return _VARIABLE.sub(value, expr)


def parse(expr: str) -> promql_parser.Expr:
    """Parse `expr` (Grafana variables substituted first); raises ValueError naming the expression."""
    text = substitute_variables(expr)
    try:
        return promql_parser.parse(text)
    except ValueError as exc:
        raise ValueError(f"{exc} in {text!r}") from None


def selectors_in_expression(expr: str) -> list[tuple[str, set[str]]]:
    """Every vector selector of `expr` as (metric name, label names its matchers use)."""
    found: list[tuple[str, set[str]]] = []

    def visit(node: promql_parser.Expr) -> None:
        if not isinstance(node, promql_parser.VectorSelector):
            return
        name = node.name
        labels = set()
        for matcher in node.matchers.matchers:
            if matcher.name != "__name__":
                labels.add(matcher.name)
            elif matcher.op == promql_parser.MatchOp.Equal:
                name = matcher.value
            else:
                raise ValueError(f"{expr!r} selects metric names by pattern ({matcher}); name them")
        if node.matchers.or_matchers:
            raise ValueError(f"{expr!r} uses `or` inside a selector; the checks here do not follow it")
        if not name:
            raise ValueError(f"{expr!r} has a selector without a metric name ({node})")
        found.append((name, labels))

    promql_parser.walk(parse(expr), visit)
    return found


def metric_names_in_expression(expr: str) -> set[str]:
    """The metric names `expr` reads, as exposed (`saga_finished_total`, `saga_duration_seconds_bucket`)."""
    return {name for name, _ in selectors_in_expression(expr)}


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def rule_files() -> list[Path]:
    return sorted(path for path in PROMETHEUS_DIR.glob("*.y*ml") if not path.stem.endswith("_test"))


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from iter_panels(panel)


def _variable_query_expression(variable: Mapping[str, Any]) -> str | None:
    query = variable.get("query")
    if isinstance(query, Mapping):
        query = query.get("query")
    if not isinstance(query, str) or not query.strip():
        return None
    if match := _LABEL_VALUES.match(query):
        return match["selector"]
    if match := _QUERY_RESULT.match(query):
        return match["expr"]
    if re.match(r"^\s*(label_values|label_names|metrics)\(", query):
        return None  # no series selector in it (label_values(label), label_names(), metrics(regex))
    return query


def dashboard_expressions(path: Path) -> list[Expression]:
    """The PromQL of a dashboard: panel queries (Prometheus ones) and the template variables' queries."""
    try:
        dashboard = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path.name} is not JSON: {exc}") from None
    found = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            datasource = target.get("datasource") or panel.get("datasource") or {}
            expr = target.get("expr")
            if isinstance(datasource, Mapping) and datasource.get("type") == "jaeger":
                continue
            if expr:
                where = f"panel {panel.get('id')} {panel.get('title')!r}, query {target.get('refId')}"
                found.append(Expression(path, where, expr))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query" and (expr := _variable_query_expression(variable)):
            found.append(Expression(path, f"template variable ${variable.get('name')}", expr))
    return found


def rule_expressions(path: Path) -> list[Expression]:
    found = []
    for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            found.append(Expression(path, f"group {group.get('name')!r}, rule {name!r}", rule["expr"]))
    return found


def located_expressions() -> list[Expression]:
    """Every PromQL expression of the dashboards and the rule files, with where it comes from."""
    found: list[Expression] = []
    for path in dashboard_files():
        found.extend(dashboard_expressions(path))
    for path in rule_files():
        found.extend(rule_expressions(path))
    return found


def exposed_metrics() -> dict[str, frozenset[str]]:
    """Every series name a service exposes, with its label names (before Prometheus adds the target labels).

    Read from prometheus-client's default registry once `saga_common.observability.metrics` is imported: the services'
    own metrics and the client's default process_*/python_* collectors, named as the exposition names them
    (a counter `saga_started` is scraped as `saga_started_total`).
    """
    import prometheus_client

    from saga_common.observability import metrics as saga_metrics

    # A labelled metric with no child yet has no samples to read its label names from.
    declared = {
        wrapper._name: frozenset(wrapper._labelnames)
        for wrapper in vars(saga_metrics).values()
        if isinstance(wrapper, prometheus_client.metrics.MetricWrapperBase)
    }
    exposed: dict[str, frozenset[str]] = {}
    for family in prometheus_client.REGISTRY.collect():
        family_labels = set(declared.get(family.name, ()))
        for sample in family.samples:
            family_labels.update(sample.labels)
        family_labels.discard("le")
        family_labels.discard("quantile")
        names = {sample.name for sample in family.samples} or {
            family.name + suffix for suffix in _SUFFIXES_BY_TYPE.get(family.type, ("",))
        }
        for name in names:
            extra = (
                {"le"}
                if name.endswith("_bucket")
                else {"quantile"}
                if family.type == "summary" and name == family.name
                else set()
            )
            exposed[name] = frozenset(family_labels | extra)
    return exposed
