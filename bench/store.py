"""Benchmark of aico's event store and of `/aico status`, the view built on it.

    .venv/bin/python -m bench.store [--quick] [--db-url URL] [--tasks 100000] [--seconds 5]
                                    [--threads 8] [--processes 2] [--process-threads 4]
                                    [--load-threads 64] [--iterations 200] [--real-clock]
                                    [--json PATH] [--keep]

The store is opened with aico.bootstrap.open_store, as every aico process opens it: by default a
fresh SQLite file in a temp dir for each phase (the header says which file system it is on:
fsync costs nothing on tmpfs), or the database at --db-url (`postgresql://…`; used as it is,
so give it an empty database; its address is never printed). Only the store and the code that
reads it are measured: no broker (the queue depth of `/aico status` is a constant function
here), no Slack, no Claude, nothing else writing while the reads are timed. Every timed phase
comes after an unmeasured warm-up. A task's life is 8 events with the data the processes
record: submitted, posted, queued, started, reply_pending, replied, answered, completed (5% of
the loaded tasks fail instead: a second started, then failed). The figures:

appends/s      Writer threads each append their own tasks' events one at a time, every append
               waiting until its event is durable (as the bot and the workers do), for --seconds
               after one unmeasured task per thread: 1 thread ("single"); --threads threads of one
               process (SQLite group-commits them in its writer thread); --processes processes x
               --process-threads threads (the bot, the task workers and the result worker are
               separate processes: with SQLite each has its own writer thread and they take the
               file's write lock in turn). Events per second from the start to the return of the
               last append, the ratio to single, and the latency of one append, p50 / p99.
load           --tasks tasks x 8 events, appended by --load-threads threads of one process as
               fast as the store takes them, into a fresh store: events per second. Users and
               channels are drawn with Zipf-like weights (a few are much busier than the rest).
status         With the loaded store, `Status(store, depth, queues).report()` and
               `status_blocks(report)` (what `/aico status` answers, minus the broker), --iterations
               times in a row: p50 / p95 / max in ms. Four workers send a heartbeat every 5 s
               meanwhile, from a thread, as task workers do. Below it, each store read of the
               report (and the rendering) timed alone the same way.
history        What `/aico history` reads: `recent(10, user=U)` and `summary(start of today UTC,
               user=U)`, --iterations times each, U going round the users: p50 / p95 in ms.
size           The store on disk after the load (and the status phase): SQLite's file + its WAL,
               or pg_database_size; MiB, and bytes per event.

Time spread. The store stamps each event with time.time() as it appends it, and the counters
behind the hour and day figures take a task's finish time (5-minute slot) and duration (bucket)
from those stamps. So that "last hour" and "last 24 h" mean something, the load plans a time for
each event (finish times uniform over the 24 h before the load, durations log-normal around 20
s) and, during the load only, the adapter module's `time.time()` answers the planned time of the
event being appended, in the thread appending it; nothing else of the write path changes.
--real-clock leaves the clock alone: every task then finishes within the load's own minutes.
Either way, the span of finish times actually in the store is printed, read from its events.

How busy the machine was during each phase is printed, and how much of it other processes
took (the machine's CPU time not spent by this process or its writer processes): with other
work on the machine, the figures are disturbed, and a NOTE says so. No figure is checked against
its target: this is a measurement tool. It exits 1 only when a phase fails (a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import itertools
import json
import math
import multiprocessing
import os
import queue
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from aico.bootstrap import open_store
from core.domain import events
from core.domain.messages import DEAD, RESULTS, TASKS
from core.domain.stats import slot_of, start_of_day
from core.slack.blocks import status_blocks
from core.usecases.status import HEARTBEAT_EVERY, LIVE_WITHIN, Status

FULL = {"tasks": 100_000, "seconds": 5.0, "iterations": 200}
QUICK = {"tasks": 10_000, "seconds": 2.0, "iterations": 100}
TARGETS = {"status": "p95 < 50"}
QUEUES = (TASKS, RESULTS, DEAD)  # names only: the depth is a constant function here
DAY = 86_400.0
EVENTS_PER_TASK = 8
FAILED_SHARE = 0.05
WARMUP_CALLS = 20  # unmeasured calls before each timed read
WORKERS = 4  # heartbeats in the store during the status phase
MODEL = "claude-sonnet-4-5"
MIB = 1024 * 1024
NOISY_PCT = 10  # % of the machine used by other processes during a phase: worth a note
LOREM = (
    "Event sourcing keeps every change as an event; the projections are derived from them. " * 120
)


# --------------------------------------------------------------------------- a task's events


@dataclass(frozen=True)
class Planned:
    """One event to append, and when it is meant to have happened (for the time spread)."""

    task: str
    type: str
    data: dict[str, Any]
    event_id: str
    at: float


@dataclass(frozen=True)
class People:
    """Users and channels with Zipf-like weights: a few of each are much busier."""

    users: list[str]
    channels: list[str]
    user_weights: list[float]
    channel_weights: list[float]

    @classmethod
    def of(cls, users: int, channels: int) -> People:
        return cls(
            [f"U{n:08d}" for n in range(users)],
            [f"C{n:08d}" for n in range(channels)],
            list(itertools.accumulate(1 / (n + 1) for n in range(users))),
            list(itertools.accumulate(1 / (n + 1) for n in range(channels))),
        )

    def pick(self, rng: random.Random) -> tuple[str, str]:
        user = rng.choices(self.users, cum_weights=self.user_weights)[0]
        return user, rng.choices(self.channels, cum_weights=self.channel_weights)[0]


def task_life(
    task_id: str, who: tuple[str, str], failed: bool, finished: float, rng: random.Random
) -> list[Planned]:
    """The 8 events of one task that finished at `finished`, with realistic data."""
    duration = min(max(rng.lognormvariate(math.log(20), 0.9), 2.0), 900.0)
    c = finished - duration  # created
    prompt = LOREM[: rng.randint(40, 800)]
    head = [
        (events.SUBMITTED, {"user": who[0], "channel": who[1], "prompt": prompt}, c),
        (events.POSTED, {"thread_ts": f"{c + 0.3:.6f}"}, c + 0.3),
        (events.QUEUED, {}, c + 0.35),
        (events.STARTED, {"worker": "task-1", "delivery": 1, "generation": 0}, c + 0.5),
        (events.REPLY_PENDING, {}, c + 0.6),
        (events.REPLIED, {"ts": f"{c + 0.9:.6f}"}, c + 0.9),
    ]
    tail = _failure(c, finished) if failed else _answer(c, finished, rng)
    ids = [f"{task_id}:{t}" for t, _, _ in head] + [f"{task_id}:{t}:2" for t, _, _ in tail]
    return [Planned(task_id, t, d, i, at) for (t, d, at), i in zip(head + tail, ids, strict=True)]


def _answer(created: float, finished: float, rng: random.Random) -> list[tuple]:
    usage = {"input_tokens": rng.randint(200, 6000), "output_tokens": rng.randint(50, 1500)}
    text = LOREM[: min(len(LOREM), usage["output_tokens"] * 4)]
    claude_ms = (finished - created - 1.0) * 1000
    cost = (usage["input_tokens"] * 3 + usage["output_tokens"] * 15) / 1_000_000
    common = {"model": MODEL, "usage": usage, "claude_ms": claude_ms, "started_at": created + 0.5}
    answered = {"text": text, **common}
    completed = {**common, "cost_usd": cost, "chars": len(text)}
    return [(events.ANSWERED, answered, finished - 0.05), (events.COMPLETED, completed, finished)]


def _failure(created: float, finished: float) -> list[tuple]:
    again = {"worker": "task-2", "delivery": 2, "generation": 0}
    error = {"error": "Claude API error 529: overloaded (3 tries)", "started_at": created + 0.5}
    return [(events.STARTED, again, created + 1.0), (events.FAILED, error, finished)]


def tasks_of(tag: str, seed: int) -> Iterator[list[Planned]]:
    """Endless tasks finishing now (for the append phases, which keep the real clock)."""
    rng, people = random.Random(seed), People.of(20, 5)
    for n in itertools.count():
        yield task_life(f"{tag}x{n}", people.pick(rng), False, time.time(), rng)


def load_plan(
    count: int, people: People, end: float, seed: int, tag: str
) -> Iterator[list[Planned]]:
    """`count` tasks finishing uniformly over the day before `end`, 5% of them failed."""
    rng = random.Random(seed)
    for n in range(count):
        finished = end - rng.uniform(0.0, DAY - 60.0)
        failed = rng.random() < FAILED_SHARE
        yield task_life(f"{tag}l{n:09d}", people.pick(rng), failed, finished, rng)


def append_all(store: Any, life: list[Planned]) -> list[float]:
    """Append a task's events in order; the latency of each, in ms."""
    latencies = []
    for e in life:
        t0 = time.perf_counter()
        store.append(e.task, e.type, e.data, e.event_id)
        latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


