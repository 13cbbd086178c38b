"""The servers the tests share in one test process: a private RabbitMQ node and a private
PostgreSQL server, each started on first use and stopped at the end. A server that cannot start
fails the tests that need it, saying why; they are never skipped.

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

from aico.rabbit_node import RabbitNode, RabbitNodeError
from tests.contract.postgres_node import PostgresNode, serve


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresNode]:
    yield from serve()
