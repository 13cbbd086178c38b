"""consume -> decode -> handle -> publish -> ack. Handlers run off the pika I/O thread.

A handler gets the delivery and a `publish` function; the runtime acks the delivery only once
every message the handler published is confirmed by the broker (the handler's thread is free for
the next delivery meanwhile). A Reject (a DecodeError among them) dead-letters the delivery at
once; any other error gives it back for another attempt (the queue's delivery limit stops a poison
message). On stop it cancels the consumer, finishes what it holds, and only then closes.

`paused` (optional) is asked twice a second; while it says so, the runtime stops consuming, so
messages wait in the queue (a task worker pauses while its Claude circuit breaker is open).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from core.domain.messages import Message
from core.errors import Reject, TryLater
from core.ports import Broker, Delivery

log = logging.getLogger(__name__)

Publish = Callable[..., Future[None]]  # (queue, message, message_id, delay=0.0)
Handler = Callable[[Delivery, Publish], None]
PREFETCH_EXTRA = 2  # deliveries waiting beside the busy ones, so no slot idles between tasks
BROKER_AWAY = 5.0  # seconds without a connection after which a drain stops waiting


class Runtime:
    def __init__(
        self,
        link: Broker,
        queue: str,
        handler: Handler,
        concurrency: int,
        ordered: bool = False,
        paused: Callable[[], bool] | None = None,
        stopping: threading.Event | None = None,
        spare: bool = False,
    ) -> None:
        """`ordered`: deliveries of one task (by message id prefix) run one at a time, in order.
        `spare`: the deliveries waiting beside the busy ones (PREFETCH_EXTRA) get threads of their
        own, for a handler that limits its slow part itself (a task worker's Claude slots): they
        do their bookkeeping while the slots are busy, and a slot set free is taken at once."""
        self.link = link
        prefetch = concurrency + PREFETCH_EXTRA
        self.routes: dict[str, tuple[Handler, int]] = {queue: (handler, prefetch)}
        self.concurrency = concurrency
        self.paused = paused
        self._paused = False
        threads = prefetch if spare else concurrency
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="work")
        self._keyed = _Keyed(self._pool) if ordered else None
        self.stopping = stopping or threading.Event()  # handlers may watch it too
        self._unsettled = 0
        self._settled = threading.Condition()

    def also(self, queue: str, handler: Handler, prefetch: int = 1) -> Runtime:
        """Consume `queue` too, with its own handler (on the same lanes)."""
        self.routes[queue] = (handler, prefetch)
        return self

    def run(self, drain_timeout: float = 60.0) -> None:
        self._consume()
        # Wake up now and then: a signal delivered to another thread does not interrupt a wait.
        while not self.stopping.wait(0.5):
            self.link.check()  # refused credentials stop the process (CONFIG_ERROR)
            self._follow_pause()
        log.info("draining in-flight work (up to %.0fs)", drain_timeout)
        try:
            self.link.stop_consuming().result(5)
        except Exception as exc:
            log.warning("could not cancel the consumer cleanly: %s", exc)
        self._drain(drain_timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.link.close()
        log.info("stopped")

    def stop(self) -> None:
        self.stopping.set()

    def _consume(self) -> None:
        for queue, (handler, prefetch) in self.routes.items():
            self.link.consume(queue, prefetch, functools.partial(self._on_delivery, handler))

    def _follow_pause(self) -> None:
        paused = bool(self.paused and self.paused())
        if paused == self._paused:
            return
        self._paused = paused
        if paused:
            log.warning("pausing: messages wait in the queue until this worker can use them")
            self.link.stop_consuming()
        else:
            log.info("resuming consumption")
            self._consume()

    def _drain(self, timeout: float) -> None:
        """Wait for what is in flight to be settled, for up to `timeout` seconds; but not for
        long while the broker is away: what came on a lost channel cannot be acked any more,
        and the broker delivers it again."""
        deadline = time.monotonic() + timeout
        away_since: float | None = None
        with self._settled:
            while self._unsettled and (now := time.monotonic()) < deadline:
                away_since = None if self.link.connected.is_set() else (away_since or now)
                if away_since is not None and now - away_since > BROKER_AWAY:
                    break
                self._settled.wait(min(0.5, deadline - now))
            if self._unsettled:
                log.warning(
                    "%d message(s) not finished; the broker will deliver them again",
                    self._unsettled,
                )

    def _on_delivery(self, handler: Handler, delivery: Delivery) -> None:
        with self._settled:
            self._unsettled += 1
        work = functools.partial(self._process, handler, delivery)
        if self._keyed is None:
            self._pool.submit(work)
        else:
            self._keyed.submit(delivery.message_id.split(":", 1)[0], work)

    def _process(self, handler: Handler, delivery: Delivery) -> None:
        published: list[Future[None]] = []

        def publish(queue: str, message: Message, message_id: str, delay: float = 0.0):
            body = message.encode()
            future = (
                self.link.publish_later(delay, queue, body, message_id)
                if delay
                else self.link.publish(queue, body, message_id)
            )
            published.append(future)
            return future

        settle = delivery.ack
        try:
            handler(delivery, publish)
        except Reject as exc:
            log.error("dead-lettering message %s: %s", delivery.message_id or "?", exc)
            settle = delivery.reject  # once what it published (the user's notice) is safe
        except Exception as exc:
            if isinstance(exc, TryLater):
                log.warning("message %s given back: %s", delivery.message_id, exc)
            else:
                log.exception("message %s failed; giving it back", delivery.message_id)
            for future in published:
                future.cancel()  # a delayed report not sent yet has nothing left to say
            self._settle(delivery.requeue)
            return
        # A cancelled delayed publish is never sent, so there is nothing to wait for.
        self._when_confirmed(delivery, [f for f in published if not f.cancelled()], settle)

    def _when_confirmed(
        self, delivery: Delivery, published: list[Future[None]], settle: Callable[[], None]
    ) -> None:
        remaining = len(published)
        lock = threading.Lock()

        def confirmed(_: Future[None]) -> None:
            nonlocal remaining
            with lock:
                remaining -= 1
                if remaining:
                    return
            errors = [f.exception() for f in published if f.exception()]
            if errors:
                log.error(
                    "message %s: results not confirmed (%s); giving it back",
                    delivery.message_id,
                    errors[0],
                )
                self._settle(delivery.requeue)
            else:
                self._settle(settle)

        if not published:
            self._settle(settle)
        for future in published:
            future.add_done_callback(confirmed)

    def _settle(self, action: Callable[[], None]) -> None:
        action()
        with self._settled:
            self._unsettled -= 1
            self._settled.notify_all()


class _Keyed:
    """Runs the work of one key (a task's id) one at a time, in the order it came, on a shared
    pool: work of other keys never waits behind it, only for a free thread. (Fixed lanes by a
    hash of the key, as before, made a task's report wait behind another task's slow Slack call
    whenever their ids shared a lane.)"""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        self._waiting: dict[str, deque[Callable[[], None]]] = {}  # the keys running, and theirs

    def submit(self, key: str, work: Callable[[], None]) -> None:
        with self._lock:
            if key in self._waiting:
                self._waiting[key].append(work)
                return
            self._waiting[key] = deque()
        self._pool.submit(self._run, key, work)

    def _run(self, key: str, work: Callable[[], None]) -> None:
        while True:
            try:
                work()
            except Exception:  # _process settles what it can; the key's next work still runs
                log.exception("work of %s failed", key)
            with self._lock:
                queue = self._waiting[key]
                if not queue:
                    del self._waiting[key]
                    return
                work = queue.popleft()