# --------------------------------------------------------------------------- appends/s


def drive(store: Any, threads: int, seconds: float, tag: str, ready: Callable[[], Any]) -> dict:
    """`threads` threads appending their own tasks' events, one at a time, for `seconds` after
    a warm-up task each and `ready()` (a barrier with other processes)."""
    warmed, go = threading.Barrier(threads + 1), threading.Event()
    deadline = [0.0]
    outcomes: list[tuple[int, float, list[float]]] = []

    def writer(n: int) -> None:
        lives = tasks_of(f"{tag}t{n}", seed=n)
        append_all(store, next(lives))
        warmed.wait()
        go.wait()
        done, latencies = 0, []
        while time.time() < deadline[0]:
            for e in next(lives):  # one task at a time, as far as the deadline allows
                latencies += append_all(store, [e])
                done += 1
                if time.time() >= deadline[0]:
                    break
        outcomes.append((done, time.time(), latencies))

    pool = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(threads)]
    for thread in pool:
        thread.start()
    warmed.wait()
    ready()
    start = time.time()
    deadline[0] = start + seconds
    go.set()
    for thread in pool:
        thread.join()
    return _merge(
        [{"events": d, "start": start, "end": e, "latencies": la} for d, e, la in outcomes]
    )


def _merge(runs: list[dict]) -> dict:
    return {
        "events": sum(r["events"] for r in runs),
        "start": min(r["start"] for r in runs),
        "end": max(r["end"] for r in runs),
        "latencies": [x for r in runs for x in r["latencies"]],
    }


