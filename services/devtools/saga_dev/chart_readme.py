"""charts/saga/README.md, generated from the `## @section` and `## @param` lines of charts/saga/values.yaml.

`python -m saga_dev.chart_readme > charts/saga/README.md` (what `make chart-readme` runs) rewrites it;
tests/chart/test_values_readme.py fails when the file drifts from values.yaml. The descriptions live where
the values are declared, so there is one place to change either.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(os.environ.get("SAGA_REPO_ROOT", Path(__file__).resolve().parents[3]))
CHART_DIR = ROOT / "charts" / "saga"
VALUES = CHART_DIR / "values.yaml"
README = CHART_DIR / "README.md"

HEADER = """\
# The saga chart

<!-- Generated from values.yaml by `make chart-readme` (python -m saga_dev.chart_readme): edit values.yaml,
     then regenerate. tests/chart/test_values_readme.py fails when this file and values.yaml disagree. -->

Both services of the saga (order and customer), one PostgreSQL StatefulSet per service, a RabbitMQ cluster
with quorum queues, and, switchable, Jaeger, Prometheus and Grafana with the project's dashboards and alert
rules; the reconciliation and retention CronJobs. How to install it on kind, and what to do when something
does not come up: [docs/deploy-kind.md](../../docs/deploy-kind.md).

```sh
helm upgrade --install saga charts/saga -n saga --create-namespace --set serviceDefaults.image.tag=dev
```

`values.schema.json` refuses unknown keys. Maps are merged key by key where a section says so (lists and
scalars are replaced).

## Values
"""

_SECTION = re.compile(r"^\s*## @section (.+)$")
_PARAM = re.compile(r"^\s*## @param (\S+) (.+)$")
_NOTE = re.compile(r"^\s*## ?(.*)$")


@dataclass
class Param:
    path: str
    description: str


@dataclass
class Section:
    title: str
    notes: list[str] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)


def parse(text: str) -> list[Section]:
    sections: list[Section] = []
    for line in text.splitlines():
        if match := _SECTION.match(line):
            sections.append(Section(match.group(1).strip()))
        elif match := _PARAM.match(line):
            if not sections:
                raise ValueError(f"`## @param {match.group(1)}` before any `## @section`")
            sections[-1].params.append(Param(match.group(1), match.group(2).strip()))
        elif sections and not sections[-1].params and (match := _NOTE.match(line)):
            # `## ` lines right under a section title (before its first value) describe the section.
            sections[-1].notes.append(match.group(1))
    return sections


def lookup(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node


def show(value: Any) -> str:
    if value == "":
        return '`""`'
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return "`" + text.replace("|", "\\|") + "`"


def generate(text: str | None = None) -> str:
    text = VALUES.read_text() if text is None else text
    values = yaml.safe_load(text)
    out = [HEADER]
    for section in parse(text):
        out.append(f"### {section.title}\n")
        notes = " ".join(note.strip() for note in section.notes if note.strip())
        if notes:
            out.append(notes + "\n")
        out.append("| Name | Description | Default |\n| --- | --- | --- |")
        for param in section.params:
            description = param.description.replace("|", "\\|")
            out.append(f"| `{param.path}` | {description} | {show(lookup(values, param.path))} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(generate())
