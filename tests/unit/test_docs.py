"""The docs stay true: every setting, metric and sagactl command the code has is documented (README.md or a
page of docs/), and every relative link and #anchor between the pages resolves."""

import re
from pathlib import Path

import prometheus_client
import pytest

from customer_service.settings import CustomerSettings
from order_service.settings import OrderSettings
from saga_common.contract.messages import EVENT_TYPES
from saga_common.observability import metrics
from saga_tools.sagactl import SagactlSettings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "charts" / "saga" / "README.md"]
DOCS = "\n".join(page.read_text() for page in PAGES)
README = (ROOT / "README.md").read_text()


def env_names(settings_class: type) -> set[str]:
    names = set()
    prefix = settings_class.model_config.get("env_prefix", "")
    for name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(f"{prefix}{name}".upper())
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(alias.choices[0])
    return names


@pytest.mark.parametrize("settings_class", [OrderSettings, CustomerSettings, SagactlSettings])
def test_every_setting_is_in_the_configuration_table(settings_class):
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    missing = {name for name in env_names(settings_class) if f"`{name}`" not in configuration}
    assert not missing, f"settings missing from docs/configuration.md: {sorted(missing)}"


def test_every_metric_is_in_the_metrics_table():
    observability = (ROOT / "docs" / "observability.md").read_text()
    documented = set()
    for wrapper in vars(metrics).values():
        if isinstance(wrapper, prometheus_client.metrics.MetricWrapperBase):
            exposed = wrapper._name + ("_total" if wrapper._type == "counter" else "")
            assert f"| `{exposed}` |" in observability, f"{exposed} is not in docs/observability.md's metrics table"
            documented.add(exposed)
    assert len(documented) >= 15


@pytest.mark.parametrize("page", ["README.md", "docs/message-contract.md"])
def test_every_message_type_is_in_the_contract(page):
    text = (ROOT / page).read_text()
    for routing_key in EVENT_TYPES:
        assert f"| `{routing_key}` |" in text


@pytest.mark.parametrize(
    "command",
    [
        "sagactl order",
        "sagactl dlq list",
        "sagactl dlq show",
        "sagactl dlq replay",
        "sagactl dlq purge",
        "sagactl reconcile",
        "sagactl prune",
    ],
)
def test_commands_are_documented(command):
    assert command in DOCS


@pytest.mark.parametrize("command", ["make run", "make test"])
def test_the_quick_start_is_in_the_readme(command):
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert f"\n{command} " in quick_start


def test_the_readme_stays_a_first_read():
    assert len(README.encode()) < 20_000, "README.md is over 20 KB: move reference material to docs/"


# --- links -------------------------------------------------------------------------------------------------

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", flags=re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _FENCE.sub("", markdown).splitlines():
        if match := re.match(r"^#{1,6} (.+)$", line):
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(markdown: str) -> list[str]:
    return _LINK.findall(_FENCE.sub("", markdown))


def test_slug_follows_github():
    assert slug("What is checked here, without a cluster (`make test-chart`)") == (
        "what-is-checked-here-without-a-cluster-make-test-chart"
    )
    assert slug("Operations: a service is down, broker outage, API errors") == (
        "operations-a-service-is-down-broker-outage-api-errors"
    )
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not ours to check here
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: {resolved} does not exist")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = broken_links(page)
    assert not broken, f"broken links in {page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_the_link_check_can_fail(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Here\n[ok](#here) [ok](other.md#other-page) [web](https://example.org/x)\n"
        "[gone](missing.md) [nowhere](#there) [wrong anchor](other.md#here)\n"
        "```\n[in code](ignored.md)\n```\n"
    )
    assert [problem.split(":")[0] for problem in broken_links(page)] == ["missing.md", "#there", "other.md#here"]
