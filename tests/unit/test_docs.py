"""The README stays true: every setting, metric and sagactl command the code has is documented there."""

from pathlib import Path

import prometheus_client
import pytest

from customer_service.settings import CustomerSettings
from order_service.settings import OrderSettings
from saga_common import metrics
from saga_common.messages import EVENT_TYPES
from saga_tools.sagactl import SagactlSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


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
    missing = {name for name in env_names(settings_class) if f"`{name}`" not in README}
    assert not missing, f"settings missing from the README: {sorted(missing)}"


def test_every_metric_is_in_the_metrics_table():
    documented = set()
    for wrapper in vars(metrics).values():
        if isinstance(wrapper, prometheus_client.metrics.MetricWrapperBase):
            exposed = wrapper._name + ("_total" if wrapper._type == "counter" else "")
            assert f"| `{exposed}` |" in README, f"{exposed} is not in the README's metrics table"
            documented.add(exposed)
    assert len(documented) >= 15


def test_every_message_type_is_in_the_contract():
    for routing_key in EVENT_TYPES:
        assert f"| `{routing_key}` |" in README


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
        "make run",
        "make test",
    ],
)
def test_commands_are_documented(command):
    assert command in README
