"""What every Broker must do: the same tests on the in-memory twin (tests/twins/broker.py) and on
AmqpLink against the private RabbitMQ node this session starts, with a vhost of its own per test.

RabbitMQ settles asynchronously (an ack or a requeue has no answer), so what the broker counts
after a settle is read until it says what the test expects (`depth_becomes`).
"""

from __future__ import annotations

import queue as queues
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from core.adapters.rabbitmq import AmqpLink
from core.domain.messages import DEAD, DEAD_WATCH, DELIVERY_LIMIT, TASKS
from core.errors import BrokerUnavailable
from tests.integration.stack import fresh_vhost, wait_until
from tests.twins.broker import MemoryBroker, MemoryNode

WAIT = 10.0
BACKENDS = ["twin", pytest.param("rabbitmq", marks=pytest.mark.integration)]


@pytest.fixture(params=BACKENDS)
def connect(request) -> Iterator[Callable[[], object]]:
    """Open a link to the test's broker, as one more process would."""
    opened: list = []
    if request.param == "rabbitmq":
        url = fresh_vhost(request.getfixturevalue("rabbit"))

        def open_link():
            link = AmqpLink(url, f"contract-{len(opened)}").start(wait=WAIT)
            assert link.connected.is_set(), "the link did not connect to the private node"
            opened.append(link)
            return link
    else:
        node = MemoryNode()

        def open_link():
            opened.append(MemoryBroker(node=node, name=f"contract-{len(opened)}"))
            return opened[-1]

    yield open_link
    for link in opened:
        link.close()


@pytest.fixture
def broker(connect):
    return connect()


class Inbox:
    """What a consumer was handed, and on which thread."""

    def __init__(self) -> None:
        self._got: queues.Queue = queues.Queue()
        self.threads: set[threading.Thread] = set()

    def __call__(self, delivery) -> None:
        self.threads.add(threading.current_thread())
        self._got.put(delivery)

    def next(self):
        try:
            return self._got.get(timeout=WAIT)
        except queues.Empty:
            raise AssertionError(f"nothing delivered in {WAIT}s") from None

    def empty(self) -> bool:
        return self._got.empty()


def consume(broker, queue: str = TASKS, prefetch: int = 10) -> Inbox:
    inbox = Inbox()
    broker.consume(queue, prefetch, inbox)
    return inbox


def depth_becomes(broker, queue: str, expected: tuple[int, int]) -> None:
    deadline = time.monotonic() + WAIT
    while (depth := broker.queue_depth(queue).result(WAIT)) != expected:
        assert time.monotonic() < deadline, f"{queue}: {depth}, never {expected}"
        time.sleep(0.02)


# -- publishing and delivering ----------------------------------------------------------------


def test_a_published_message_is_delivered_with_its_body_and_id_on_the_brokers_thread(broker):
    inbox = consume(broker)
    broker.publish(TASKS, b'{"kind":"task"}', "t1").result(WAIT)

    delivery = inbox.next()
    assert (delivery.body, delivery.message_id) == (b'{"kind":"task"}', "t1")
    assert (delivery.redelivered, delivery.delivery_count, delivery.death_reason) == (False, 0, "")
    assert threading.current_thread() not in inbox.threads, "never on the publisher's thread"


def test_a_publish_resolves_once_the_broker_has_the_message(broker):
    assert broker.publish(TASKS, b"1", "t1").result(WAIT) is None
    assert broker.queue_depth(TASKS).result(WAIT) == (1, 0), "confirmed means on the queue"


def test_a_publish_no_queue_takes_is_not_confirmed(broker):
    with pytest.raises(BrokerUnavailable):
        broker.publish("aico.nowhere", b"1", "t1").result(WAIT)


def test_the_connection_is_up_and_the_credentials_accepted(broker):
    assert broker.connected.is_set()
    broker.check()


# -- settling ---------------------------------------------------------------------------------


def test_an_acked_message_is_gone(broker):
    inbox = consume(broker)
    broker.publish(TASKS, b"1", "t1").result(WAIT)
    inbox.next().ack()
    broker.stop_consuming().result(WAIT)

    depth_becomes(broker, TASKS, (0, 0))


def test_a_requeued_message_comes_again_counted_before_those_never_delivered(broker):
    broker.publish(TASKS, b"1", "t1").result(WAIT)
    broker.publish(TASKS, b"2", "t2").result(WAIT)
    inbox = consume(broker, prefetch=1)

    first = inbox.next()
    assert (first.message_id, first.delivery_count) == ("t1", 0)
    first.requeue()
    again = inbox.next()
    assert (again.message_id, again.body, again.delivery_count) == ("t1", b"1", 1)
    assert again.redelivered


def test_a_rejected_message_is_dead_lettered_to_both_dead_letter_queues(broker):
    inbox = consume(broker)
    broker.publish(TASKS, b"poison", "t1").result(WAIT)
    inbox.next().reject()

    for dead_queue in (DEAD, DEAD_WATCH):
        dead = consume(broker, dead_queue).next()
        assert (dead.body, dead.message_id, dead.death_reason) == (b"poison", "t1", "rejected")
        assert dead.delivery_count == 0, "a dead letter starts counting again"
    broker.stop_consuming().result(WAIT)
    depth_becomes(broker, TASKS, (0, 0))


