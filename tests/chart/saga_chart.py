"""Moved to tests/support/chart.py. This name stays while chart tests being edited elsewhere (test_contract,
test_rabbitmq, test_render, test_chart_topology, test_token_signer) import from it; new code imports
tests.support.chart."""

from tests.support.chart import *  # noqa: F403

if __name__ == "__main__":  # `make manifests` runs this module
    import sys

    sys.exit(main(sys.argv[1:]))  # noqa: F405