def _child(url: str, threads: int, seconds: float, tag: str, barrier: Any, out: Any) -> None:
    """One writer process of the processes phase."""
    store = open_store(url)
    try:
        out.put(drive(store, threads, seconds, tag, lambda: barrier.wait(120)))
    finally:
        store.close()


def drive_processes(url: str, processes: int, threads: int, seconds: float, tag: str) -> dict:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    children = [
        ctx.Process(target=_child, args=(url, threads, seconds, f"{tag}p{n}", barrier, out))
        for n in range(processes)
    ]
    for child in children:
        child.start()
    try:
        runs = [out.get(timeout=seconds + 180) for _ in children]
    except queue.Empty:
        raise RuntimeError("a writer process did not report; see its traceback above") from None
    for child in children:
        child.join(30)
    return _merge(runs)


def appends_figures(run: dict) -> dict:
    window = run["end"] - run["start"]
    return {
        "events": run["events"],
        "window_s": window,
        "events_per_s": run["events"] / window,
        "p50_ms": pct(run["latencies"], 50),
        "p99_ms": pct(run["latencies"], 99),
    }


def measure_appends(args: argparse.Namespace, url_for: Callable[[str], str], busy: dict) -> dict:
    results = {}
    for name, threads in (("single", 1), ("threads", args.threads)):
        progress(f"appends: {name}, {threads} thread(s), {args.seconds:g} s")
        store = open_store(url_for(f"appends-{name}"))
        try:
            with watching(name, busy):
                run = drive(store, threads, args.seconds, f"{args.run}{name}", lambda: 0)
            results[name] = appends_figures(run)
        finally:
            store.close()
    progress(f"appends: {args.processes} processes x {args.process_threads} threads")
    with watching("processes", busy):
        run = drive_processes(
            url_for("appends-processes"),
            args.processes,
            args.process_threads,
            args.seconds,
            f"{args.run}procs",
        )
    results["processes"] = appends_figures(run)
    single = results["single"]["events_per_s"]
    for name in ("threads", "processes"):
        results[name]["ratio_to_single"] = results[name]["events_per_s"] / single
    return results


