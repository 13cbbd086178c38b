"""The Broker port in memory: aico's quorum queues as RabbitMQ 3.10 runs them, and a link to them
that behaves like core.adapters.rabbitmq.AmqpLink (tests/contract/test_broker.py runs the same
suite on both).

`MemoryNode` is the broker: the queues (aico.tasks and aico.results with the delivery limit and
dead-lettering to aico.dead and aico.dead.watch), what is ready, what is out unacked.
`MemoryBroker` is one process's link to it, with a thread of its own that plays pika's I/O thread:
deliveries reach the consumer callback there, publish futures resolve there, settles and
publishes made from other threads are carried out there in the order they were made. Several
links may share one node (`MemoryBroker(node=other.node)`), as several processes share a broker.

As RabbitMQ does (measured, see the contract):
- a message given back (`requeue`) goes before the ones never delivered, with its delivery_count
  raised by one; given back once more than DELIVERY_LIMIT times, it is dead-lettered instead
  (`death_reason` "delivery_limit"); `reject` dead-letters it at once ("rejected"). On the
  dead-letter queues a message starts again at delivery_count 0 and is never dead-lettered;
- a consumer gets at most `prefetch` unacked deliveries; a cancelled consumer still counts in
  `queue_depth` until what it holds is settled;
- a link that closes gives back what it holds unacked (a consumer gone without acking uses up an
  attempt); a settle made after that is ignored, as is one for a delivery of a closed link;
- a publish to a queue that does not exist is not confirmed (BrokerUnavailable).

What a test may tell it: hold the confirms of the next publishes (`hold_confirms`, then
`confirm_held` or `fail_held`), refuse the next publishes (`fail_next_publish`), refuse our
credentials (`refuse_credentials`). What a test may look at: `ready(queue)`, `unacked(queue)`,
`consumers(queue)`, `active(queue)`, `settlements` and `errors` (a settle made twice, an
exception raised in a callback on the link's thread: a test may assert there are none), and
`wait_for` any of it.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from core.domain.messages import DEAD, DEAD_WATCH, DELIVERY_LIMIT, RESULTS, TASKS
from core.errors import BrokerUnavailable, ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parked:
    """A message as it waits in a queue."""

    body: bytes
    message_id: str
    delivery_count: int = 0
    redelivered: bool = False
    death_reason: str = ""


@dataclass
class _Consumer:
    link: MemoryBroker
    queue: str
    prefetch: int
    on_delivery: Callable[[MemoryDelivery], None]
    holding: int = 0
    cancelled: bool = False


@dataclass
class _Queue:
    name: str
    dead_letters: bool  # a delivery limit and a dead-letter exchange (aico.tasks, aico.results)
    returns: collections.deque[Parked] = field(default_factory=collections.deque)
    ready: collections.deque[Parked] = field(default_factory=collections.deque)
    consumers: list[_Consumer] = field(default_factory=list)  # active and cancelled
    out: dict[int, tuple[Parked, _Consumer]] = field(default_factory=dict)  # tag -> unacked
    turn: int = 0

    def waiting(self) -> list[Parked]:
        return [*self.returns, *self.ready]

    def take(self) -> Parked:
        return self.returns.popleft() if self.returns else self.ready.popleft()


@dataclass
class MemoryDelivery:
    """One message from a queue. Settle it exactly once, from any thread."""

    body: bytes
    message_id: str
    redelivered: bool
    delivery_count: int
    death_reason: str
    queue: str = field(repr=False)
    _link: MemoryBroker = field(repr=False)
    _tag: int = field(repr=False)

    def ack(self) -> None:
        self._link._settle(self, "ack")

    def reject(self) -> None:
        """Dead-letter it now (a permanent failure)."""
        self._link._settle(self, "reject")

    def requeue(self) -> None:
        """Give it back for another attempt (the queue's delivery limit still applies)."""
        self._link._settle(self, "requeue")


class MemoryNode:
    """The broker the links share: aico's queues, by name."""

    def __init__(self, delivery_limit: int = DELIVERY_LIMIT) -> None:
        self.delivery_limit = delivery_limit
        self.queues: dict[str, _Queue] = {
            name: _Queue(name, dead_letters=name in (TASKS, RESULTS))
            for name in (DEAD, DEAD_WATCH, TASKS, RESULTS)
        }
        self.settlements: list[tuple[str, str, str]] = []  # (queue, message_id, action)
        self.errors: list[str] = []
        self.exclusive: dict[str, MemoryBroker] = {}  # exclusive queues, by the link holding each
        self._tags = itertools.count(1)
        self._cond = threading.Condition(threading.RLock())
        self._version = 0

    # -- what a test looks at ----------------------------------------------------------------

    def ready(self, queue: str) -> list[Parked]:
        """The messages waiting in `queue`, in the order they will be delivered."""
        with self._cond:
            return self.queues[queue].waiting()

    def unacked(self, queue: str) -> int:
        with self._cond:
            return len(self.queues[queue].out)

    def consumers(self, queue: str) -> int:
        """Consumers as the broker counts them: a cancelled one until what it holds is settled."""
        with self._cond:
            return sum(1 for c in self.queues[queue].consumers if not c.cancelled or c.holding)

    def active(self, queue: str) -> int:
        """Consumers not cancelled: those that may get more deliveries."""
        with self._cond:
            return sum(1 for c in self.queues[queue].consumers if not c.cancelled)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Re-check `predicate()` after every change; return its truthy value or time out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (value := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{predicate!r} still {value!r} after {timeout}s")
                self._cond.wait(remaining)
            return value

    # -- the broker's rules (under the lock) -------------------------------------------------

    def changed(self) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def enqueue(self, queue: str, message: Parked) -> bool:
        with self._cond:
            if queue not in self.queues:
                return False
            self.queues[queue].ready.append(message)
            self._pump()
            return True

    def add_consumer(self, consumer: _Consumer) -> None:
        with self._cond:
            self.queues[consumer.queue].consumers.append(consumer)
            self._pump()

    def cancel(self, link: MemoryBroker) -> None:
        with self._cond:
            for queue in self.queues.values():
                for consumer in queue.consumers:
                    if consumer.link is link:
                        consumer.cancelled = True
                self._forget_idle(queue)
            self.changed()

    def settle(self, delivery: MemoryDelivery, action: str) -> None:
        with self._cond:
            queue = self.queues[delivery.queue]
            held = queue.out.pop(delivery._tag, None)
            if held is None:
                if not delivery._link.closed:
                    self.errors.append(f"{action} of {delivery.message_id}: already settled")
                    self.changed()
                return
            message, consumer = held
            consumer.holding -= 1
            self.settlements.append((queue.name, message.message_id, action))
            if action == "reject":
                self._dead_letter(queue, message, "rejected")
            elif action == "requeue":
                self._give_back(queue, message)
            self._forget_idle(queue)
            self._pump()

    def drop_link(self, link: MemoryBroker) -> None:
        """A link closed: its consumers go, what they held goes back to its queue."""
        with self._cond:
            for queue in self.queues.values():
                for tag, (message, consumer) in list(queue.out.items()):
                    if consumer.link is link:
                        del queue.out[tag]
                        self._give_back(queue, message)
                queue.consumers = [c for c in queue.consumers if c.link is not link]
            for name in [n for n, holder in self.exclusive.items() if holder is link]:
                del self.exclusive[name]
            self._pump()

    def _give_back(self, queue: _Queue, message: Parked) -> None:
        message = replace(message, delivery_count=message.delivery_count + 1, redelivered=True)
        if queue.dead_letters and message.delivery_count > self.delivery_limit:
            self._dead_letter(queue, message, "delivery_limit")
        else:
            queue.returns.append(message)

    def _dead_letter(self, queue: _Queue, message: Parked, reason: str) -> None:
        if not queue.dead_letters:
            return  # no dead-letter exchange: dropped
        dead = Parked(message.body, message.message_id, death_reason=message.death_reason or reason)
        for name in (DEAD, DEAD_WATCH):
            self.queues[name].ready.append(dead)

    @staticmethod
    def _forget_idle(queue: _Queue) -> None:
        queue.consumers = [c for c in queue.consumers if not c.cancelled or c.holding]

    def _pump(self) -> None:
        """Hand what is ready to consumers with room, round robin, on their links' threads."""
        for queue in self.queues.values():
            while queue.returns or queue.ready:
                active = [c for c in queue.consumers if not c.cancelled]
                room = [c for c in active if c.holding < c.prefetch or c.prefetch == 0]
                if not room:
                    break
                consumer = room[queue.turn % len(room)]
                queue.turn += 1
                message = queue.take()
                tag = next(self._tags)
                consumer.holding += 1
                queue.out[tag] = (message, consumer)
                delivery = MemoryDelivery(
                    body=message.body,
                    message_id=message.message_id,
                    redelivered=message.redelivered,
                    delivery_count=message.delivery_count,
                    death_reason=message.death_reason,
                    queue=queue.name,
                    _link=consumer.link,
                    _tag=tag,
                )
                consumer.link._loop.call_soon(lambda c=consumer, d=delivery: c.on_delivery(d))
        self.changed()


class _Loop:
    """One thread that runs callbacks in the order they came and timers when they are due."""

    def __init__(self, name: str, on_error: Callable[[str], None]) -> None:
        self._cond = threading.Condition()
        self._ready: collections.deque[Callable[[], None]] = collections.deque()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._stopped = False
        self._on_error = on_error
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def call_soon(self, fn: Callable[[], None]) -> None:
        with self._cond:
            self._ready.append(fn)
            self._cond.notify()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))
            self._cond.notify()

    def stop(self) -> None:
        """Stop once the callbacks queued so far have run (timers not due are dropped)."""
        self.call_soon(self._halt)

    def _halt(self) -> None:
        self._stopped = True

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    while self._timers and self._timers[0][0] <= now:
                        self._ready.append(heapq.heappop(self._timers)[2])
                    if self._ready:
                        fn = self._ready.popleft()
                        break
                    timeout = self._timers[0][0] - now if self._timers else None
                    self._cond.wait(timeout)
            try:
                fn()
            except Exception as exc:
                log.exception("a callback on the broker twin's thread failed")
                self._on_error(f"{type(exc).__name__}: {exc}")
            if self._stopped:
                return