def test_a_message_given_back_past_the_delivery_limit_is_dead_lettered(broker):
    inbox = consume(broker, prefetch=1)
    broker.publish(TASKS, b"slow", "t1").result(WAIT)

    counts = []
    for _ in range(DELIVERY_LIMIT + 1):
        delivery = inbox.next()
        counts.append(delivery.delivery_count)
        delivery.requeue()

    assert counts == list(range(DELIVERY_LIMIT + 1)), "DELIVERY_LIMIT redeliveries, then no more"
    for dead_queue in (DEAD, DEAD_WATCH):
        dead = consume(broker, dead_queue).next()
        assert (dead.message_id, dead.death_reason) == ("t1", "delivery_limit")
    assert inbox.empty()


def test_a_dead_letter_given_back_is_never_dead_lettered_again(broker):
    inbox = consume(broker)
    broker.publish(TASKS, b"poison", "t1").result(WAIT)
    inbox.next().reject()
    dead_inbox = consume(broker, DEAD, prefetch=1)

    for count in range(DELIVERY_LIMIT + 2):
        dead = dead_inbox.next()
        assert (dead.message_id, dead.delivery_count, dead.death_reason) == (
            "t1",
            count,
            "rejected",
        )
        dead.requeue()


def test_a_link_that_closes_gives_back_what_it_held_unacked(connect):
    worker, other = connect(), connect()
    inbox = consume(worker)
    other.publish(TASKS, b"1", "t1").result(WAIT)
    assert inbox.next().message_id == "t1"

    worker.close()

    again = consume(other).next()
    assert (again.message_id, again.delivery_count, again.redelivered) == ("t1", 1, True)


# -- consuming ----------------------------------------------------------------------------------


def test_prefetch_bounds_the_unacked_deliveries(broker):
    for n in range(3):
        broker.publish(TASKS, b"x", f"t{n}").result(WAIT)
    inbox = consume(broker, prefetch=2)

    held = [inbox.next(), inbox.next()]
    assert [d.message_id for d in held] == ["t0", "t1"]
    depth_becomes(broker, TASKS, (1, 1))
    assert inbox.empty(), "the third waits for a free slot"

    held[0].ack()
    assert inbox.next().message_id == "t2"


def test_queue_depth_counts_ready_messages_and_consumers(broker):
    assert broker.queue_depth(TASKS).result(WAIT) == (0, 0)
    broker.publish(TASKS, b"x", "t1").result(WAIT)
    broker.publish(TASKS, b"x", "t2").result(WAIT)
    assert broker.queue_depth(TASKS).result(WAIT) == (2, 0)

    inbox = consume(broker, prefetch=1)
    inbox.next()
    depth_becomes(broker, TASKS, (1, 1))


def test_stop_consuming_stops_the_deliveries(broker):
    inbox = consume(broker)
    broker.publish(TASKS, b"x", "t1").result(WAIT)
    inbox.next().ack()

    broker.stop_consuming().result(WAIT)
    broker.publish(TASKS, b"x", "t2").result(WAIT)

    depth_becomes(broker, TASKS, (1, 0))
    assert inbox.empty()


def test_a_cancelled_consumer_counts_until_what_it_holds_is_settled(broker):
    inbox = consume(broker)
    broker.publish(TASKS, b"x", "t1").result(WAIT)
    held = inbox.next()

    broker.stop_consuming().result(WAIT)
    assert broker.queue_depth(TASKS).result(WAIT) == (0, 1)
    held.requeue()

    depth_becomes(broker, TASKS, (1, 0))
    assert inbox.empty(), "given back to the queue, not to the cancelled consumer"


# -- publishing later ---------------------------------------------------------------------------


def test_publish_later_publishes_after_its_delay(broker):
    inbox = consume(broker)
    later = broker.publish_later(0.05, TASKS, b"later", "t1")

    assert later.result(WAIT) is None
    assert (inbox.next().message_id, later.done()) == ("t1", True)


def test_a_cancelled_publish_later_is_never_published(broker):
    inbox = consume(broker)
    cancelled = broker.publish_later(0.3, TASKS, b"no", "t1")
    assert cancelled.cancel()
    marker = broker.publish_later(0.4, TASKS, b"yes", "t2")

    marker.result(WAIT)
    assert inbox.next().message_id == "t2", "the cancelled one, due first, was never sent"
    broker.stop_consuming().result(WAIT)
    assert inbox.empty()


# -- nothing asked is left unanswered -----------------------------------------------------------


def test_the_depth_of_a_queue_that_does_not_exist_fails_instead_of_never_answering(broker):
    with pytest.raises(BrokerUnavailable):
        broker.queue_depth("aico.no-such-queue").result(WAIT)
    # and the link goes on working
    broker.publish(TASKS, b"after", "t-after").result(WAIT)


def test_what_is_asked_of_a_closed_link_fails_at_once(broker):
    broker.close()

    for asked in (
        broker.publish(TASKS, b"late", "t-late"),
        broker.publish_later(0.1, TASKS, b"later", "t-later"),
        broker.queue_depth(TASKS),
    ):
        with pytest.raises(BrokerUnavailable):
            asked.result(WAIT)
    assert broker.stop_consuming().result(WAIT) is None


# -- the leader lock ------------------------------------------------------------------------------


def test_one_link_at_a_time_holds_an_exclusive_queue_and_it_passes_on_when_that_link_ends(connect):
    first, second = connect(), connect()

    assert first.claim("aico.test.lock").result(WAIT) is True
    assert first.claim("aico.test.lock").result(WAIT) is True  # still ours
    assert second.claim("aico.test.lock").result(WAIT) is False

    first.close()

    def taken() -> bool:
        return second.claim("aico.test.lock").result(WAIT)

    assert wait_until(taken, timeout=WAIT)
    assert second.queue_depth(TASKS).result(WAIT) == (0, 0)  # the refusal broke nothing else