# --------------------------------------------------------------------------- the load


class Stamps:
    """Planned times for the events a store adapter appends, while installed (`with`).

    The adapter module's `time` becomes this object: `time()` answers the planned time of the
    event being appended in the calling thread (the real time otherwise), the rest is the real
    `time` module. Its `_append` is wrapped to set that event first, by its event id. Both go
    back as they were on exit.
    """

    def __init__(self, store: Any) -> None:
        self.module = sys.modules[type(store).__module__]
        self.real_time, self.real_append = self.module.time, getattr(self.module, "_append", None)
        params = list(inspect.signature(self.real_append).parameters) if self.real_append else []
        if "event_id" not in params:
            raise SystemExit(
                f"{self.module.__name__} has no _append(…, event_id, …) to stamp: "
                "run with --real-clock"
            )
        self.event_id_at = params.index("event_id")
        self.planned: dict[str, float] = {}  # event id -> at, for the tasks being appended
        self._local = threading.local()

    @contextlib.contextmanager
    def planning(self, life: list[Planned]) -> Iterator[None]:
        """The planned times of one task's events, while they are appended."""
        self.planned.update((e.event_id, e.at) for e in life)
        try:
            yield
        finally:
            for e in life:
                self.planned.pop(e.event_id, None)

    def time(self) -> float:
        return getattr(self._local, "at", None) or self.real_time.time()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real_time, name)

    def _append(self, *args: Any) -> Any:
        self._local.at = self.planned.get(args[self.event_id_at])
        try:
            return self.real_append(*args)
        finally:
            self._local.at = None

    def __enter__(self) -> Stamps:
        self.module.time, self.module._append = self, self._append
        return self

    def __exit__(self, *exc: object) -> None:
        self.module.time, self.module._append = self.real_time, self.real_append


