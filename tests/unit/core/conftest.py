"""What the use-case tests share: the real SQLite store in tmp_path and the twins of Slack and
RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.adapters.sqlite_store import SqliteEventStore
from tests.twins.broker import MemoryBroker
from tests.twins.notifier import MemoryNotifier


@pytest.fixture
def store(tmp_path) -> Iterator[SqliteEventStore]:
    store = SqliteEventStore(tmp_path / "aico.db")
    yield store
    store.close()


@pytest.fixture
def slack() -> MemoryNotifier:
    return MemoryNotifier()


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.close()
