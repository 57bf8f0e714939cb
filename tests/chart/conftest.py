"""The chart tier: charts/saga rendered by the real Helm engine for the defaults and for value sets that flip
its options. Nothing here needs a cluster, a Docker engine or the network. Marker: `chart` (from the folder)."""

from __future__ import annotations

import pytest

from tests.support.chart import ALL_VARIANTS, Rendered, rendered_variant


@pytest.fixture(params=ALL_VARIANTS)
def variant(request: pytest.FixtureRequest) -> Rendered:
    return rendered_variant(request.param)


@pytest.fixture
def default() -> Rendered:
    return rendered_variant("defaults")
