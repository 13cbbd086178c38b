"""Scale, not only speed: aico's figures with 1, 2 and 4 task workers, with the event store in
PostgreSQL instead of SQLite, and with a 10,000-task backlog.

    .venv/bin/python -m bench.scale [--quick] [--parts curve,backlog] [--workers 1,2,4]
                                    [--stores sqlite,postgresql] [--db-url URL]
                                    [--backlog 10000] [--backlog-workers 1]
                                    [--backlog-stores sqlite,postgresql] [--json PATH]

A sibling of bench/e2e.py, built on its machinery (the Bench and its stacks from the Procfile on a
fresh vhost and data dir, warmed up; the signed senders; the Tracker of what FakeSlack shows; the
CPU snapshots by process). One private RabbitMQ node, one FakeSlack and one FakeClaude serve every
stack. Per-channel pacing is off (every task goes to one channel), as in bench/e2e.py.

curve     For each store (--stores) and each pool size n (--workers; AICO_MIN_WORKERS =
          AICO_MAX_WORKERS = n, AICO_TASK_CONCURRENCY = --concurrency each, so C = 8n), one fresh
          stack runs, after its warm-up: (only at n = --ack-workers) --ack-count commands at
          --ack-rate a second, open loop, Claude at --latency: the acks' p50 / p99 / max; then
          N tasks at once, Claude at --latency, N chosen so that the ideal N·L/C is
          --wall-seconds: wall ÷ ideal; then --throughput-tasks at once, Claude at 0 ms: tasks
          per second end to end. CPU per task is every aico process's user+system CPU over those
          two bursts ÷ their tasks, by process (bot, pm, task workers, result worker, children
          included); the RabbitMQ node's and the PostgreSQL server's are shown beside it, not
          counted. Peak RSS is the summed RSS of the aico processes, sampled every 0.2 s while
          the stack runs (warm-up included).
postgres  With "postgresql" among --stores, every stack gets AICO_DB_URL = a fresh database:
          on a private PostgreSQL server the bench starts as the tests do (fsync on), or, with
          --db-url, on that server (its user must be allowed to CREATE DATABASE; the bench
          drops what it made; the URL is never printed).
backlog   For each of --backlog-stores, one stack (--backlog-workers task workers). FakeClaude
          holds every call until the bench releases it, so the C calls that start are held and
          every other task waits its turn: --backlog commands are sent at once over --senders
          connections (each acked with a task id, its parent posted), and the bench then reads
          the task queue's depth from RabbitMQ (ready / unacked) and the task counts from the
          store, as evidence that the backlog really is queued and recorded. `/aico status` (a
          signed slash command) is timed --status-count times while the backlog is full; then
          Claude is released (answering at --drain-latency) and `/aico status` is timed every
          --status-every seconds while the backlog drains (those calls are part of the load).
          The drain rate is shown per --drain-step tasks answered, from the release; each aico
          process's RSS is sampled every 0.5 s over the whole part (start / peak / end). Once
          every task is Done and the queues are empty, every task must have exactly one parent
          message and one reply in its thread: a task lost, failed or answered twice fails the
          run. AICO_CLAUDE_TIMEOUT is 300 s there (the held calls wait while the backlog fills).

The tables are printed as markdown; --json also writes every figure. No figure is checked
against a target: this is a measurement tool. It exits 1 when the stack fails (a command not
acked, a task lost, failed or answered twice, a process exiting non-zero), after printing what
it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from aico.bootstrap import open_store
from aico.fakes.signing import SlackSender
from bench.e2e import (
    CHANNEL,
    MIB,
    SETTLE_GRACE,
    TASK_IN_BLOCKS,
    Batch,
    Bench,
    BenchFailure,
    MemorySampler,
    _prompt,
    aico_processes,
    broker_processes,
    build_id,
    cpu_delta,
    cpu_snapshot,
    machine_busy,
    pct,
    process_table,
    send_commands,
)
from core.domain.messages import RESULTS, TASKS
from tests.integration.stack import SIGNING_SECRET, Stack

PARTS = ("curve", "backlog")
STORES = ("sqlite", "postgresql")
AICO_ROLES = ("bot", "pm", "task", "result")
ROLE_NAMES = {"bot": "bot", "pm": "pm", "task": "task workers", "result": "result worker"}
TIMELINE_EVERY = 0.5  # seconds between two RSS samples of the backlog part
POLL = 0.25  # seconds between two looks at what Slack shows, while a large backlog is under way
HELD_CLAUDE_TIMEOUT = "300"  # AICO_CLAUDE_TIMEOUT of the backlog's stack: its held calls wait
FULL = {
    "wall_seconds": 3.0,
    "throughput_tasks": 1000,
    "ack_count": 200,
    "warmup": 16,
    "backlog": 10_000,
    "drain_step": 1000,
    "status_count": 5,
}
QUICK = {
    "wall_seconds": 1.5,
    "throughput_tasks": 300,
    "ack_count": 50,
    "warmup": 8,
    "backlog": 2000,
    "drain_step": 250,
    "status_count": 3,
}


# --------------------------------------------------------------------------- pure parts


def wall_tasks(seconds: float, capacity: int, latency: float) -> int:
    """How many tasks make the ideal N·L/C last `seconds` (at least one round of C)."""
    if latency <= 0:
        return capacity
    return max(capacity, round(seconds * capacity / latency))


@dataclass(frozen=True)
class Chunk:
    """One stretch of the drain: answers `first`..`last` (1-based), shown `seconds` after the
    previous stretch's last answer (or the release)."""

    first: int
    last: int
    seconds: float

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def drain_chunks(times: list[float], start: float, step: int) -> list[Chunk]:
    """The drain cut into stretches of `step` answers (the last one may be shorter): `times` are
    the instants answers were shown, `start` when the backlog was released."""
    ordered = sorted(times)
    chunks, previous = [], start
    for first in range(0, len(ordered), step):
        last = min(first + step, len(ordered))
        chunks.append(Chunk(first + 1, last, ordered[last - 1] - previous))
        previous = ordered[last - 1]
    return chunks


