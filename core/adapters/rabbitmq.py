"""All pika code: one I/O thread owns the connection; other threads talk to it through futures.

`AmqpLink` runs a pika `SelectConnection` on its own thread. Publishing from any thread returns a
`Future` that resolves when the broker confirms the message (publisher confirms + `mandatory`), so
a worker can ack its delivery only after its result is safely on the queue. Deliveries are handed
to a callback with thread-safe `ack` / `reject` / `requeue`, which are ignored once the channel
they came on is gone: an old delivery tag is never acked on a new channel. The link reconnects
with capped exponential backoff and jitter, re-declaring the topology, QoS and consumers.
"""

from __future__ import annotations

import collections
import functools
import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop

from core.domain.messages import DEAD, DEAD_EXCHANGE, DEAD_WATCH, DELIVERY_LIMIT, RESULTS, TASKS
from core.errors import BrokerUnavailable, ConfigError

log = logging.getLogger(__name__)
_AUTH_ERRORS = (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)

HEARTBEAT = 10  # seconds; the I/O thread never blocks, so heartbeats flow during long calls

_QUEUE_ARGS: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-delivery-limit": DELIVERY_LIMIT,
    "x-dead-letter-exchange": DEAD_EXCHANGE,
}
QUEUES: dict[str, dict[str, Any]] = {
    DEAD: {"x-queue-type": "quorum"},
    DEAD_WATCH: {"x-queue-type": "quorum"},
    TASKS: _QUEUE_ARGS,
    RESULTS: _QUEUE_ARGS,
}


@dataclass
class Delivery:
    """One message from a queue. Settle it exactly once, from any thread."""

    body: bytes
    message_id: str
    redelivered: bool
    delivery_count: int  # earlier deliveries of this message (the broker's x-delivery-count)
    death_reason: str  # why it was dead-lettered, on the dead-letter queue ("delivery_limit")
    _link: AmqpLink = field(repr=False)
    _tag: int = field(repr=False)
    _generation: int = field(repr=False)

    def ack(self) -> None:
        self._link._settle(self._generation, lambda ch: ch.basic_ack(self._tag))

    def reject(self) -> None:
        """Dead-letter it now (a permanent failure)."""
        self._link._settle(self._generation, lambda ch: ch.basic_reject(self._tag, requeue=False))

    def requeue(self) -> None:
        """Give it back for another attempt (the queue's delivery limit still applies)."""
        self._link._settle(self._generation, lambda ch: ch.basic_nack(self._tag, requeue=True))


@dataclass(frozen=True)
class _Consumer:
    queue: str
    prefetch: int
    on_delivery: Callable[[Delivery], None]


