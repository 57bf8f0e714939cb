"""The product's modules import downward only: no import circle anywhere under services/, not even one that only
type checking follows, and no layer of saga_common imports one above it."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SERVICES = Path(__file__).parents[2] / "services"
# saga_common's layers, lowest first: a module may import its own layer and the ones before it. The settings
# (and the redaction of the secrets they hold) and the shutdown's time bounds serve every layer; the runtime
# composes the layers below it; the web app builds the runtime; the service CLI runs the app.
LAYERS = [
    "redaction",
    "timeouts",
    "settings",
    "contract",
    "observability",
    "persistence",
    "messaging",
    "runtime",
    "web",
    "cli",
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in SERVICES.glob("*/*/**/*.py"):
        parts = path.relative_to(SERVICES).with_suffix("").parts[1:]
        if "migrations" in parts or parts[0].endswith(".egg-info"):
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every product module this one imports, at run time or under TYPE_CHECKING alike."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        targets |= {name for name in names if name in known}
    return targets


GRAPH = {name: _imports(path, set(_modules())) - {name} for name, path in _modules().items()}


def test_no_module_is_part_of_an_import_circle():
    def circle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for target in GRAPH.get(node, ()):
                if target == start:
                    return [*path, start]
                if target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
        return None

    circles = [circle for name in GRAPH if (circle := circle_from(name))]
    assert not circles, f"import circles: {circles[:3]}"


def test_a_layer_of_saga_common_imports_only_layers_below_it():
    def layer(name: str) -> int | None:
        parts = name.split(".")
        if parts[0] != "saga_common" or len(parts) < 2:
            return None
        assert parts[1] in LAYERS, f"{name} belongs to no layer of saga_common: add it to LAYERS"
        return LAYERS.index(parts[1])

    upward = [
        (name, target)
        for name, targets in GRAPH.items()
        for target in targets
        if (own := layer(name)) is not None and (other := layer(target)) is not None and other > own
    ]
    assert not upward, f"imports of a layer above: {upward}"


def test_the_check_sees_the_layers():
    """The graph is not empty by mistake: the unit of work is imported by the outbox writer, and so on."""
    assert "saga_common.persistence.unit_of_work" in GRAPH["saga_common.persistence.outbox"]
    assert "saga_common.persistence.db" in GRAPH["saga_common.messaging.relay"]


TESTS = SERVICES.parent / "tests"


def test_tests_import_support_only_never_a_test_module_or_a_conftest():
    """Shared test code lives in tests/support (or a tier's own helper module); a test module importing another,
    or a conftest, couples two tiers' fixtures and collects tests twice."""
    wrong = []
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tests."):
                last = node.module.rsplit(".", 1)[-1]
                if last.startswith("test_") or last == "conftest":
                    wrong.append(f"{path.relative_to(TESTS)} imports {node.module}")
    assert not wrong, wrong