def steadiness(chunks: list[Chunk]) -> float | None:
    """The slowest stretch's rate ÷ the fastest's (1.0: perfectly steady), among the stretches
    between the first (it includes the calls held at the release) and the last (the pipeline
    empties: nothing waits behind it)."""
    inner = chunks[1:-1]
    if len(inner) < 2:
        return None
    rates = [c.rate for c in inner]
    return min(rates) / max(rates)


Samples = list[tuple[float, dict[str, int]]]  # (seconds since the start, role -> RSS bytes)


def rss_summary(samples: Samples) -> dict[str, dict[str, float]]:
    """Per role, and for the stack ("total"), its RSS in the first sample, its highest and its
    RSS in the last sample, MiB. A role missing from a sample counts 0 there."""
    if not samples:
        return {}
    roles = sorted({r for _, by_role in samples for r in by_role}, key=_role_order)
    series = {r: [by_role.get(r, 0) for _, by_role in samples] for r in roles}
    series["total"] = [sum(by_role.values()) for _, by_role in samples]
    return {
        role: {"start": v[0] / MIB, "peak": max(v) / MIB, "end": v[-1] / MIB}
        for role, v in series.items()
    }


def fold_role(role: str) -> str:
    """A child process counts with its parent's role ("bot+child" is the bot's)."""
    return role.split("+", 1)[0]


def per_task_cpu(cpu: dict[str, float], busy: float, tasks: int) -> dict[str, float]:
    """CPU ms per task by role (children folded into their parent), the aico total, and the
    machine's CPU not spent by any measured process ("other")."""
    by_role: dict[str, float] = defaultdict(float)
    for role, seconds in cpu.items():
        by_role[fold_role(role)] += seconds * 1000 / tasks
    by_role["aico"] = sum(by_role.get(r, 0.0) for r in AICO_ROLES)
    measured = sum(seconds for seconds in cpu.values()) * 1000 / tasks
    by_role["machine"] = busy * 1000 / tasks
    by_role["other"] = by_role["machine"] - measured
    return dict(by_role)


