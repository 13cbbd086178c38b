"""The event store contract: every backend runs the same tests (`store_url` is parametrized by
backend). A backend is opened by URL, as `AICO_DB_URL` would name it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from core.bootstrap import open_store

BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
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
