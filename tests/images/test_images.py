"""What is in the images: each service's commands and nothing of the development harness, and the user the chart
runs them as. (Their pods run from them on a real node in the cluster tier.)"""

from __future__ import annotations

import pytest

from tests.images.built import IMAGE_TAG, OUR_IMAGES, BuiltImages
from tests.support.chart import render

pytestmark = pytest.mark.timeout(900)


def test_the_order_image_holds_the_service_and_sagactl_and_nothing_of_the_development_harness(
    images: BuiltImages,
) -> None:
    listing = images.shell("saga/order-service", "ls /opt/saga/bin; python -c 'import saga_tools, order_service'")
    commands = set(listing.split())
    assert {"order-service", "sagactl"} <= commands
    assert not {"saga-dev", "saga-bench", "pip", "pip3", "customer-service"} & commands, sorted(commands)
    missing = images.shell(
        "saga/order-service",
        'for m in saga_dev pip aiohttp pytest; do python -c "import $m" 2>/dev/null || echo absent:$m; done',
    )
    assert missing.split() == ["absent:saga_dev", "absent:pip", "absent:aiohttp", "absent:pytest"], missing


def test_the_customer_image_holds_the_customer_service_only(images: BuiltImages) -> None:
    commands = set(images.shell("saga/customer-service", "ls /opt/saga/bin").split())
    assert "customer-service" in commands
    assert not {"order-service", "sagactl", "saga-dev", "saga-bench", "pip"} & commands, sorted(commands)


def test_the_images_run_as_the_non_root_user_the_chart_expects(images: BuiltImages) -> None:
    checked = set()
    for workload in render().workloads():
        for container in workload.containers():
            repository = container["image"].rsplit(":", 1)[0]
            if repository not in OUR_IMAGES:
                continue
            user = images.user_of(f"{repository}:{IMAGE_TAG}")
            uid = container.get("securityContext", {}).get("runAsUser") or workload.spec["securityContext"]["runAsUser"]
            assert user.split(":")[0] == str(uid), f"{repository}: USER {user}, {workload.name} runs as {uid}"
            checked.add(repository)
    assert checked == set(OUR_IMAGES)