def markdown_table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A markdown table: the first `left` columns aligned left, the others right."""
    align = ["---" if i < left else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        cells = row + [""] * (len(header) - len(row))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def fmt(value: float | None, digits: int = 1) -> str:
    """A figure for a table: n/a when missing, thousands separated."""
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def _role_order(role: str) -> tuple[int, str]:
    return (AICO_ROLES.index(role) if role in AICO_ROLES else len(AICO_ROLES), role)


# --------------------------------------------------------------------------- the report


def report(results: dict[str, Any]) -> str:
    config = results["config"]
    lines = [
        f"aico at scale · {config['cpus']} CPUs · concurrency {config['concurrency']} per task "
        f"worker · Claude {config['latency_s'] * 1000:.0f} ms · build {config['build']}",
    ]
    if curve := results.get("curve"):
        curve = sorted(curve, key=lambda p: (STORES.index(p["store"]), p["workers"]))
        lines += ["", *curve_table(curve, config), "", *cpu_table(curve)]
        if acks := [p for p in curve if p.get("ack")]:
            lines += ["", *ack_table(acks)]
    if backlog := results.get("backlog"):
        lines += ["", *backlog_tables(backlog)]
    for note in results.get("notes", []):
        lines.append(f"NOTE: {note}")
    for warning in results.get("warnings", []):
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)


def curve_table(curve: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    latency = config["latency_s"] * 1000
    header = [
        "store",
        "task workers",
        "C",
        f"wall ÷ ideal, Claude {latency:.0f} ms (N)",
        "tasks/s, Claude 0 ms (N)",
        "all acked, s",
        "CPU ms per task, aico",
        "peak RSS, MiB",
    ]
    rows = [
        [
            p["store"],
            str(p["workers"]),
            str(p["capacity"]),
            f"{fmt(p['wall']['wall_over_ideal'], 3)} ({p['wall']['tasks']})",
            f"{fmt(p['throughput']['tasks_per_s'])} ({p['throughput']['tasks']})",
            fmt(p["throughput"]["all_acked_s"], 2),
            fmt(p["cpu_ms_per_task"]["aico"], 2),
            fmt(p["peak_rss_mib"]),
        ]
        for p in curve
    ]
    return markdown_table(header, rows, left=1)


def cpu_table(curve: list[dict[str, Any]]) -> list[str]:
    header = [
        "CPU ms per task (store, workers)",
        *(ROLE_NAMES[r] for r in AICO_ROLES),
        "aico",
        "RabbitMQ (not counted)",
        "PostgreSQL server (not counted)",
        "other processes",
    ]
    rows = []
    for p in curve:
        cpu = p["cpu_ms_per_task"]
        rows.append(
            [
                f"{p['store']}, {p['workers']}",
                *(fmt(cpu.get(r, 0.0), 2) for r in AICO_ROLES),
                fmt(cpu["aico"], 2),
                fmt(cpu.get("broker"), 2),
                fmt(cpu.get("db"), 2) if p["store"] == "postgresql" else "",
                fmt(cpu["other"], 2),
            ]
        )
    return markdown_table(header, rows)


def ack_table(points: list[dict[str, Any]]) -> list[str]:
    header = ["store", "ack p50, ms", "ack p99, ms", "max, ms", "commands"]
    rows = []
    for p in points:
        ack = p["ack"]
        rows.append(
            [
                f"{p['store']} ({p['workers']} task worker(s)), {ack['rate_per_s']:g}/s",
                fmt(ack["p50_ms"]),
                fmt(ack["p99_ms"]),
                fmt(ack["max_ms"]),
                str(ack["commands"]),
            ]
        )
    return markdown_table(header, rows)


def backlog_rows(b: dict[str, Any]) -> list[tuple[str, str]]:
    """One backlog's figures, as (label, value) rows of the summary table."""
    full, drain = b["status_full_ms"], b["status_draining_ms"]
    cpu = b["drain_cpu_ms_per_task"]
    return [
        ("task workers, C", f"{b['workers']}, {b['capacity']}"),
        ("tasks sent at once / acked with a task id", f"{b['tasks']:,} / {b['acked']:,}"),
        (
            "filled in: all acked / all parents posted, s",
            f"{fmt(b['all_acked_s'])} / {fmt(b['all_posted_s'])}",
        ),
        (
            "acks while filling, p50 / p99 / max, ms",
            f"{fmt(b['fill_ack_p50_ms'])} / {fmt(b['fill_ack_p99_ms'])} / "
            f"{fmt(b['fill_ack_max_ms'])}",
        ),
        (
            "full: task queue ready / unacked (RabbitMQ)",
            f"{b['queue_full']['ready']:,} / {b['queue_full']['unacked']:,}",
        ),
        (
            "full: tasks queued / running in the store",
            f"{b['store_full'].get('queued', 0):,} / {b['store_full'].get('running', 0):,}",
        ),
        (
            "`/aico status` while full, p50 / max, ms",
            f"{fmt(pct(full, 50))} / {fmt(max(full, default=None))} ({len(full)})",
        ),
        (
            "`/aico status` while draining, p50 / max, ms",
            f"{fmt(pct(drain, 50))} / {fmt(max(drain, default=None))} ({len(drain)})",
        ),
        (
            f"drained in, s (Claude at {b['drain_latency_s'] * 1000:.0f} ms)",
            f"{fmt(b['drained_s'])} ({fmt(b['drain_rate_per_s'])} tasks/s)",
        ),
        ("slowest ÷ fastest stretch of the drain (not the first or last)", fmt(b["steadiness"], 2)),
        (
            "CPU ms per task while draining: aico (bot / pm / task / result)",
            f"{fmt(cpu['aico'], 2)} ("
            + " / ".join(fmt(cpu.get(r, 0.0), 2) for r in AICO_ROLES)
            + ")",
        ),
        ("tasks lost / failed / answered or posted twice", f"{b['lost']} / {b['failed']} / "
         f"{b['twice']}"),
    ]  # fmt: skip


