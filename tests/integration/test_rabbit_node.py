"""The private RabbitMQ node: AMQP, quorum queues, restarts and rabbitmqctl drills."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from aico import rabbit_node
from aico.rabbit_node import RabbitNode, RabbitNodeError

PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


@contextmanager
def channel_on(url: str) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        yield channel
    finally:
        if connection.is_open:
            connection.close()


def declare(channel: BlockingChannel, queue_type: str = "classic") -> str:
    name = f"test.{queue_type}.{uuid.uuid4().hex[:8]}"
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": queue_type})
    return name


def publish(channel: BlockingChannel, queue: str, body: bytes) -> None:
    """Publish with confirms: pika raises if the broker nacks or cannot route the message."""
    channel.basic_publish("", queue, body, properties=PERSISTENT, mandatory=True)


def get_within(channel: BlockingChannel, queue: str, seconds: float = 10) -> bytes:
    """The next message of `queue`, acked; a queue just back from a restart may need a moment."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        method, _properties, body = channel.basic_get(queue)
        if method is not None:
            channel.basic_ack(method.delivery_tag)
            return body
        time.sleep(0.1)
    raise AssertionError(f"no message on {queue} within {seconds}s")


def queue_depths(rabbit: RabbitNode) -> dict[str, int]:
    rows = (line.split("\t") for line in rabbit.ctl("list_queues", "name", "messages").splitlines())
    return {name: int(count) for name, count in rows if count.isdigit()}


def test_node_accepts_a_pika_connection(amqp_url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        assert connection.is_open
    finally:
        connection.close()


def test_confirmed_message_goes_round_a_quorum_queue(amqp_url: str) -> None:
    with channel_on(amqp_url) as channel:
        queue = declare(channel, "quorum")
        publish(channel, queue, b"hello quorum")

        assert get_within(channel, queue) == b"hello quorum"
        channel.queue_delete(queue)


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_durable_queue_and_persistent_message_survive_an_app_restart(
    rabbit: RabbitNode, queue_type: str
) -> None:
    with channel_on(rabbit.url) as channel:
        queue = declare(channel, queue_type)
        publish(channel, queue, b"still here")

    rabbit.stop_app()
    rabbit.start_app()

    with channel_on(rabbit.url) as channel:
        channel.queue_declare(queue, passive=True)
        assert get_within(channel, queue) == b"still here"
        channel.queue_delete(queue)


def test_close_all_connections_cuts_an_open_connection(rabbit: RabbitNode) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbit.url))
    channel = connection.channel()

    rabbit.ctl("close_all_connections", "drill")

    with pytest.raises(pika.exceptions.ConnectionClosedByBroker, match="CONNECTION_FORCED - drill"):
        channel.queue_declare("", exclusive=True)
    assert connection.is_closed


def test_list_queues_reports_names_and_depths(rabbit: RabbitNode) -> None:
    with channel_on(rabbit.url) as channel:
        empty, loaded = declare(channel), declare(channel)
        for body in (b"one", b"two", b"three"):
            publish(channel, loaded, body)

        depths = queue_depths(rabbit)

        assert depths[empty] == 0
        assert depths[loaded] == 3
        channel.queue_delete(empty)
        channel.queue_delete(loaded)


def test_a_missing_installation_is_explained(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(rabbit_node, "BIN_DIR", tmp_path / "no-rabbitmq")

    assert not rabbit_node.is_installed()
    with pytest.raises(RabbitNodeError, match="apt-get install -y rabbitmq-server"):
        RabbitNode(tmp_path / "node").start()
