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

from aico.fakes.anthropic import FakeClaude
from aico.fakes.slack import FakeSlack
from aico.rabbit_node import RabbitNode, RabbitNodeError
from tests.integration.stack import BOT_TOKEN, PROXY_VARS

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def no_proxies() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name in PROXY_VARS:
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


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        yield fake


@pytest.fixture
def claude() -> Iterator[FakeClaude]:
    with FakeClaude(latency=0.05) as fake:
        yield fake


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server (tests/contract/postgres_node.py); tests make databases."""
    from tests.contract.postgres_node import serve

    yield from serve()