def backlog_tables(backlogs: list[dict[str, Any]]) -> list[str]:
    """The summary (a column per store), the drain by stretches, each process's RSS."""
    stores = [b["store"] for b in backlogs]
    summaries = [backlog_rows(b) for b in backlogs]
    title = f"backlog of {backlogs[0]['tasks']:,} tasks"
    rows = [[label] + [s[i][1] for s in summaries] for i, (label, _) in enumerate(summaries[0])]
    lines = markdown_table([title, *stores], rows)
    header = ["tasks drained"]
    header += [f"{store}: {what}" for store in stores for what in ("s", "tasks/s")]
    chunk_rows = []
    for i, chunk in enumerate(backlogs[0]["drain_chunks"]):
        row = [f"{chunk['first']:,} to {chunk['last']:,}"]
        for b in backlogs:
            c = b["drain_chunks"][i] if i < len(b["drain_chunks"]) else None
            row += [fmt(c["seconds"], 2), fmt(c["rate"])] if c else ["", ""]
        chunk_rows.append(row)
    lines += ["", *markdown_table(header, chunk_rows)]
    header = ["RSS over the backlog, MiB"] + [
        f"{store}: {what}" for store in stores for what in ("start", "peak", "end")
    ]
    rss_rows = []
    for role in backlogs[0]["rss_mib"]:
        row = [ROLE_NAMES.get(role, "whole stack" if role == "total" else role)]
        for b in backlogs:
            v = b["rss_mib"].get(role)
            row += [fmt(v[k]) for k in ("start", "peak", "end")] if v else ["", "", ""]
        rss_rows.append(row)
    lines += ["", *markdown_table(header, rss_rows)]
    return lines


# --------------------------------------------------------------------------- the bench


