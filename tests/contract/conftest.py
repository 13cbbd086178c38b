"""The event store contract: every backend runs the same tests (`store_url` is parametrized by
backend). A backend is opened by URL, as `AICO_DB_URL` would name it.

"postgres" runs against a private PostgreSQL server that this session starts (postgres_node.py)
with a fresh database for each test. Without PostgreSQL installed those tests fail, saying so:
CI installs it (scripts/ensure-postgres).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from aico.bootstrap import open_store

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres").create_database()
    return f"sqlite:///{tmp_path / 'aico.db'}"


@pytest.fixture
def reopen(store_url) -> Iterator[Callable]:
    """Open the store again, as another process would."""
    opened = []

    def open_again():
        opened.append(open_store(store_url))
        return opened[-1]

    yield open_again
    for store in opened:
        store.close()


@pytest.fixture
def store(reopen):
    return reopen()