class MemoryBroker:
    """One process's link to a MemoryNode: the Broker port, in memory."""

    def __init__(self, node: MemoryNode | None = None, name: str = "twin") -> None:
        self.node = node or MemoryNode()
        self.name = name
        self.connected = threading.Event()
        self.connected.set()
        self.fatal: BaseException | None = None
        self.closed = False
        self._timers: set[Future[None]] = set()  # delayed publishes not sent yet
        self._loop = _Loop(f"twin-{name}", self._error)
        self._lock = threading.Lock()
        self._holding = False
        self._held: list[tuple[str, Parked, Future[None]]] = []
        self._refuse = 0

    # -- the Broker port ---------------------------------------------------------------------

    def check(self) -> None:
        if self.fatal is not None:
            raise ConfigError(f"RabbitMQ refused the credentials ({self.fatal}); fix them")

    def consume(
        self, queue: str, prefetch: int, on_delivery: Callable[[MemoryDelivery], None]
    ) -> None:
        """Deliver messages of `queue` to `on_delivery` (called on the link's thread)."""

        def add() -> None:
            if queue not in self.node.queues:
                self._error(f"consume from {queue!r}: no such queue")
                return
            self.node.add_consumer(_Consumer(self, queue, prefetch, on_delivery))

        self._call(add)

    def stop_consuming(self) -> Future[None]:
        done: Future[None] = Future()

        def cancel() -> None:
            self.node.cancel(self)
            done.set_result(None)

        if not self._call(cancel):
            done.set_result(None)  # closed: nothing consumes any more
        return done

    def queue_depth(self, queue: str) -> Future[tuple[int, int]]:
        """(messages ready, consumers) of `queue`."""
        done: Future[tuple[int, int]] = Future()

        def ask() -> None:
            if not self.connected.is_set():
                done.set_exception(BrokerUnavailable("not connected to RabbitMQ"))
            elif queue not in self.node.queues:
                done.set_exception(BrokerUnavailable(f"no queue {queue!r}"))
            else:
                done.set_result((len(self.node.ready(queue)), self.node.consumers(queue)))

        return self._ask(ask, done)

    def claim(self, name: str) -> Future[bool]:
        """Hold the exclusive queue `name`: True if this link holds it now, False if another."""
        done: Future[bool] = Future()

        def ask() -> None:
            if not self.connected.is_set():
                done.set_exception(BrokerUnavailable("not connected to RabbitMQ"))
                return
            with self.node._cond:
                done.set_result(self.node.exclusive.setdefault(name, self) is self)

        return self._ask(ask, done)

    def publish(self, queue: str, body: bytes, message_id: str) -> Future[None]:
        done: Future[None] = Future()
        return self._ask(lambda: self._publish_now(queue, Parked(body, message_id), done), done)

    def publish_later(self, delay: float, queue: str, body: bytes, message_id: str) -> Future[None]:
        """Publish after `delay` seconds unless the returned future is cancelled first."""
        done: Future[None] = Future()

        def fire() -> None:
            self._timers.discard(done)
            if done.set_running_or_notify_cancel():
                self._publish_now(queue, Parked(body, message_id), done)

        def later() -> None:
            self._timers.add(done)
            self._loop.call_later(delay, fire)

        return self._ask(later, done)

    def close(self, timeout: float = 5.0) -> None:
        """Give back what is unacked, fail what is unconfirmed or not sent yet and stop the
        link's thread; anything asked of a closed link fails at once (as with AmqpLink)."""

        def shutdown() -> None:
            self.closed = True
            self.connected.clear()
            self.node.drop_link(self)
            with self._lock:
                held, self._held = self._held, []
            timers, self._timers = self._timers, set()
            for done in [d for *_, d in held] + list(timers):
                if not done.done():
                    done.set_exception(BrokerUnavailable("link closed"))

        self._call(shutdown)
        self._loop.stop()
        if threading.current_thread() is not self._loop.thread:
            self._loop.thread.join(timeout)

    # -- what a test tells it ----------------------------------------------------------------

    def hold_confirms(self) -> None:
        """From now on publishes wait, unconfirmed and not on their queue, until `confirm_held`
        or `fail_held`."""
        with self._lock:
            self._holding = True

    def confirm_held(self) -> int:
        """Put the held publishes on their queues and confirm them; stop holding. How many."""
        return self._release(confirm=True)

    def fail_held(self) -> int:
        """Fail the held publishes (never on their queues), as a lost connection does."""
        return self._release(confirm=False)

    def fail_next_publish(self, count: int = 1) -> None:
        """The broker refuses the next `count` publishes (a nack): not confirmed, not queued."""
        with self._lock:
            self._refuse += count

    def refuse_credentials(self) -> None:
        """As RabbitMQ refusing our credentials: `check()` raises ConfigError from now on."""
        self.fatal = ConnectionRefusedError("ACCESS_REFUSED")
        self.connected.clear()
        self.node.changed()

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    # -- what a test looks at (the node's) ---------------------------------------------------

    def ready(self, queue: str) -> list[Parked]:
        return self.node.ready(queue)

    def unacked(self, queue: str) -> int:
        return self.node.unacked(queue)

    def consumers(self, queue: str) -> int:
        return self.node.consumers(queue)

    def active(self, queue: str) -> int:
        return self.node.active(queue)

    @property
    def settlements(self) -> list[tuple[str, str, str]]:
        with self.node._cond:
            return list(self.node.settlements)

    @property
    def errors(self) -> list[str]:
        with self.node._cond:
            return list(self.node.errors)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        return self.node.wait_for(predicate, timeout)

    # -- the link's thread -------------------------------------------------------------------

    def _ask(self, fn: Callable[[], None], done: Future[Any]) -> Future[Any]:
        if not self._call(fn) and not done.done():
            done.set_exception(BrokerUnavailable("the link to RabbitMQ is closed"))
        return done

    def _call(self, fn: Callable[[], None]) -> bool:
        if self.closed:
            return False
        if threading.current_thread() is self._loop.thread:
            fn()
        else:
            self._loop.call_soon(fn)
        return True

    def _settle(self, delivery: MemoryDelivery, action: str) -> None:
        self._call(lambda: self.node.settle(delivery, action))

    def _publish_now(self, queue: str, message: Parked, done: Future[None]) -> None:
        with self._lock:
            if self._refuse:
                self._refuse -= 1
                fate = "refuse"
            elif self._holding:
                self._held.append((queue, message, done))
                fate = "hold"
            else:
                fate = "confirm"
        if fate == "confirm":
            self._confirm(queue, message, done)
            return
        if fate == "refuse":
            done.set_exception(BrokerUnavailable("the broker refused the message (nack)"))
        self.node.changed()

    def _confirm(self, queue: str, message: Parked, done: Future[None]) -> None:
        if self.node.enqueue(queue, message):
            done.set_result(None)
        else:
            done.set_exception(BrokerUnavailable(f"no queue took message {message.message_id}"))

    def _release(self, confirm: bool) -> int:
        with self._lock:
            self._holding = False
            held, self._held = self._held, []

        def settle() -> None:
            for queue, message, done in held:
                if confirm:
                    self._confirm(queue, message, done)
                else:
                    done.set_exception(BrokerUnavailable("connection lost before the confirm"))
            self.node.changed()

        self._call(settle)
        return len(held)

    def _error(self, what: str) -> None:
        with self.node._cond:
            self.node.errors.append(what)
            self.node.changed()