class AmqpLink:
    """A connection to RabbitMQ owned by one I/O thread, shared safely by the rest of a process."""

    def __init__(self, url: str, name: str, *, max_backoff: float = 5.0) -> None:
        try:
            self._params = pika.URLParameters(url)
        except Exception as exc:
            raise ConfigError(f"AICO_AMQP_URL is not a valid AMQP URL: {exc}") from exc
        if "heartbeat" not in url:
            self._params.heartbeat = HEARTBEAT
        self._params.client_properties = {"connection_name": f"aico-{name}"}
        self.name = name
        self._max_backoff = max_backoff
        self._ioloop = IOLoop()
        self._thread = threading.Thread(target=self._ioloop.start, name=f"amqp-{name}", daemon=True)
        self._connection: pika.SelectConnection | None = None
        self._channel: Any = None
        self._generation = 0
        self._failures = 0
        self._closing = False
        self._consumers: list[_Consumer] = []
        self._consumer_tags: list[str] = []
        self._outbox: collections.deque[tuple[str, bytes, str, Future[None]]] = collections.deque()
        self._asked: set[Future[Any]] = set()  # queue depths the broker has not answered yet
        self._timers: set[Future[None]] = set()  # delayed publishes not sent yet
        self._stopped = False  # the I/O loop has ended: nothing asked of the link can happen
        self._unconfirmed: dict[int, tuple[Future[None], str]] = {}
        self._returned: set[str] = set()
        self._next_seq = 1
        self.connected = threading.Event()
        self.fatal: BaseException | None = None

    # -- life cycle (any thread) ------------------------------------------------------------

    def start(self, wait: float = 0.0) -> AmqpLink:
        self._thread.start()
        self._call(self._connect)
        if wait:
            self.connected.wait(wait)
        return self

    def check(self) -> None:
        """ConfigError once RabbitMQ has refused our credentials: the link has given up, and
        every process that needs it must stop rather than carry on without a broker."""
        if self.fatal is not None:
            raise ConfigError(
                f"RabbitMQ refused the credentials in AICO_AMQP_URL ({self.fatal}); fix them"
            )

    def close(self, timeout: float = 5.0) -> None:
        self._call(self._shutdown)
        self._thread.join(timeout)

    def consume(self, queue: str, prefetch: int, on_delivery: Callable[[Delivery], None]) -> None:
        """Deliver messages of `queue` to `on_delivery` (called on the I/O thread: be quick)."""
        consumer = _Consumer(queue, prefetch, on_delivery)
        self._call(lambda: self._add_consumer(consumer))

    def stop_consuming(self) -> Future[None]:
        """Cancel every consumer; the future resolves once the broker confirmed it."""
        done: Future[None] = Future()
        if not self._call(lambda: self._cancel_consumers(done)):
            done.set_result(None)  # closed: nothing consumes any more
        return done

    def queue_depth(self, queue: str) -> Future[tuple[int, int]]:
        """(messages ready, consumers) of one of aico's queues, as the broker counts them now."""
        done: Future[tuple[int, int]] = Future()

        def ask() -> None:
            if not (self.connected.is_set() and self._channel):
                done.set_exception(BrokerUnavailable("not connected to RabbitMQ"))
                return
            self._asked.add(done)  # a missing queue closes the channel: _lost answers then

            def counted(frame: Any) -> None:
                self._asked.discard(done)
                if not done.done():
                    done.set_result((frame.method.message_count, frame.method.consumer_count))

            self._channel.queue_declare(queue, passive=True, callback=counted)

        return self._ask(ask, done)

    def claim(self, name: str) -> Future[bool]:
        """Hold the exclusive queue `name` on this connection: True if this connection holds it
        now (it declared it just now, or before), False if another connection does. RabbitMQ
        lets one connection at a time declare an exclusive queue, and deletes it the moment that
        connection ends (a process that dies, at once; a host that vanishes, when heartbeats
        stop): a lock the broker holds for us, which is how several `aico pm` elect a leader."""
        done: Future[bool] = Future()

        def ask() -> None:
            connection = self._connection
            if not (self.connected.is_set() and connection and connection.is_open):
                done.set_exception(BrokerUnavailable("not connected to RabbitMQ"))
                return
            self._asked.add(done)  # the connection may end first: _lost answers then
            connection.channel(
                on_open_callback=lambda channel: self._declare_exclusive(channel, name, done)
            )

        return self._ask(ask, done)

    def publish(self, queue: str, body: bytes, message_id: str) -> Future[None]:
        """Publish persistently; the future resolves when the broker has confirmed it."""
        done: Future[None] = Future()
        return self._ask(lambda: self._enqueue(queue, body, message_id, done), done)

    def publish_later(self, delay: float, queue: str, body: bytes, message_id: str) -> Future[None]:
        """Publish after `delay` seconds unless the returned future is cancelled first. Once
        sent, it keeps its place: anything published after the cancel attempt comes after it."""
        done: Future[None] = Future()

        def fire() -> None:
            self._timers.discard(done)
            if done.set_running_or_notify_cancel():
                self._enqueue(queue, body, message_id, done)

        def later() -> None:
            self._timers.add(done)
            self._ioloop.call_later(delay, fire)

        return self._ask(later, done)

    def _ask(self, fn: Callable[[], None], done: Future[Any]) -> Future[Any]:
        """`fn` on the I/O thread, which answers `done`; at once when the link is closed."""
        if not self._call(fn) and not done.done():
            done.set_exception(BrokerUnavailable("the link to RabbitMQ is closed"))
        return done

    def _call(self, fn: Callable[[], None]) -> bool:
        """Run `fn` on the I/O thread; False when the link is closed and nothing would."""
        if self._stopped:
            return False
        if threading.current_thread() is self._thread:
            fn()  # already on the I/O thread (a confirm callback acking its delivery)
        else:
            self._ioloop.add_callback_threadsafe(fn)
        return True

    def _settle(self, generation: int, action: Callable[[Any], None]) -> None:
        def run() -> None:
            if generation == self._generation and self._channel and self._channel.is_open:
                action(self._channel)

        self._call(run)

    # -- I/O thread -------------------------------------------------------------------------

    def _connect(self) -> None:
        if self._closing:
            return
        self._connection = pika.SelectConnection(
            self._params,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self._ioloop,
        )

    def _on_connection_open(self, connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_connection_error(self, _connection: Any, error: BaseException) -> None:
        if self._closing:  # a close() while the connection was still opening aborts it
            self._lost(BrokerUnavailable("link closed"))
            self._stop_loop()
            return
        if isinstance(error, _AUTH_ERRORS):
            self.fatal = error
            log.critical("RabbitMQ refused our credentials (%s); check AICO_AMQP_URL", error)
            self._shutdown()
            return
        self._reconnect_later(error)

    def _on_connection_closed(self, _connection: Any, reason: BaseException) -> None:
        self._lost(BrokerUnavailable(f"connection closed: {reason}"))
        if self._closing:
            self._stop_loop()
        else:
            self._reconnect_later(reason)

    def _reconnect_later(self, reason: BaseException) -> None:
        self._failures += 1
        delay = min(self._max_backoff, 0.25 * 2 ** (self._failures - 1)) * random.uniform(0.5, 1.0)
        log.warning("%s: broker unavailable (%s); retrying in %.1fs", self.name, reason, delay)
        self._ioloop.call_later(delay, self._connect)

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        self._generation += 1
        self._next_seq = 1
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _: self._declare(channel))

    def _declare(self, channel: Any) -> None:
        """The exchange, the queues and the bindings, one after another, then ready."""
        steps = [
            functools.partial(channel.exchange_declare, DEAD_EXCHANGE, "fanout", durable=True),
            *(
                functools.partial(channel.queue_declare, queue, durable=True, arguments=arguments)
                for queue, arguments in QUEUES.items()
            ),
            *(functools.partial(channel.queue_bind, q, DEAD_EXCHANGE) for q in (DEAD, DEAD_WATCH)),
        ]

        def next_step(_frame: Any = None) -> None:
            if steps:
                steps.pop(0)(callback=next_step)
            else:
                self._on_ready()

        next_step()

    def _on_ready(self) -> None:
        self._failures = 0
        self.connected.set()
        log.info("%s: connected to RabbitMQ", self.name)
        for consumer in self._consumers:
            self._start_consumer(consumer)
        while self._outbox:
            self._publish_now(*self._outbox.popleft())

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        if not self._closing:
            log.warning("%s: channel closed: %s", self.name, reason)
        self._lost(BrokerUnavailable(f"channel closed: {reason}"))
        connection = self._connection
        if connection and connection.is_open:
            connection.close()  # one recovery path: a new connection and channel

    def _stop_loop(self) -> None:
        """The end of the link: what was asked of it and can no longer happen fails now."""
        self._stopped = True
        closed = BrokerUnavailable("the link to RabbitMQ is closed")
        waiting = [done for *_, done in self._outbox] + [*self._timers, *self._asked]
        self._outbox.clear()
        for done in waiting:
            if not done.done():
                done.set_exception(closed)
        self._ioloop.stop()

    def _lost(self, error: BrokerUnavailable) -> None:
        asked, self._asked = self._asked, set()
        for done in asked:  # the channel that would have answered is gone
            if not done.done():
                done.set_exception(error)
        self.connected.clear()
        self._channel = None
        self._consumer_tags.clear()
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        self._returned.clear()
        for done, _message_id in unconfirmed.values():
            if not done.done():
                done.set_exception(error)

    def _shutdown(self) -> None:
        """Close the connection (open, or still opening: pika aborts it) and stop the loop once
        it is closed; with no connection (the broker is away, a retry is pending) stop at once.
        pika 1.4 has only is_open / is_closing / is_closed to tell the states apart."""
        self._closing = True
        connection = self._connection
        if connection is not None and connection.is_closing:
            return  # _on_connection_closed stops the loop
        if connection is not None and not connection.is_closed:
            connection.close()
        else:
            self._lost(BrokerUnavailable("link closed"))
            self._stop_loop()

    def _declare_exclusive(self, channel: Any, name: str, done: Future[bool]) -> None:
        """On a channel of its own: the broker closes it (405 RESOURCE_LOCKED) when another
        connection holds the queue, and aico's own channel must not go with it."""

        def answer(value: bool | BaseException) -> None:
            self._asked.discard(done)
            if done.done():
                return
            if isinstance(value, BaseException):
                done.set_exception(value)
            else:
                done.set_result(value)

        def closed(_channel: Any, reason: BaseException) -> None:
            locked = isinstance(reason, pika.exceptions.ChannelClosedByBroker) and (
                reason.reply_code == 405
            )
            answer(False if locked else BrokerUnavailable(f"channel closed: {reason}"))

        def declared(_frame: Any) -> None:
            answer(True)
            channel.close()  # the queue belongs to the connection, not to this channel

        channel.add_on_close_callback(closed)
        channel.queue_declare(name, exclusive=True, auto_delete=True, callback=declared)

    # consumers

    def _add_consumer(self, consumer: _Consumer) -> None:
        self._consumers.append(consumer)
        if self.connected.is_set():
            self._start_consumer(consumer)

    def _start_consumer(self, consumer: _Consumer) -> None:
        channel, generation = self._channel, self._generation
        on_message = functools.partial(self._on_message, consumer, generation)
        channel.basic_qos(prefetch_count=consumer.prefetch)
        self._consumer_tags.append(channel.basic_consume(consumer.queue, on_message))

    def _on_message(
        self,
        consumer: _Consumer,
        generation: int,
        _ch: Any,
        method: Any,
        properties: Any,
        body: bytes,
    ) -> None:
        headers = properties.headers or {}
        delivery = Delivery(
            body=body,
            message_id=properties.message_id or "",
            redelivered=method.redelivered,
            delivery_count=int(headers.get("x-delivery-count", 0)),
            death_reason=_text(headers.get("x-first-death-reason", "")),
            _link=self,
            _tag=method.delivery_tag,
            _generation=generation,
        )
        consumer.on_delivery(delivery)

    def _cancel_consumers(self, done: Future[None]) -> None:
        self._consumers.clear()
        tags, self._consumer_tags = self._consumer_tags, []
        if not tags or not self._channel:
            done.set_result(None)
            return
        remaining = set(tags)

        def cancelled(tag: str) -> None:
            remaining.discard(tag)
            if not remaining and not done.done():
                done.set_result(None)

        for tag in tags:
            self._channel.basic_cancel(tag, callback=lambda _f, t=tag: cancelled(t))

    # publishing

    def _enqueue(self, queue: str, body: bytes, message_id: str, done: Future[None]) -> None:
        if self.connected.is_set():
            self._publish_now(queue, body, message_id, done)
        else:
            self._outbox.append((queue, body, message_id, done))

    def _publish_now(self, queue: str, body: bytes, message_id: str, done: Future[None]) -> None:
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="application/json",
            message_id=message_id,
        )
        self._unconfirmed[self._next_seq] = (done, message_id)
        self._next_seq += 1
        self._channel.basic_publish("", queue, body, properties, mandatory=True)

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        log.error(
            "%s: broker returned message %s: %s",
            self.name,
            properties.message_id,
            method.reply_text,
        )
        self._returned.add(properties.message_id)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        tags = [method.delivery_tag]
        if method.multiple:
            tags = [t for t in self._unconfirmed if t <= method.delivery_tag]
        for tag in tags:
            done, message_id = self._unconfirmed.pop(tag, (None, ""))
            if done is None or done.done():
                continue
            if message_id in self._returned:
                self._returned.discard(message_id)
                done.set_exception(BrokerUnavailable(f"no queue took message {message_id}"))
            elif acked:
                done.set_result(None)
            else:
                done.set_exception(BrokerUnavailable("the broker refused the message (nack)"))


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