class RssTimeline(threading.Thread):
    """Every TIMELINE_EVERY seconds, each aico process role's summed RSS (children folded)."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(name="rss-timeline", daemon=True)
        self.stack = stack
        self.samples: Samples = []
        self._halt = threading.Event()
        self._t0 = time.perf_counter()
        self._procs: list[tuple[str, psutil.Process]] = []

    def run(self) -> None:
        count = 0
        while True:
            if count % 4 == 0:  # a scan of /proc costs more than a sample
                self._procs = aico_processes(self.stack)
            self.sample()
            count += 1
            if self._halt.wait(TIMELINE_EVERY):
                return

    def sample(self) -> None:
        by_role: dict[str, int] = defaultdict(int)
        for role, proc in self._procs:
            with contextlib.suppress(psutil.Error):
                by_role[fold_role(role)] += proc.memory_info().rss
        self.samples.append((time.perf_counter() - self._t0, dict(by_role)))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sample()  # the end: after everything drained


@dataclass
class ScaleBench(Bench):
    """bench/e2e.py's Bench, with per-stack environment (the store's URL) and, for PostgreSQL,
    the server's CPU beside the broker's."""

    extra_env: dict[str, str] = field(default_factory=dict)
    postgres: Any = None  # the private PostgreSQL server (tests.contract.postgres_node)
    made_databases: list[str] = field(default_factory=list)  # on --db-url, dropped at the end
    curve: list[dict[str, Any]] = field(default_factory=list)

    def settings(self) -> dict[str, str]:
        return super().settings() | self.extra_env

    def _cpu_snapshot(self, stack: Stack) -> dict[int, tuple[str, float]]:
        snap = super()._cpu_snapshot(stack)
        if self.postgres is not None:
            table = process_table()
            snap |= cpu_snapshot([("db", p) for p in broker_processes(self.postgres, table)])
        return snap

    def close(self) -> None:
        for url in self.made_databases:
            try:
                _drop_database(self.args.db_url, url)
            except Exception as exc:
                self.warnings.append(f"cleanup: a database made on --db-url not dropped: {exc!r}")
        if self.postgres is not None:
            try:
                self.postgres.stop()
            except Exception as exc:
                self.warnings.append(f"cleanup: the PostgreSQL server did not stop: {exc!r}")
        super().close()

    # -- the stores

    def store_env(self, store: str) -> dict[str, str]:
        if store == "sqlite":
            return {}
        if self.args.db_url:
            url = _create_database(self.args.db_url)
            self.made_databases.append(url)
            return {"AICO_DB_URL": url}
        if self.postgres is None:
            from tests.contract.postgres_node import PostgresNode

            print("[postgresql] starting a private server", file=sys.stderr, flush=True)
            self.postgres = PostgresNode.in_temp_dir().start()
        return {"AICO_DB_URL": self.postgres.create_database()}

    def new_sampler(self) -> MemorySampler:
        """A memory sampler of its own for the next stack (its peak is that stack's)."""
        if self.sampler is not None:
            self.sampler.stop()
        self.sampler = MemorySampler(full=False)
        self.sampler.start()
        return self.sampler

    # -- the curve

    def curve_point(self, store: str, workers: int) -> dict[str, Any]:
        args = self.args
        assert self.claude is not None
        args.workers = workers
        self.extra_env = self.store_env(store)
        sampler = self.new_sampler()
        capacity = self.capacity
        n_wall = wall_tasks(args.wall_seconds, capacity, args.latency)
        point: dict[str, Any] = {"store": store, "workers": workers, "capacity": capacity}
        with self.stack(f"{store}-{workers}w", args.latency) as stack:
            if workers == args.ack_workers:
                ack = self.batch(stack, "ack", args.ack_count, rate=args.ack_rate)
                point["ack"] = _ack_figures(ack, args.ack_rate)
            self.claude.latency = args.latency
            wall = self.batch(stack, "wall", n_wall)
            self.claude.latency = 0.0
            tput = self.batch(stack, "throughput", args.throughput_tasks)
        ideal = n_wall * args.latency / capacity
        point["wall"] = {
            "tasks": n_wall,
            "wall_s": wall.wall,
            "ideal_s": ideal,
            "wall_over_ideal": wall.wall / ideal if ideal else None,
        }
        point["throughput"] = {
            "tasks": args.throughput_tasks,
            "wall_s": tput.wall,
            "tasks_per_s": args.throughput_tasks / tput.wall,
            "all_acked_s": max(s.sent + s.elapsed for s in tput.sent) - tput.first_sent,
        }
        cpu: dict[str, float] = defaultdict(float)
        for batch in (wall, tput):
            for role, seconds in batch.cpu.items():
                cpu[role] += seconds
        busy, between = wall.busy + tput.busy, wall.between + tput.between
        point["cpu_ms_per_task"] = per_task_cpu(cpu, busy, n_wall + args.throughput_tasks)
        point["machine_busy_pct"] = 100 * busy / between / (os.cpu_count() or 1)
        point["peak_rss_mib"] = sampler.peak["rss"] / MIB
        point["peak_rss_by_process_mib"] = {
            r: v / MIB for r, v in sorted(sampler.peak_by_role.items())
        }
        return point

    def part_curve(self) -> None:
        for workers in self.args.workers_list:  # the stores interleaved: the machine drifts
            for store in self.args.stores:
                started = time.monotonic()
                point = self.curve_point(store, workers)
                self.curve.append(point)
                self.results["curve"] = self.curve
                print(
                    f"[curve {store} {workers}w] wall ÷ ideal "
                    f"{fmt(point['wall']['wall_over_ideal'], 3)}, "
                    f"{fmt(point['throughput']['tasks_per_s'])} tasks/s, "
                    f"{fmt(point['cpu_ms_per_task']['aico'], 2)} ms CPU/task "
                    f"({time.monotonic() - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )

    # -- the backlog

    def part_backlog(self) -> None:
        for store in self.args.backlog_stores:
            started = time.monotonic()
            result = self.backlog(store)
            print(
                f"[backlog {store}] drained {result['tasks']:,} in {fmt(result['drained_s'])} s "
                f"({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    def backlog(self, store: str) -> dict[str, Any]:
        args = self.args
        args.workers = args.backlog_workers
        self.extra_env = self.store_env(store)
        self.extra_env["AICO_CLAUDE_TIMEOUT"] = HELD_CLAUDE_TIMEOUT
        self.new_sampler()
        with self.stack(f"backlog-{store}", 0.0) as stack:
            result = self._backlog(stack)
        result["store"] = store
        self.results.setdefault("backlog", []).append(result)
        problems = [
            f"{result[key]} {what}"
            for key, what in (
                ("failed", "tasks failed"),
                ("twice", "tasks with more than one parent or answer in Slack"),
            )
            if result[key]
        ]
        if problems:
            raise BenchFailure(f"backlog: {'; '.join(problems)}", result.pop("logs", ""))
        result.pop("logs", None)
        return result

    def _backlog(self, stack: Stack) -> dict[str, Any]:
        args, slack, claude, tracker = self.args, self.slack, self.claude, self.tracker
        assert slack is not None and claude is not None
        count, capacity = args.backlog, self.capacity
        gate = threading.Event()
        timeline = RssTimeline(stack)
        timeline.start()
        claude.responder = held_answers(gate)
        try:
            run = uuid.uuid4().hex[:6]
            commands = [
                (f"backlog {run} #{i}: say something", slack.new_response_url(channel=CHANNEL))
                for i in range(count)
            ]
            sent = send_commands(stack.url, commands, args.senders)
            first_sent = min(s.sent for s in sent)
            acked = [s for s in sent if s.status == 200 and s.task_id]
            ids = {s.task_id for s in acked}
            if len(acked) != count or len(ids) != count:
                raise BenchFailure(
                    f"backlog: {count - len(acked)} of {count} commands not acked with a task "
                    f"id, {len(ids)} distinct ids",
                    stack.logs(),
                )
            self._wait_all(stack, ids, tracker.posted, "posted")
            all_posted = max(tracker.posted[i] for i in ids)
            claude.wait_for(lambda c: c.in_flight >= capacity, args.timeout)
            queue_full = self._queue_depth(stack, count)
            store_full = self._store_counts(stack)
            status_full = [self._status(stack) for _ in range(args.status_count)]
            early = sum(i in tracker.shown for i in ids)
            # the release: the held calls answer, and every later call at --drain-latency
            before = self._cpu_snapshot(stack)
            busy_before = machine_busy()
            claude.latency = args.drain_latency
            released = time.perf_counter()
            gate.set()
            status_draining, stop_status = self._status_every(stack, args.status_every)
            try:
                self._wait_all(stack, ids, tracker.shown, "answered")
                drained = max(tracker.shown[i] for i in ids)
                self._wait_all(stack, ids, tracker.finished, "Done")
            finally:
                stop_status()
            after = self._cpu_snapshot(stack)
            busy_after = machine_busy()
            unsettled = self._queues_empty(stack)
            time.sleep(SETTLE_GRACE)
        finally:
            gate.set()
            claude.responder = None
            if timeline.is_alive():
                timeline.stop()
        twice = self._answered_twice(ids)
        chunks = drain_chunks([tracker.shown[i] for i in ids], released, args.drain_step)
        acks = [s.elapsed * 1000 for s in acked]
        cpu = cpu_delta(before, after)
        result: dict[str, Any] = {
            "tasks": count,
            "workers": args.workers,
            "capacity": capacity,
            "acked": len(acked),
            "all_acked_s": max(s.sent + s.elapsed for s in acked) - first_sent,
            "all_posted_s": all_posted - first_sent,
            "fill_ack_p50_ms": pct(acks, 50),
            "fill_ack_p99_ms": pct(acks, 99),
            "fill_ack_max_ms": max(acks),
            "queue_full": queue_full,
            "store_full": store_full,
            "answered_before_release": early,
            "status_full_ms": status_full,
            "status_draining_ms": status_draining,
            "drain_latency_s": args.drain_latency,
            "drained_s": drained - released,
            "drain_rate_per_s": count / (drained - released),
            "drain_chunks": [
                {"first": c.first, "last": c.last, "seconds": c.seconds, "rate": c.rate}
                for c in chunks
            ],
            "steadiness": steadiness(chunks),
            "drain_cpu_ms_per_task": per_task_cpu(cpu, busy_after - busy_before, count),
            "lost": 0,
            "failed": len(ids & tracker.failed),
            "twice": len(twice),
            "twice_examples": twice[:5],
            "queues_not_empty": unsettled,
            "rss_mib": rss_summary(timeline.samples),
            "rss_samples": [[round(t, 2), by_role] for t, by_role in timeline.samples],
        }
        if early:
            self.warnings.append(f"backlog: {early} tasks were answered before the release")
        if unsettled:
            self.warnings.append(f"backlog: queues not empty after the drain: {unsettled}")
        if twice or result["failed"]:
            result["logs"] = stack.logs()
        return result

    def _wait_all(self, stack: Stack, ids: set[str], table: dict[str, float], what: str) -> None:
        """Wait until every id is in `table` (a Tracker table), looking every POLL seconds (the
        Tracker's own wait compares every id at every change: too dear for a large backlog);
        give up once nothing new came for --timeout seconds."""
        left, deadline = -1, 0.0
        while True:
            missing = sum(1 for i in ids if i not in table)
            if not missing:
                return
            if missing != left:
                left, deadline = missing, time.monotonic() + self.args.timeout
            if time.monotonic() > deadline:
                raise BenchFailure(
                    f"backlog: {missing} of {len(ids)} tasks never {what} (nothing new for "
                    f"{self.args.timeout:.0f} s)",
                    stack.logs(),
                )
            time.sleep(POLL)

    def _vhost(self, stack: Stack) -> str:
        return urllib.parse.unquote(stack.env["AICO_AMQP_URL"].rsplit("/", 1)[1])

    def _queue_depth(self, stack: Stack, expected: int, wait: float = 15.0) -> dict[str, int]:
        """The task queue's ready and unacknowledged messages, as RabbitMQ counts them. Its
        counts of a quorum queue lag by a few seconds: read again until they add up to
        `expected` (every task queued, none acked yet), for up to `wait` seconds."""
        assert self.node is not None
        deadline, depth = time.monotonic() + wait, {"ready": 0, "unacked": 0}
        while True:
            listing = self.node.ctl(
                "list_queues", "-p", self._vhost(stack), "name", "messages_ready",
                "messages_unacknowledged",
            )  # fmt: skip
            for line in listing.splitlines():
                parts = line.split("\t")
                if parts[0].strip() == TASKS and len(parts) == 3:
                    depth = {"ready": int(parts[1]), "unacked": int(parts[2])}
            if depth["ready"] + depth["unacked"] >= expected or time.monotonic() > deadline:
                return depth
            time.sleep(0.5)

    def _queues_empty(self, stack: Stack, timeout: float = 30.0) -> dict[str, int]:
        """Wait until the task and result queues hold nothing; what is left when it gives up."""
        assert self.node is not None
        deadline, left = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            counts: dict[str, int] = {}
            listing = self.node.ctl("list_queues", "-p", self._vhost(stack), "name", "messages")
            for line in listing.splitlines():
                name, _, number = line.partition("\t")
                with contextlib.suppress(ValueError):
                    counts[name.strip()] = int(number)
            left = {q: counts[q] for q in (TASKS, RESULTS) if counts.get(q)}
            if not left:
                break
            time.sleep(0.2)
        return left

    def _store_counts(self, stack: Stack) -> dict[str, int]:
        """The tasks by status, read from the stack's store as any aico process reads it."""
        url = stack.env.get("AICO_DB_URL") or f"sqlite:///{stack.env['AICO_DATA_DIR']}/aico.db"
        store = open_store(url)
        try:
            return store.task_counts()
        finally:
            store.close()

    def _status(self, stack: Stack) -> float:
        """`/aico status` as Slack sends it; its response time in ms (it must answer 200)."""
        with SlackSender(stack.url, SIGNING_SECRET) as sender:
            status, body, elapsed = sender.command("status")
        if status != 200 or "blocks" not in body:
            raise BenchFailure(f"backlog: /aico status answered {status}: {body[:200]}")
        return elapsed * 1000

    def _status_every(self, stack: Stack, every: float) -> tuple[list[float], Callable[[], None]]:
        """`/aico status` every `every` seconds from a thread; returns the list its times go
        into and the function that stops it."""
        times: list[float] = []
        halt = threading.Event()
        errors: list[str] = []

        def loop() -> None:
            while not halt.wait(every):
                try:
                    times.append(self._status(stack))
                except Exception as exc:
                    errors.append(repr(exc))

        thread = threading.Thread(target=loop, name="status-while-draining", daemon=True)
        thread.start()

        def stop() -> None:
            halt.set()
            thread.join(30)
            if errors:
                self.warnings.append(f"backlog: /aico status failed while draining: {errors[0]}")

        return times, stop

    def _answered_twice(self, ids: set[str]) -> list[str]:
        """The tasks without exactly one parent message and one reply in its thread."""
        assert self.slack is not None
        parents: dict[str, list[str]] = defaultdict(list)
        for msg in self.slack.messages(CHANNEL):
            match = TASK_IN_BLOCKS.search(str(msg.get("blocks")))
            if match and match[1] in ids:
                parents[match[1]].append(msg["ts"])
        twice = []
        for task_id in ids:
            replies = sum(len(self.slack.replies(CHANNEL, ts)) for ts in parents[task_id])
            if len(parents[task_id]) != 1 or replies != 1:
                twice.append(f"{task_id}: {len(parents[task_id])} parent(s), {replies} reply(ies)")
        return twice

    # -- the whole run

    def summarise_scale(self) -> None:
        self.results["config"] = {
            "cpus": os.cpu_count(),
            "concurrency": self.args.concurrency,
            "latency_s": self.args.latency,
            "senders": self.args.senders,
            "warmup": self.args.warmup,
            "build": build_id(),
        }
        notes = [
            f"curve {p['store']}, {p['workers']} worker(s): other processes used "
            f"{p['cpu_ms_per_task']['other']:.1f} of the machine's "
            f"{p['cpu_ms_per_task']['machine']:.1f} ms CPU per task: its figures are disturbed"
            for p in self.curve
            if p["cpu_ms_per_task"]["other"] > max(0.5, 0.1 * p["cpu_ms_per_task"]["machine"])
        ]
        if notes:
            self.results["notes"] = notes
        if self.warnings:
            self.results["warnings"] = [w.splitlines()[0] for w in self.warnings]


def held_answers(gate: threading.Event) -> Callable[[dict[str, Any]], str]:
    """FakeClaude's responder that holds every call until `gate` is set, then answers as the
    fake does by default ("Answer to: <the prompt>")."""

    def respond(body: dict[str, Any]) -> str:
        gate.wait()
        return f"Answer to: {_prompt(body)}"

    return respond


def _ack_figures(batch: Batch, rate: float) -> dict[str, Any]:
    acks = [s.elapsed * 1000 for s in batch.sent]
    return {
        "commands": len(batch.sent),
        "rate_per_s": rate,
        "p50_ms": pct(acks, 50),
        "p99_ms": pct(acks, 99),
        "max_ms": max(acks),
        "send_late_p99_ms": pct([(s.sent - s.due) * 1000 for s in batch.sent], 99),
    }


def _create_database(server_url: str) -> str:
    """A fresh database on the server of `server_url`; returns its URL."""
    import psycopg

    name = f"aico_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def _drop_database(server_url: str, url: str) -> None:
    import psycopg

    name = urllib.parse.urlsplit(url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    cli = argparse.ArgumentParser(prog="python -m bench.scale", description=doc.split("\n")[0])
    cli.add_argument("--parts", default=",".join(PARTS), help="comma list of curve,backlog")
    cli.add_argument("--workers", default="1,2,4", help="task worker counts of the curve")
    cli.add_argument("--stores", default=",".join(STORES), help="sqlite,postgresql")
    cli.add_argument("--db-url", default="", help="a PostgreSQL server to make databases on")
    cli.add_argument("--concurrency", type=int, default=8, help="AICO_TASK_CONCURRENCY")
    cli.add_argument("--latency", type=float, default=0.2, help="Claude's latency, seconds")
    cli.add_argument("--wall-seconds", type=float, help="the ideal N·L/C of the wall run (3)")
    cli.add_argument("--throughput-tasks", type=int, help="tasks of the 0 ms burst (1000)")
    cli.add_argument("--ack-rate", type=float, default=50.0, help="commands a second")
    cli.add_argument("--ack-count", type=int, help="commands of the ack run (200)")
    cli.add_argument("--ack-workers", type=int, default=1, help="the pool size the acks run at")
    cli.add_argument("--backlog", type=int, help="tasks of the backlog (10000)")
    cli.add_argument("--backlog-workers", type=int, default=1, help="task workers then")
    cli.add_argument(
        "--backlog-stores", default=",".join(STORES), help="the stores the backlog runs on"
    )
    cli.add_argument("--drain-latency", type=float, default=0.0, help="Claude while draining")
    cli.add_argument("--drain-step", type=int, help="tasks per stretch of the drain (1000)")
    cli.add_argument("--status-count", type=int, help="`/aico status` while full (5)")
    cli.add_argument("--status-every", type=float, default=1.0, help="... while draining, s")
    cli.add_argument("--senders", type=int, default=8, help="keep-alive sender connections")
    cli.add_argument("--warmup", type=int, help="unmeasured tasks per stack (16)")
    cli.add_argument("--quick", action="store_true", help="a smoke run: " + str(QUICK))
    cli.add_argument("--json", type=Path, help="also write every figure to this file")
    cli.add_argument("--timeout", type=float, default=60.0, help="give up after this many s")
    cli.add_argument("--log-level", default="WARNING", help="AICO_LOG_LEVEL of the stacks")
    cli.add_argument("--keep", action="store_true", help="keep each stack's logs and data")
    args = cli.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    try:
        args.workers_list = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        cli.error("--workers takes a comma list of numbers, e.g. 1,2,4")
    if unknown := set(args.parts) - set(PARTS):
        cli.error(f"unknown part(s) {sorted(unknown)}; choose from {','.join(PARTS)}")
    args.backlog_stores = [s.strip() for s in args.backlog_stores.split(",") if s.strip()]
    if unknown := (set(args.stores) | set(args.backlog_stores)) - set(STORES):
        cli.error(f"unknown store(s) {sorted(unknown)}; choose from {','.join(STORES)}")
    # what bench/e2e.py's Bench reads of its arguments
    args.workers = args.workers_list[0] if args.workers_list else 1
    args.amqp_url = ""  # a private node: the backlog reads its queues with rabbitmqctl
    args.rss_only = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = ScaleBench(args)
    failure: Exception | None = None
    try:
        bench.start()
        for part in args.parts:
            getattr(bench, f"part_{part}")()
    except Exception as exc:  # the stack (or a server) failed: report what was measured
        failure = exc
        if not isinstance(exc, BenchFailure):
            traceback.print_exc()
    finally:
        bench.close()
    bench.summarise_scale()
    print(report(bench.results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(bench.results, default=str) + "\n")
    for warning in bench.warnings:
        print(f"\n{warning}", file=sys.stderr)
    if failure is not None:
        print(f"\nFAILED: {failure}\n\n{getattr(failure, 'logs', '')}", file=sys.stderr)
        return 1
    return 1 if bench.warnings else 0


if __name__ == "__main__":
    sys.exit(main())
