"""Integration tests run against a private RabbitMQ node that this session starts and stops.

The node's directory is made with `tempfile`, not `tmp_path_factory`: pytest's temp root is
private (0700) and re-secured by every pytest run, so when we are root the `rabbitmq` user the
node runs as could lose access to it in the middle of the session.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.adapters.rabbitmq_node import RabbitNode, RabbitNodeError

PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def no_proxies() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name in PROXY_VARIABLES:
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitNode]:
    base_dir = Path(tempfile.mkdtemp(prefix="aico-rabbit-"))
    node = RabbitNode(base_dir)
    try:
        node.start()
    except RabbitNodeError as err:
        pytest.fail(f"the private RabbitMQ node did not start: {err}", pytrace=False)
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture
def amqp_url(rabbit: RabbitNode) -> str:
    return rabbit.url
