"""charts/saga rendered by Helm's own engine (helm-python-sdk), as `helm install` renders it: for the generator
of the plain manifests here and for the chart tier's tests."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = ROOT / "charts" / "saga"
RELEASE = "saga"
NAMESPACE = "saga"


@functools.cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(str(CHART_DIR))


def render_templates(
    values: dict[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    """Every template of the chart (hooks and `helm test` included), by template path."""
    return chart().render(values or {}, name=name, namespace=namespace)


def objects_of(templates: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects in rendered templates (NOTES.txt is text, not objects), in template order."""
    return [
        document
        for template, text in sorted(templates.items())
        if not template.endswith("NOTES.txt")
        for document in yaml.safe_load_all(text)
        if document
    ]


def hook_of(obj: dict[str, Any]) -> str | None:
    return (obj["metadata"].get("annotations") or {}).get("helm.sh/hook")
