"""What aico's guarantees cost on this machine, each measured alone: the floor under its figures.

    .venv/bin/python -m bench.floor [--count 2000] [--amqp-url URL] [--json PATH]

The peer (Bolt + Celery) takes one broker hop per task on a classic queue with unconfirmed
publishes and keeps no record. aico takes two hops on quorum queues (x-delivery-limit, so a
poison task is dead-lettered rather than redelivered forever) with publisher confirms, and
appends a task's events to an fsync'd store. This measures, with nothing else running in this
process:

hop          one message published on one connection and consumed on another, from the publish
             call to the consumer's callback, p50 / p99 latency, and the CPU of both ends per
             message: (a) a durable classic queue, persistent message, no confirm (the peer's);
             (b) a quorum queue, persistent message, confirmed (aico's), the next publish
             waiting for the confirm as aico's link does for a task.
append       one event appended to aico's SQLite store (WAL, synchronous=FULL, group commit),
             from the call to its return, one thread: p50 / p99 and CPU per append; and the same
             with 8 threads appending at once (the group commit's share).

The figures are floors: aico's critical path from the command to the answer in the thread has
two (b) hops and three appends (the intake's record before the ack, the claim of the attempt
before Claude is asked, the answer recorded before it is reported; the result worker's mark
before it posts is a fourth), the peer's one (a) hop and none. A measurement tool: it prints
figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pika

from aico.rabbit_node import RabbitNode
from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0.0, "p99": 0.0}
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
    }


def hop(url: str, count: int, quorum: bool) -> dict[str, Any]:
    """Publish `count` messages one after another (each after the last was consumed) and time
    each from the publish call to its delivery on another connection."""
    params = pika.URLParameters(url)
    name = f"floor-{uuid.uuid4().hex[:8]}"
    arguments = {"x-queue-type": "quorum", "x-delivery-limit": 5} if quorum else None
    sender = pika.BlockingConnection(params)
    out = sender.channel()
    out.queue_declare(name, durable=True, arguments=arguments)
    if quorum:
        out.confirm_delivery()
    receiver = pika.BlockingConnection(params)
    into = receiver.channel()
    into.basic_qos(prefetch_count=10)
    arrived: dict[str, float] = {}
    got = threading.Event()

    def on_message(channel: Any, method: Any, _props: Any, body: bytes) -> None:
        arrived[body.decode()] = time.perf_counter()
        channel.basic_ack(method.delivery_tag)
        got.set()

    into.basic_consume(name, on_message)
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            receiver.process_data_events(time_limit=0.05)

    cpu0 = time.process_time()  # both ends are in this process: their CPU together
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    latencies: list[float] = []
    persistent = pika.BasicProperties(delivery_mode=2)
    for i in range(count + 50):
        key = str(i)
        got.clear()
        sent = time.perf_counter()
        out.basic_publish("", name, key.encode(), persistent)  # returns after the confirm
        got.wait(5)
        if i >= 50 and key in arrived:  # the first 50 warm up
            latencies.append((arrived[key] - sent) * 1000)
    cpu = time.process_time() - cpu0
    stop.set()
    consumer.join()
    out.queue_delete(name)
    sender.close()
    receiver.close()
    return {"ms": quantiles(latencies), "cpu_ms_per_message": cpu / (count + 50) * 1000}


def appends(count: int, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aico-floor-") as tmp:
        store = SqliteEventStore(Path(tmp) / "aico.db")
        latencies: list[float] = []
        lock = threading.Lock()
        each = count // threads

        def work(worker: int) -> None:
            mine = []
            for i in range(each):
                task = f"f{worker:02d}{i:06d}"
                data = {"user": "U1", "channel": "C1", "prompt": "a prompt of some length " * 8}
                started = time.perf_counter()
                store.append(task, events.SUBMITTED, data, f"{task}:submitted")
                mine.append((time.perf_counter() - started) * 1000)
            with lock:
                latencies.extend(mine)

        cpu0 = time.process_time()
        pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        cpu = time.process_time() - cpu0
        store.close()
    return {"ms": quantiles(latencies), "cpu_ms_per_append": cpu / (each * threads) * 1000}


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--count", type=int, default=2000, help="messages and appends (2000)")
    cli.add_argument("--amqp-url", default="", help="an existing broker instead of a private node")
    cli.add_argument("--json", type=Path, help="also write the figures to this file")
    args = cli.parse_args(argv)
    node = None
    try:
        if args.amqp_url:
            url = args.amqp_url
        else:
            node = RabbitNode(Path(tempfile.mkdtemp(prefix="aico-floor-rabbit-"))).start()
            url = node.url
        figures = {
            "hop_classic_unconfirmed": hop(url, args.count, quorum=False),
            "hop_quorum_confirmed": hop(url, args.count, quorum=True),
            "append_1_thread": appends(args.count, 1),
            "append_8_threads": appends(args.count, 8),
        }
    finally:
        if node is not None:
            node.stop()
    rows = [
        ("hop, classic queue, no confirm (the peer's)", "hop_classic_unconfirmed", "message"),
        ("hop, quorum queue, confirmed (aico's)", "hop_quorum_confirmed", "message"),
        ("store append, 1 thread", "append_1_thread", "append"),
        ("store append, 8 threads at once", "append_8_threads", "append"),
    ]
    print(f"{'what':<46} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms each':>12}")
    for label, key, unit in rows:
        f = figures[key]
        cpu = f[f"cpu_ms_per_{unit}"]
        print(f"{label:<46} {f['ms']['p50']:>8.2f} {f['ms']['p99']:>8.2f} {cpu:>12.3f}")
    classic, quorum = figures["hop_classic_unconfirmed"], figures["hop_quorum_confirmed"]
    one = figures["append_1_thread"]
    floor = 2 * quorum["ms"]["p50"] + 3 * one["ms"]["p50"]
    print(
        f"\nthe guarantees' latency floor on the critical path: 2 quorum hops + 3 appends = "
        f"{floor:.2f} ms p50, against the peer's 1 classic hop = {classic['ms']['p50']:.2f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