def load(store: Any, plan: Iterator[list[Planned]], threads: int, stamps: Stamps | None) -> dict:
    """Every task of `plan`, by `threads` threads, as fast as the store takes them."""
    lock, done = threading.Lock(), itertools.count(1)

    def loader() -> None:
        while True:
            with lock:
                life = next(plan, None)
            if life is None:
                return
            with stamps.planning(life) if stamps else contextlib.nullcontext():
                append_all(store, life)
            if (n := next(done)) % 10_000 == 0:
                progress(f"load: {n:,} tasks")

    start = time.perf_counter()
    with stamps or contextlib.nullcontext():
        pool = [threading.Thread(target=loader, daemon=True) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    return {"seconds": time.perf_counter() - start}


def measure_load(store: Any, args: argparse.Namespace, people: People) -> dict:
    end = time.time()
    progress(f"load: {args.tasks:,} tasks x {EVENTS_PER_TASK} events, {args.load_threads} threads")
    plan = load_plan(args.tasks, people, end, args.seed, args.run)
    stamps = None if args.real_clock else Stamps(store)
    figures = load(store, plan, args.load_threads, stamps)
    figures["tasks"] = args.tasks
    figures["events_per_s"] = args.tasks * EVENTS_PER_TASK / figures["seconds"]
    return figures


# --------------------------------------------------------------------------- the reads


def timed(call: Callable[[], Any], times: int) -> list[float]:
    """`call()` timed `times` times in a row, in ms, after WARMUP_CALLS unmeasured calls."""
    for _ in range(WARMUP_CALLS):
        call()
    latencies = []
    for _ in range(times):
        t0 = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


def spread(latencies: list[float]) -> dict:
    return {
        "p50_ms": pct(latencies, 50),
        "p95_ms": pct(latencies, 95),
        "max_ms": max(latencies),
    }


def heartbeats(store: Any) -> None:
    for n in range(WORKERS):
        breaker = {"name": "claude", "state": "closed", "failure_rate": 0.0, "calls": 40}
        state = {"capacity": 8, "busy": n, "host": "bench", "pid": n, "breaker": breaker}
        store.heartbeat(f"task-{n}", state)


@contextlib.contextmanager
def beating(store: Any) -> Iterator[None]:
    """WORKERS heartbeats now, then every HEARTBEAT_EVERY seconds in a thread, as workers do."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_EVERY):
            heartbeats(store)

    heartbeats(store)
    thread = threading.Thread(target=beat, name="heartbeats", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def measure_status(store: Any, iterations: int) -> dict:
    status = Status(store, lambda queue: (0, 1), QUEUES)
    whole = timed(lambda: status_blocks(status.report()), iterations)
    report = status.report()
    parts = {
        "summary(last hour)": lambda: store.summary(time.time() - 3600),
        "summary(last 24 h)": lambda: store.summary(time.time() - DAY),
        "summary(today UTC)": lambda: store.summary(start_of_day()),
        "workers(live)": lambda: store.workers(time.time() - LIVE_WITHIN),
        "status_blocks(report)": lambda: status_blocks(report),
    }
    return {
        **spread(whole),
        "parts": {name: spread(timed(call, iterations)) for name, call in parts.items()},
        "finished": {
            "hour": report.hour.finished,
            "day": report.day.finished,
            "today": report.today.finished,
        },
        "workers_seen": len(report.workers),
    }


def measure_history(store: Any, people: People, iterations: int) -> dict:
    users = itertools.cycle(random.Random(1).sample(people.users, len(people.users)))
    recent = timed(lambda: store.recent(10, user=next(users)), iterations)
    today = timed(lambda: store.summary(start_of_day(), user=next(users)), iterations)
    return {"recent": spread(recent), "summary_today": spread(today)}


# --------------------------------------------------------------------------- what is in the store


def query(url: str, sql: str) -> list[tuple]:
    """Rows of `sql` on a connection of our own (read only for SQLite)."""
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(url) as db:
            return db.execute(sql).fetchall()
    path = Path(url.removeprefix("sqlite:///"))
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(sql).fetchall()


def contents(url: str, now: float) -> dict:
    """What the status phase read from: counts, and the span of the finish times."""
    first, last, finished = query(
        url, "SELECT MIN(at), MAX(at), COUNT(*) FROM events WHERE type IN ('completed', 'failed')"
    )[0]
    return {
        "events": query(url, "SELECT COUNT(*) FROM events")[0][0],
        "tasks": query(url, "SELECT COUNT(*) FROM tasks")[0][0],
        "finished": finished,
        "finished_span_h": [(now - first) / 3600, (now - last) / 3600],
        "stats_rows_24h": query(
            url, f"SELECT COUNT(*) FROM stats WHERE slot >= {slot_of(now - DAY)}"
        )[0][0],
    }


def size_on_disk(url: str, event_count: int) -> dict:
    if url.startswith(("postgresql://", "postgres://")):
        total = query(url, "SELECT pg_database_size(current_database())")[0][0]
        parts = {"database": total}
    else:
        path = Path(url.removeprefix("sqlite:///"))
        wal = Path(f"{path}-wal")
        parts = {"file": path.stat().st_size, "wal": wal.stat().st_size if wal.exists() else 0}
        total = sum(parts.values())
    return {
        "mib": total / MIB,
        "parts_mib": {k: v / MIB for k, v in parts.items()},
        "bytes_per_event": total / max(event_count, 1),
    }


# --------------------------------------------------------------------------- the machine


def describe_store(url: str, tmp: Path) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return f"PostgreSQL {query(url, 'SHOW server_version')[0][0]} (--db-url)"
    path = Path(url.removeprefix("sqlite:///")).parent if url else tmp
    return (
        f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=FULL) on {filesystem(path)}"
        f"{' (--db-url)' if url else ', a fresh file per phase in a temp dir'}"
    )


def filesystem(path: Path) -> str:
    mounts = [p for p in psutil.disk_partitions(all=True) if str(path).startswith(p.mountpoint)]
    best = max(mounts, key=lambda p: len(p.mountpoint), default=None)
    return best.fstype if best else "unknown file system"


def build_id() -> str:
    """The commit measured, and how many files of the work tree differ from it."""
    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        changed = len(git("status", "--porcelain", "--untracked-files=no").splitlines())
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} + {changed} changed file(s)" if changed else head


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "loadavg": os.getloadavg(),
        "python": sys.version.split()[0],
    }


@contextlib.contextmanager
def watching(phase: str, busy: dict) -> Iterator[None]:
    """How busy the machine was during `phase`, and how much of that was not us (this process
    and the children it waited for): % of all CPUs."""
    machine0, own0, wall0 = machine_busy(), own_cpu(), time.monotonic()
    yield
    capacity = (time.monotonic() - wall0) * (os.cpu_count() or 1) / 100
    machine, own = machine_busy() - machine0, own_cpu() - own0
    others = max(0.0, machine - own)  # sampling granularity can make it a hair negative
    busy[phase] = {"machine_pct": machine / capacity, "others_pct": others / capacity}


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle, so far (guest time is in user already)."""
    times = psutil.cpu_times()._asdict()
    idle = ("idle", "iowait", "guest", "guest_nice")
    return sum(v for k, v in times.items() if k not in idle)


def own_cpu() -> float:
    return sum(os.times()[:4])  # user, system, and those of the children waited for


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, interpolated between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the report


def report(results: dict) -> str:
    config, m = results["config"], results["config"]["machine"]
    lines = [
        f"aico store benchmark · {m['cpus']} CPUs ({m['cpus_usable']} usable) · "
        f"load average at start {' '.join(f'{x:.2f}' for x in m['loadavg'])} · "
        f"Python {m['python']} · build {config['build']}",
        f"store: {config['store']}",
        "",
        f"{'figure':<60}{'measured':>22}{'target':>12}",
    ]

    def row(label: str, value: str, key: str = "") -> None:
        lines.append(f"{label:<60}{value:>22}{TARGETS.get(key, ''):>12}")

    _append_rows(row, results["appends"], config)
    _load_rows(row, results["load"])
    _read_rows(row, results)
    size = results["size"]
    parts = " + ".join(f"{k} {v:.1f}" for k, v in size["parts_mib"].items())
    row(f"store size on disk ({parts}), MiB", f"{size['mib']:.1f}")
    row("  per event, bytes", f"{size['bytes_per_event']:.0f}")
    lines += ["", *_notes(results)]
    return "\n".join(lines)


def _append_rows(row: Callable[..., None], appends: dict, config: dict) -> None:
    labels = {
        "single": "appends/s, 1 thread",
        "threads": f"appends/s, {config['threads']} threads of 1 process (x single)",
        "processes": f"appends/s, {config['processes']} processes x "
        f"{config['process_threads']} threads (x single)",
    }
    for name, label in labels.items():
        a = appends[name]
        ratio = f" ({a['ratio_to_single']:.2f}x)" if "ratio_to_single" in a else ""
        row(label, f"{a['events_per_s']:,.0f}{ratio}")
        row("  append latency p50 / p99, ms", f"{a['p50_ms']:.2f} / {a['p99_ms']:.2f}")


def _load_rows(row: Callable[..., None], load_: dict) -> None:
    row(
        f"load, {load_['tasks']:,} tasks x {EVENTS_PER_TASK} events, events/s",
        f"{load_['events_per_s']:,.0f}",
    )
    row("  load time, s", f"{load_['seconds']:.1f}")


def _read_rows(row: Callable[..., None], results: dict) -> None:
    status, n = results["status"], results["config"]["iterations"]
    row(
        f"/aico status (report + blocks, {n}x) p50 / p95 / max, ms",
        f"{status['p50_ms']:.1f} / {status['p95_ms']:.1f} / {status['max_ms']:.1f}",
        "status",
    )
    for name, part in status["parts"].items():
        row(f"  {name} p50 / p95, ms", f"{part['p50_ms']:.2f} / {part['p95_ms']:.2f}")
    history = results["history"]
    for name, label in (("recent", "recent(10, user)"), ("summary_today", "summary(today, user)")):
        h = history[name]
        row(f"/aico history: {label} p50 / p95, ms", f"{h['p50_ms']:.2f} / {h['p95_ms']:.2f}")


def _notes(results: dict) -> list[str]:
    c, status = results["contents"], results["status"]
    first, last = c["finished_span_h"]
    clock = "the real clock" if results["config"]["real_clock"] else "planned times (see --help)"
    return [
        *_busy_notes(results["busy"], results["config"]["store"]),
        f"in the store for the reads: {c['tasks']:,} tasks, {c['events']:,} events; "
        f"{c['finished']:,} finished, {first:.2f} h to {last:.2f} h before the status phase "
        f"(stamped with {clock}); {c['stats_rows_24h']:,} counter rows in the last 24 h",
        f"the status report saw: {status['finished']['hour']:,} tasks finished in the last "
        f"hour, {status['finished']['day']:,} in 24 h, {status['finished']['today']:,} today "
        f"(UTC); {status['workers_seen']} of {WORKERS} workers live",
        "not measured: the broker (queue depth is a constant function), Slack, Claude; while "
        f"the reads are timed (one thread), only {WORKERS} heartbeats every "
        f"{HEARTBEAT_EVERY:g} s write",
    ]


def _busy_notes(busy: dict, store: str) -> list[str]:
    phases = ", ".join(
        f"{p} {b['machine_pct']:.0f} ({b['others_pct']:.0f})" for p, b in busy.items()
    )
    lines = [f"CPU busy by phase, % of all CPUs (of it, other processes'): {phases}"]
    if noisy := [p for p, b in busy.items() if b["others_pct"] > NOISY_PCT]:
        server = " (the PostgreSQL server, if on this machine, is one of them)"
        lines.append(
            f"NOTE: other processes used more than {NOISY_PCT}% of the machine during "
            f"{', '.join(noisy)}: those figures are disturbed"
            f"{server if store.startswith('PostgreSQL') else ''}"
        )
    return lines


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.split("\n")[0])
    cli.add_argument("--tasks", type=int, help="tasks loaded for the reads (100000)")
    cli.add_argument("--seconds", type=float, help="seconds of each appends/s phase (5)")
    cli.add_argument("--iterations", type=int, help="timed calls of each read (200)")
    cli.add_argument("--threads", type=int, default=8, help="writer threads, threads phase")
    cli.add_argument("--processes", type=int, default=2, help="writer processes")
    cli.add_argument("--process-threads", type=int, default=4, help="writer threads per process")
    cli.add_argument("--load-threads", type=int, default=64, help="threads of the load")
    cli.add_argument("--users", type=int, default=200, help="users of the loaded tasks")
    cli.add_argument("--channels", type=int, default=30, help="channels of the loaded tasks")
    cli.add_argument("--seed", type=int, default=7, help="of the loaded tasks")
    cli.add_argument("--real-clock", action="store_true", help="no time spread: stamp real times")
    cli.add_argument("--db-url", default="", help="the store to measure (a fresh SQLite file)")
    cli.add_argument("--quick", action="store_true", help="a smoke run: " + str(QUICK))
    cli.add_argument("--json", type=Path, help="also write the figures to this file, as JSON")
    cli.add_argument("--keep", action="store_true", help="keep the temp dir and its stores")
    args = cli.parse_args(argv)
    for name, value in {**FULL, **(QUICK if args.quick else {})}.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.run = uuid.uuid4().hex[:6]  # in every task id: a second run into one database is new
    return args


def run(args: argparse.Namespace, tmp: Path) -> dict:
    def url_for(phase: str) -> str:
        return args.db_url or f"sqlite:///{tmp / phase}.db"

    busy: dict[str, dict] = {}
    results: dict[str, Any] = {"config": config(args, tmp), "busy": busy}
    results["appends"] = measure_appends(args, url_for, busy)
    people = People.of(args.users, args.channels)
    store = open_store(url_for("status"))
    try:
        with watching("load", busy):
            results["load"] = measure_load(store, args, people)
        progress(f"status and history: {args.iterations} calls each")
        with beating(store), watching("reads", busy):
            results["status"] = measure_status(store, args.iterations)
            results["history"] = measure_history(store, people, args.iterations)
        results["contents"] = contents(url_for("status"), time.time())
        results["size"] = size_on_disk(url_for("status"), results["contents"]["events"])
    finally:
        store.close()
    return results


def config(args: argparse.Namespace, tmp: Path) -> dict:
    return {
        **{k: v for k, v in vars(args).items() if k not in ("db_url", "json")},
        "machine": machine(),
        "store": describe_store(args.db_url, tmp),
        "build": build_id(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="aico-bench-store-"))
    try:
        results = run(args, tmp)
    finally:
        if args.keep:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
