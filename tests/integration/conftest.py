"""Integration tests run against the private RabbitMQ node of tests/conftest.py and the fakes of
Slack and Claude, with no proxy in the way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aico.fakes.anthropic import FakeClaude
from aico.fakes.slack import FakeSlack
from aico.rabbit_node import RabbitNode
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
