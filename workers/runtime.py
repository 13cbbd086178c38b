"""consume -> decode -> handle -> publish -> ack. Handlers run off the pika I/O thread.

A handler gets the delivery and a `publish` function; the runtime acks the delivery only after
every message the handler published is confirmed by the broker. A DecodeError or InvalidInput
dead-letters the delivery at once; any other error gives it back for another attempt (the
queue's delivery limit stops a poison message). SIGTERM stops consuming and drains.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait

from core.adapters.rabbitmq import AmqpLink, Delivery
from core.domain.messages import Message
from core.errors import InvalidInput

log = logging.getLogger(__name__)

Publish = Callable[[str, Message, str], Future[None]]
Handler = Callable[[Delivery, Publish], None]
CONFIRM_WAIT = 60.0


class Runtime:
    def __init__(
        self, link: AmqpLink, queue: str, handler: Handler, concurrency: int, ordered: bool = False
    ) -> None:
        """`ordered`: deliveries of one task (by message id prefix) run one at a time, in order."""
        self.link = link
        self.queue = queue
        self.handler = handler
        self.concurrency = concurrency
        self._lanes: list[Executor] = (
            [ThreadPoolExecutor(1, thread_name_prefix=f"lane{i}") for i in range(concurrency)]
            if ordered
            else [ThreadPoolExecutor(concurrency, thread_name_prefix="work")]
        )
        self.stopping = threading.Event()

    def run(self, drain_timeout: float = 30.0) -> None:
        self.link.consume(self.queue, self.concurrency, self._on_delivery)
        # Wake up now and then: a signal delivered to another thread does not interrupt a wait.
        while not self.stopping.wait(0.5):
            if self.link.fatal:
                raise SystemExit(f"cannot use RabbitMQ: {self.link.fatal}")
        log.info("draining in-flight work (up to %.0fs)", drain_timeout)
        try:
            self.link.stop_consuming().result(5)
        except Exception as exc:
            log.warning("could not cancel the consumer cleanly: %s", exc)
        for lane in self._lanes:
            lane.shutdown(wait=True, cancel_futures=False)
        self.link.close()

    def stop(self) -> None:
        self.stopping.set()

    def _on_delivery(self, delivery: Delivery) -> None:
        key = delivery.message_id.split(":", 1)[0]
        lane = self._lanes[zlib.crc32(key.encode()) % len(self._lanes)]
        lane.submit(self._process, delivery)

    def _process(self, delivery: Delivery) -> None:
        published: list[Future[None]] = []

        def publish(queue: str, message: Message, message_id: str) -> Future[None]:
            future = self.link.publish(queue, message.encode(), message_id)
            published.append(future)
            return future

        try:
            self.handler(delivery, publish)
        except InvalidInput as exc:
            log.error("dead-lettering message %s: %s", delivery.message_id or "?", exc)
            delivery.reject()
            return
        except Exception:
            log.exception("message %s failed; giving it back", delivery.message_id)
            delivery.requeue()
            return
        self._ack_when_confirmed(delivery, published)

    def _ack_when_confirmed(self, delivery: Delivery, published: list[Future[None]]) -> None:
        done, pending = wait(published, timeout=CONFIRM_WAIT)
        failed = [f.exception() for f in done if f.exception()]
        if pending or failed:
            log.error(
                "message %s: results not confirmed (%s); not acking",
                delivery.message_id,
                failed or "timeout",
            )
            delivery.requeue()
            return
        delivery.ack()
