"""Half-open connections: the network silently drops every AMQP connection aico has open.

Every aico process talks to the broker through a `TcpProxy`. With tasks in flight the proxy
black-holes the connections open at that moment, as a NAT or firewall does when it loses their
state: bytes sent either way vanish, and neither side gets a FIN or an RST, so each side's socket
stays open and writable and nothing is heard from it. Only AMQP heartbeats (2 s here, through
`?heartbeat=2` in AICO_AMQP_URL) can tell such a connection is dead: the broker gives up on its
side and requeues what was unacked, each process gives up on its side and reconnects, through the
proxy, which lets new connections through. Every task must still end in its thread, once.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from aico.fakes.tcp_proxy import TcpProxy
from tests.integration.drills.conftest import Ledger, assert_nothing_lost_or_twice
from tests.integration.stack import Stack, fresh_vhost, wait_until

HEARTBEAT = 2  # seconds; pika checks every HEARTBEAT + 5 s and gives up after one silent interval


@pytest.fixture
def proxy(rabbit) -> Iterator[TcpProxy]:
    broker = urlsplit(rabbit.url)
    with TcpProxy(broker.hostname, broker.port) as running:
        yield running


@pytest.fixture
def stack(rabbit, proxy, tmp_path, slack, claude) -> Iterator[Stack]:
    """This module's stack reaches the broker only through the proxy, with short heartbeats."""
    direct = urlsplit(fresh_vhost(rabbit))
    netloc = direct.netloc.rsplit(":", 1)[0] + f":{proxy.port}"
    url = urlunsplit(direct._replace(netloc=netloc, query=f"heartbeat={HEARTBEAT}"))
    running = Stack(tmp_path, url, slack, claude, AICO_MIN_WORKERS="2").start()
    # the bot is up; the task workers may still be starting: the black hole must catch them too
    wait_until(lambda: running.processes.log("pm").count("task: connected to RabbitMQ") == 2, 30)
    yield running
    running.stop()  # before the proxy stops: the processes close their connections through it


@pytest.fixture
def ledger(stack, slack, claude) -> Ledger:
    return Ledger(stack, slack, claude)


def test_a_half_open_connection_is_detected_by_heartbeats_and_work_resumes(
    ledger, stack, claude, proxy
):
    claude.latency = 1.0
    ledger.submit(12, "half-open")
    claude.wait_for(lambda fake: fake.in_flight >= 4, timeout=20)
    held, accepted = proxy.connections, proxy.accepted
    assert held >= 4, "the bot, the result worker and both task workers are all caught"

    proxy.blackhole()
    ledger.submit(3, "after")  # the bot acks at once, though its link is dead
    outcomes = ledger.wait_settled(timeout=120)

    # an attempt cut off by the dead connection may be asked again once, never more
    assert_nothing_lost_or_twice(outcomes, stack, max_calls=2)
    assert all(o.final == "Done" for o in outcomes), outcomes  # the 3 submitted after too
    assert proxy.accepted - accepted >= held, (
        f"{held} connections were black-holed but only {proxy.accepted - accepted} new ones "
        f"were made:\n{stack.logs()}"
    )
