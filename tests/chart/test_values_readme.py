"""charts/saga/README.md is generated from values.yaml and must not drift from it."""

from saga_dev.chart_readme import README, VALUES, generate, parse


def test_the_chart_readme_is_generated_from_values_yaml() -> None:
    assert README.read_text() == generate(), (
        "charts/saga/README.md differs from what values.yaml generates: run `make chart-readme`"
    )


def test_every_param_line_is_in_the_table() -> None:
    rows = README.read_text()
    params = [param.path for section in parse(VALUES.read_text()) for param in section.params]
    assert len(params) >= 90
    for path in params:
        assert f"| `{path}` |" in rows


def test_a_changed_description_or_default_changes_the_readme() -> None:
    text = VALUES.read_text()
    changed = text.replace("maxUnavailable: 1", "maxUnavailable: 2", 1)
    assert changed != text
    assert generate(changed) != generate(text)
    described = text.replace("Replicas when autoscaling is off.", "Replicas, autoscaling off.", 1)
    assert described != text
    assert generate(described) != generate(text)
