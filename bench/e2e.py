"""End-to-end benchmark of aico: the real Procfile processes against RabbitMQ and the fakes.

    .venv/bin/python -m bench.e2e [--quick]
                                  [--phases wall,throughput,ack,overhead,streaming,recovery]
                                  [--stream-tasks 20] [--stream-latency 3]
                                  [--tasks 200] [--throughput-tasks 1000] [--latency 0.2]
                                  [--workers 1] [--concurrency 8] [--ack-rate 50]
                                  [--ack-count 200] [--recovery-rate 20] [--outage 10]
                                  [--amqp-url URL] [--json PATH]

It starts a private RabbitMQ node (or uses --amqp-url), FakeSlack and FakeClaude in this process
and, for every phase, a fresh stack from the Procfile (bot in HTTP mode, pm with its task
worker(s), result worker) on a fresh vhost and a fresh data dir. Each stack is warmed up with a
few tasks that are not measured. Every task sent is accounted for: its ack, its parent message in
C0CHAN1, its answer in the parent's thread and the parent saying Done. The figures:

wall ÷ ideal   N tasks (--tasks) sent at once over 8 keep-alive connections, Claude answering in
               L seconds (--latency), C = workers x AICO_TASK_CONCURRENCY calls in flight: the
               time from the first slash command sent to the last answer posted in a thread,
               divided by the ideal N·L/C. Also in tasks/s, with the mean number of Claude calls
               in flight and the time a Claude slot spent not waiting for Claude, per task.
throughput     the same with Claude answering at once (--throughput-tasks): tasks per second from
               the first command sent to the last answer posted; beside it, when the last command
               was acked and the last parent message posted (how far the intake lags).
ack p50/p99    slash commands at R per second (--ack-rate, open loop, --ack-count of them), Claude
               at L: the HTTP response time of the signed slash command, i.e. the ack.
overhead       commands at half the capacity (C/L/2 per second, --overhead-count of them): per
               task, (answer posted in its thread) - (command sent) - (the time FakeClaude spent
               on that task's call, from the request's arrival to its answer). A table splits
               that time into stages (ack, parent posted, Claude called, answer posted, Done).
recovery       how long tasks take to flow again after a broker outage. Commands at R per second
               (--recovery-rate, open loop), Claude at L; after 2 s the broker app is stopped
               (rabbitmqctl stop_app) for D seconds (--outage, from stop_app returned to
               start_app called) while the commands keep coming (the bot acks them and keeps them
               in its store), then started again; "back" is when start_app returned (the node
               answers AMQP). first: from back to the first task answer shown in Slack after
               start_app was called (the answer posted, or the "working on it" reply turned into
               it). Bot, task worker and result worker must all be reconnected for an answer to
               show, so it is mostly the latest of their capped, jittered reconnection backoffs;
               negative if they got through before start_app returned. drained: from back to the
               last answer of every task sent before or during the outage, and its ratio to the
               ideal B·L/C, B being the backlog (the tasks answered after start_app was called).
               (drained - first) ÷ ideal leaves the backoff out; it falls below 1 when tasks were
               worked on before the first answer showed (e.g. the result worker back last). Once
               every task is Done and the task and result queues are empty, each task must have
               exactly one parent message and one reply in its thread: a task lost, failed or
               answered twice fails the run. Also shown: the tasks sent before / during the
               outage, how long stop_app and start_app took, the acks' p99 during the outage,
               how long the stack then took to stop (its workers drain, up to 60 s each) and
               each AMQP link's reconnection tries (how many, and the wait before the last one,
               from the WARNING lines of the logs). Needs the private node: left out of the
               default phases with --amqp-url. Runs last (the other phases want no outage behind
               them); ~30 s by default, ~20 s with --quick (a 5 s outage).
streaming      tasks at 0.5 a second (--stream-tasks), Claude writing 80 words in --stream-latency
               seconds (3: its first token after 1.5 s): from Claude's first token (the fake's
               first text delta, latency / 2 after the call arrived) to the first text of that
               task's answer visible in the thread (the stream's start, or a glimpse where it
               was not streamed), p50 / p95; how many answers streamed natively; and the Slack
               Web API calls aico made per task (parent post and updates, stream, session and
               status calls, all of it), with a breakdown by method.
CPU per task   user+system CPU of every aico process (bot, pm, the task workers, result worker
               and all their children) during the wall and throughput phases (first command sent
               to last parent Done) ÷ their tasks, with a table by process. The RabbitMQ node's
               CPU per task is shown beside it, and so are this process's (the fakes and the
               senders) and the rest of the machine's, none of them counted: on a shared machine
               a NOTE says when other processes disturbed a phase.
peak memory    the peak of the summed RSS (and USS/PSS) of the aico processes, sampled every
               0.2 s in a background thread across all phases (after each stack is up), the
               recovery phase's backlog included.

The targets and the reference build's figures are printed beside the measured ones. No figure
is checked against its target: this is a measurement tool. It exits 1 only when the stack fails
(a command not acked, a task not answered or not finished, a failed task, a process that exits
non-zero), after printing what it measured and the tail of the process logs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from aico.fakes.anthropic import FakeClaude
from aico.fakes.signing import SlackSender
from aico.fakes.slack import FakeSlack
from aico.rabbit_node import RabbitNode
from core.domain.messages import RESULTS, TASKS
from tests.integration.stack import BOT_TOKEN, SIGNING_SECRET, Stack, fresh_vhost

CHANNEL = "C0CHAN1"
PHASES = ("wall", "throughput", "ack", "overhead", "streaming", "recovery")
CPU_PHASES = ("wall", "throughput")
TASK_IN_BLOCKS = re.compile(r"Task `([0-9a-z]{10})`")
DONE_BADGE = ":white_check_mark: Done"
WORKING = ":gear:"  # how a task's result message starts while Claude works (not an outcome)
FAILED_BADGE = ":x: Failed"
SAMPLE_EVERY = 0.2  # seconds between memory samples
REFRESH_EVERY = 5  # samples between two look-ups of the stack's processes
SLOW_SAMPLE = 0.025  # CPU seconds: when the median sample costs more, RSS only
MIB = 1024 * 1024
PACED_SENDERS = 16  # connections of the paced phases (ack, overhead, recovery), at least
RECOVERY_LEAD = 2.0  # seconds of paced tasks before the broker is stopped
RECOVERY_SPARE = 60.0  # seconds of commands prepared beyond lead + outage (stop_app takes time)
STREAM_RATE = 0.5  # tasks a second in the streaming phase: within Slack's ~20 streams a minute
STREAM_WORDS = 80  # words of each answer in the streaming phase
SETTLE_GRACE = 1.0  # seconds, once the queues are empty, for a late duplicate to show up
RETRYING = re.compile(r"(\S+): broker unavailable \(.*\); retrying in ([0-9.]+)s")
ROLES = ("bot", "pm", "task", "result")
NOT_AICO = ("broker", "harness", "other", "machine")  # CPU shown beside the aico processes
FULL = {
    "tasks": 200,
    "throughput_tasks": 1000,
    "ack_count": 200,
    "overhead_count": 200,
    "warmup": 16,
    "outage": 10.0,
    "stream_tasks": 20,
}
QUICK = {
    "tasks": 40,
    "throughput_tasks": 100,
    "ack_count": 40,
    "overhead_count": 40,
    "warmup": 8,
    "outage": 5.0,
    "stream_tasks": 8,
}

TARGETS = {
    "wall_over_ideal": "≤ 1.03",
    "throughput": "≥ 300",
    "ack": "p99 ≤ 10",
    "overhead": "≤ 8 / 13",
    "cpu_per_task": "≤ 6",
    "peak_rss": "≤ 250",
    "first_text": "p50 ≤ 1000",
}
REFERENCE = {
    "wall_over_ideal": "1.065",
    "throughput": "203",
    "ack": "12 / 14",
    "overhead": "9.3 / 13.4",
    "cpu_per_task": "6.8",
    "peak_rss": "225",
}


def tear_down(steps: Sequence[Callable[[], object]], dirs: list[Path], warnings: list[str]) -> None:
    """Run every step (stopping what a bench started) even if one fails, saying which failed in
    `warnings`, then remove `dirs`."""
    for step in steps:
        try:
            step()
        except Exception as exc:
            warnings.append(f"cleanup: {getattr(step, '__qualname__', step)} failed: {exc!r}")
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)


class BenchFailure(Exception):
    """The stack did not do its job; `logs` is the tail of its process logs."""

    def __init__(self, message: str, logs: str = "") -> None:
        super().__init__(message)
        self.logs = logs


# --------------------------------------------------------------------------- what Slack shows


class Tracker:
    """FakeSlack's changes, timed: parent posted, answer posted in its thread, parent Done.

    `on_change` runs in the fake's request threads, as each change is recorded.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._task_of: dict[str, str] = {}  # parent ts -> task id
        self.posted: dict[str, float] = {}  # task id -> perf_counter when its parent was posted
        self.answered: dict[str, float] = {}  # ... when the first reply was posted in its thread
        self.finished: dict[str, float] = {}  # ... when its parent said Done (or Failed)
        # ... when its thread first showed the outcome (answer or failure), posted or updated
        # into the result message: unlike `answered`, never a "working on it" placeholder
        self.shown: dict[str, float] = {}
        self.parents: collections.Counter[str] = collections.Counter()  # parent posts per task
        self._reply_of: dict[str, str] = {}  # reply ts -> task id
        self.failed: set[str] = set()
        self.orphans = 0  # replies in threads of no parent we saw

    def reset(self) -> None:
        with self._cond:
            for table in (
                self._task_of,
                self.posted,
                self.answered,
                self.finished,
                self.shown,
                self.parents,
                self._reply_of,
            ):
                table.clear()
            self.failed.clear()
            self.orphans = 0

    def parents_of(self, task_id: str) -> list[str]:
        """The ts of every parent message posted for the task (one, unless it was posted twice)."""
        with self._cond:
            return [ts for ts, task in self._task_of.items() if task == task_id]

    def on_change(self, kind: str, channel: str, msg: dict) -> None:
        now = time.perf_counter()
        if channel != CHANNEL:
            return
        thread_ts = msg.get("thread_ts")
        if kind == "posted" and thread_ts and thread_ts != msg["ts"]:
            self._on_reply(thread_ts, msg, now)
        elif kind == "posted":
            match = TASK_IN_BLOCKS.search(str(msg.get("blocks")))
            if match:
                with self._cond:
                    self._task_of[msg["ts"]] = match[1]
                    self.posted[match[1]] = now
                    self.parents[match[1]] += 1
        elif kind == "updated" and thread_ts and thread_ts != msg["ts"]:
            self._on_reply_update(msg, now)
        elif kind == "updated":
            self._on_update(msg, now)

    def _on_reply(self, thread_ts: str, msg: dict, now: float) -> None:
        with self._cond:
            task_id = self._task_of.get(thread_ts)
            if task_id is None:
                self.orphans += 1
                return
            self._reply_of[msg["ts"]] = task_id
            self._on_shown(task_id, msg, now)
            if task_id not in self.answered:
                self.answered[task_id] = now
                if str(msg.get("text", "")).startswith(":x:"):
                    self.failed.add(task_id)
                self._cond.notify_all()

    def _on_reply_update(self, msg: dict, now: float) -> None:
        with self._cond:
            task_id = self._reply_of.get(msg["ts"])
            if task_id is not None:
                self._on_shown(task_id, msg, now)

    def _on_shown(self, task_id: str, msg: dict, now: float) -> None:
        """(Holding the lock.) A result message posted or updated: is it the outcome yet?"""
        if task_id not in self.shown and not str(msg.get("text", "")).startswith(WORKING):
            self.shown[task_id] = now
            self._cond.notify_all()

    def _on_update(self, msg: dict, now: float) -> None:
        blocks = str(msg.get("blocks"))
        failed = FAILED_BADGE in blocks
        if not failed and DONE_BADGE not in blocks:
            return
        with self._cond:
            task_id = self._task_of.get(msg["ts"])
            if task_id is not None and task_id not in self.finished:
                self.finished[task_id] = now
                if failed:
                    self.failed.add(task_id)
                self._cond.notify_all()

    def wait(self, ids: set[str], table: dict[str, float], stall: float) -> set[str]:
        """Wait until every id is in `table`; give up once nothing new came for `stall` seconds.

        Returns the ids still missing (empty when all are there).
        """
        with self._cond:
            left, deadline = -1, 0.0
            while True:
                missing = ids - table.keys()
                if not missing:
                    return missing
                if len(missing) != left:
                    left, deadline = len(missing), time.monotonic() + stall
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return missing
                self._cond.wait(remaining)


class ClaudeClock:
    """When FakeClaude started and finished each call, by prompt (every prompt is unique).

    A call is timed from its arrival (`Call.at`) to the moment the fake records it, just before
    the last byte of its answer is sent; retries of one prompt add up.
    """

    def __init__(self, claude: FakeClaude) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._lock = threading.Lock()
        inner = getattr(claude, "_request_finished", None)
        self.exact = inner is not None
        if inner is None:
            return

        def finished(call: Any) -> None:
            end = time.perf_counter()
            start = end - (time.monotonic() - call.at)
            with self._lock:
                self.spans[_prompt(call.body)].append((start, end))
            inner(call)

        claude._request_finished = finished  # type: ignore[method-assign]

    def reset(self) -> None:
        with self._lock:
            self.spans.clear()

    def of(self, prompt: str) -> list[tuple[float, float]]:
        with self._lock:
            return list(self.spans.get(prompt, []))


def _prompt(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    content = users[-1].get("content", "") if users else ""
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))
    return str(content)


# --------------------------------------------------------------------------- sending commands


@dataclass
class Sent:
    prompt: str
    due: float  # when it was meant to go (perf_counter)
    sent: float  # when it went
    elapsed: float = 0.0  # HTTP response time of the slash command
    status: int = 0
    task_id: str = ""
    error: str = ""


def send_commands(
    url: str,
    commands: list[tuple[str, str]],
    senders: int,
    rate: float | None = None,
    stop: threading.Event | None = None,
    connect: Callable[[str, str], SlackSender] = SlackSender,
) -> list[Sent]:
    """`/aico task <prompt>` for every (prompt, response_url), from `senders` threads each with
    its own keep-alive connection: as fast as they go, or the i-th at t0 + i/rate (open loop).
    Once `stop` is set, no more commands go (those not sent are left out of the result).
    `connect(url, secret)` opens a sender's connection (a SlackSender, or one that counts)."""
    results: list[Sent | None] = [None] * len(commands)
    indexes = itertools.count()
    go = threading.Event()
    t0 = 0.0

    def sender_thread() -> None:
        with connect(url, SIGNING_SECRET) as sender:
            go.wait()
            while (i := next(indexes)) < len(commands):
                due = t0 + i / rate if rate else t0
                if (delay := due - time.perf_counter()) > 0:
                    time.sleep(delay)
                if stop is not None and stop.is_set():
                    break
                prompt, response_url = commands[i]
                sent = Sent(prompt, due, time.perf_counter())
                try:
                    sent.status, body, sent.elapsed = sender.command(
                        f"task {prompt}", response_url=response_url
                    )
                    sent.task_id = _task_id(body)
                except Exception as exc:
                    sent.error = repr(exc)
                results[i] = sent

    threads = [
        threading.Thread(target=sender_thread, name=f"sender{n}", daemon=True)
        for n in range(max(1, senders))
    ]
    for thread in threads:
        thread.start()
    t0 = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    return [s for s in results if s is not None]


def _task_id(ack_body: str) -> str:
    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
        return json.loads(ack_body)["text"].split("`")[1]
    return ""


# --------------------------------------------------------------------------- processes


ProcessTable = tuple[dict[int, psutil.Process], dict[int, list[int]]]


def process_table() -> ProcessTable:
    """Every process on the machine by pid, and the children of each, in one scan of /proc."""
    by_pid: dict[int, psutil.Process] = {}
    children: dict[int, list[int]] = defaultdict(list)
    for proc in psutil.process_iter(["ppid"]):
        by_pid[proc.pid] = proc
        children[proc.info["ppid"]].append(proc.pid)
    return by_pid, children


def descendants(pid: int, table: ProcessTable) -> list[psutil.Process]:
    """The children of `pid`, their children and so on (what children(recursive=True) gives)."""
    by_pid, children = table
    found, todo = [], list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        if child in by_pid:
            found.append(by_pid[child])
        todo += children.get(child, ())
    return found


def aico_processes(
    stack: Stack, table: ProcessTable | None = None
) -> list[tuple[str, psutil.Process]]:
    """Every process of the stack with its role: bot, pm, task (pm's children), result."""
    table = table or process_table()
    found: list[tuple[str, psutil.Process]] = []
    for name, popen in stack.processes.processes.items():
        root = table[0].get(popen.pid)
        if root is None:
            continue
        found.append((name, root))
        role = "task" if name == "pm" else f"{name}+child"
        found += [(role, child) for child in descendants(popen.pid, table)]
    return found


def broker_processes(
    node: RabbitNode | None, table: ProcessTable | None = None
) -> list[psutil.Process]:
    """The RabbitMQ node's start script and its children (beam.smp, erl_child_setup...)."""
    popen = getattr(node, "_process", None) if node else None
    if popen is None:
        return []
    table = table or process_table()
    root = table[0].get(popen.pid)
    return [root, *descendants(popen.pid, table)] if root else []


CpuSnapshot = dict[int, tuple[str, float]]


def cpu_snapshot(procs: list[tuple[str, psutil.Process]]) -> CpuSnapshot:
    snap: CpuSnapshot = {}
    for role, proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            snap[proc.pid] = (role, times.user + times.system)
    return snap


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds by role between two snapshots (a process born in between counts whole)."""
    by_role: dict[str, float] = defaultdict(float)
    for pid, (role, cpu) in after.items():
        by_role[role] += cpu - before.get(pid, (role, 0.0))[1]
    return dict(by_role)


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle, so far."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class MemorySampler(threading.Thread):
    """Every 0.2 s, the summed RSS (and USS/PSS) of the current stack's aico processes."""

    def __init__(self, full: bool) -> None:
        super().__init__(name="memory-sampler", daemon=True)
        self.full = full
        self.stack: Stack | None = None
        self.samples = 0
        self.peak = {"rss": 0, "uss": 0, "pss": 0}
        self.peak_by_role: dict[str, int] = defaultdict(int)
        self.peak_workers = 0
        self.slowest = 0.0
        self.cost = 0.0  # CPU seconds spent sampling
        self._halt = threading.Event()
        self._procs: list[tuple[str, psutil.Process]] = []
        self._procs_of: Stack | None = None
        self._procs_age = 0
        self._costs: collections.deque[float] = collections.deque(maxlen=25)

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_EVERY):
            stack = self.stack
            if stack is not None:
                self.sample(stack)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def sample(self, stack: Stack) -> None:
        started = time.thread_time()  # this thread's CPU: waiting for the GIL is not its cost
        total = {"rss": 0, "uss": 0, "pss": 0}
        by_role: dict[str, int] = defaultdict(int)
        procs = self._processes(stack)
        for role, proc in procs:
            try:
                info = proc.memory_full_info() if self.full else proc.memory_info()
            except psutil.Error:
                continue
            total["rss"] += info.rss
            by_role[role] += info.rss
            if self.full:
                total["uss"] += info.uss
                total["pss"] += info.pss
        self.samples += 1
        if total["rss"] > self.peak["rss"]:
            self.peak_workers = sum(role == "task" for role, _ in procs)
        for key, value in total.items():
            self.peak[key] = max(self.peak[key], value)
        for role, value in by_role.items():
            self.peak_by_role[role] = max(self.peak_by_role[role], value)
        cost = time.thread_time() - started
        self.slowest = max(self.slowest, cost)
        self.cost += cost
        self._costs.append(cost)
        if self.full and len(self._costs) >= 10 and statistics.median(self._costs) > SLOW_SAMPLE:
            self.full = False  # too dear to sample every 0.2 s: RSS only from now on
            self.peak["uss"] = self.peak["pss"] = 0

    def _processes(self, stack: Stack) -> list[tuple[str, psutil.Process]]:
        """The stack's processes, looked up again every REFRESH_EVERY samples (a scan of /proc
        costs more than a sample)."""
        self._procs_age += 1
        if stack is not self._procs_of or self._procs_age >= REFRESH_EVERY:
            self._procs, self._procs_of, self._procs_age = aico_processes(stack), stack, 0
        return self._procs


# --------------------------------------------------------------------------- the bench


@dataclass
class Batch:
    """One measured burst or paced run of tasks."""

    sent: list[Sent]
    answered: dict[str, float]  # task id -> answer posted
    posted: dict[str, float]  # task id -> parent posted
    finished: dict[str, float]  # task id -> parent Done
    cpu: dict[str, float]  # role -> CPU seconds over the window
    window: float  # first command sent -> last parent Done, seconds
    busy: float  # the machine's busy CPU seconds between the two CPU snapshots
    between: float  # seconds between the two CPU snapshots (a little more than the window)

    @property
    def first_sent(self) -> float:
        return min(s.sent for s in self.sent)

    @property
    def wall(self) -> float:
        """First command sent -> last answer posted."""
        return max(self.answered.values()) - self.first_sent


@dataclass
class Bench:
    args: argparse.Namespace
    node: RabbitNode | None = None
    slack: FakeSlack | None = None
    claude: FakeClaude | None = None
    tracker: Tracker = field(default_factory=Tracker)
    clock: ClaudeClock | None = None
    sampler: MemorySampler | None = None
    results: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    _dirs: list[Path] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        return self.args.workers * self.args.concurrency

    def start(self) -> None:
        if not self.args.amqp_url:
            base = Path(tempfile.mkdtemp(prefix="aico-bench-rabbit-"))
            self._dirs.append(base)
            self.node = RabbitNode(base)
            self.node.start()
        self.slack = FakeSlack(bot_token=BOT_TOKEN).start()
        self.slack.on_change.append(self.tracker.on_change)
        self.claude = FakeClaude(latency=self.args.latency).start()
        self.clock = ClaudeClock(self.claude)
        self.sampler = MemorySampler(full=not self.args.rss_only)
        self.sampler.start()

    def close(self) -> None:
        """Stop everything this bench started; each step runs even if another one fails."""
        steps = [self.sampler.stop] if self.sampler else []
        steps += [fake.stop for fake in (self.claude, self.slack) if fake is not None]
        steps += [self.node.stop] if self.node else []
        tear_down(steps, self._dirs, self.warnings)

    # -- one stack per phase

    @contextlib.contextmanager
    def stack(self, label: str, latency: float) -> Iterator[Stack]:
        assert self.slack is not None and self.claude is not None and self.clock is not None
        self.slack.reset()
        self.tracker.reset()
        self.clock.reset()
        self.claude.latency = latency
        workdir = Path(tempfile.mkdtemp(prefix=f"aico-bench-{label}-"))
        amqp_url = self.args.amqp_url or fresh_vhost(self.node)  # type: ignore[arg-type]
        stack = Stack(workdir, amqp_url, self.slack, self.claude, **self.settings())
        try:
            stack.start(timeout=60)
            self._wait_for_workers(stack)
            assert self.sampler is not None
            self.sampler.stack = stack
            if self.args.warmup:
                self.batch(stack, f"{label}-warmup", self.args.warmup)
            yield stack
        finally:
            if self.sampler is not None:
                self.sampler.stack = None
            codes = stack.stop()
            bad = {name: code for name, code in codes.items() if code != 0}
            if bad:
                self.warnings.append(f"{label}: processes exited {bad}\n{stack.logs()}")
            if self.args.keep:
                print(f"[{label}] logs kept in {workdir / 'logs'}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    def settings(self) -> dict[str, str]:
        return aico_settings(self.args.workers, self.args.concurrency, self.args.log_level)

    def _wait_for_workers(self, stack: Stack, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = [p for role, p in aico_processes(stack) if role == "task"]
            if len(workers) >= self.args.workers:
                return
            time.sleep(0.1)
        raise BenchFailure(f"pm did not start {self.args.workers} task worker(s)", stack.logs())

    def _cpu_snapshot(self, stack: Stack) -> CpuSnapshot:
        table = process_table()
        procs = aico_processes(stack, table)
        procs += [("broker", p) for p in broker_processes(self.node, table)]
        procs.append(("harness", psutil.Process()))
        return cpu_snapshot(procs)

    def batch(self, stack: Stack, label: str, count: int, rate: float | None = None) -> Batch:
        """Send `count` tasks and wait until every one is answered and its parent says Done."""
        assert self.slack is not None
        run = uuid.uuid4().hex[:6]
        commands = [
            (f"{label} {run} #{i}: say something", self.slack.new_response_url(channel=CHANNEL))
            for i in range(count)
        ]
        before, busy_before, t_before = self._cpu_snapshot(stack), machine_busy(), time.monotonic()
        # paced runs get more connections, so that slow acks do not hold the next commands back
        senders = self.args.senders if rate is None else max(PACED_SENDERS, self.args.senders)
        sent = send_commands(stack.url, commands, senders, rate)
        bad = [s for s in sent if s.status != 200 or not s.task_id]
        if bad or len(sent) != count:
            raise BenchFailure(
                f"{label}: {len(bad) + count - len(sent)} of {count} slash commands were not "
                f"acked with a task id, e.g. {bad[:1]}",
                stack.logs(),
            )
        ids = {s.task_id for s in sent}
        if len(ids) != count:
            raise BenchFailure(f"{label}: {count} commands acked with {len(ids)} task ids")
        for table, what in ((self.tracker.answered, "answered"), (self.tracker.finished, "Done")):
            missing = self.tracker.wait(ids, table, self.args.timeout)
            if missing:
                raise BenchFailure(
                    f"{label}: {len(missing)} of {count} tasks never {what} (nothing new for "
                    f"{self.args.timeout:.0f} s; {len(ids - self.tracker.posted.keys())} without "
                    f"a parent message), e.g. {sorted(missing)[:3]}",
                    stack.logs(),
                )
        after, busy_after, t_after = self._cpu_snapshot(stack), machine_busy(), time.monotonic()
        failed = ids & self.tracker.failed
        if failed:
            raise BenchFailure(f"{label}: {len(failed)} of {count} tasks failed", stack.logs())
        batch = Batch(
            sent=sent,
            answered={i: self.tracker.answered[i] for i in ids},
            posted={i: self.tracker.posted[i] for i in ids},
            finished={i: self.tracker.finished[i] for i in ids},
            cpu=cpu_delta(before, after),
            window=0.0,
            busy=busy_after - busy_before,
            between=t_after - t_before,
        )
        batch.window = max(batch.finished.values()) - batch.first_sent
        if self.tracker.orphans:
            self.warnings.append(f"{label}: {self.tracker.orphans} replies in unknown threads")
        return batch

    # -- the phases

    def run(self, phase: str) -> None:
        started = time.monotonic()
        getattr(self, f"phase_{phase}")()
        took = time.monotonic() - started
        print(f"[{phase}] done in {took:.1f} s", file=sys.stderr, flush=True)

    def _burst(self, name: str, count: int, latency: float) -> dict[str, Any]:
        with self.stack(name, latency) as stack:
            batch = self.batch(stack, name, count)
        result = {
            "tasks": count,
            "latency_s": latency,
            "wall_s": batch.wall,
            "tasks_per_s": count / batch.wall,
            # how far the intake had got: every command acked, every parent posted
            "all_acked_s": max(s.sent + s.elapsed for s in batch.sent) - batch.first_sent,
            "all_posted_s": max(batch.posted.values()) - batch.first_sent,
        }
        result.update(_cpu_figures(batch, count))
        assert self.clock is not None
        if self.clock.exact:
            claude = sum(end - start for s in batch.sent for start, end in self.clock.of(s.prompt))
            result["claude_in_flight_mean"] = claude / batch.wall
            # the time a Claude slot spent not waiting for Claude, per task
            result["slot_idle_ms_per_task"] = (self.capacity * batch.wall - claude) / count * 1000
        return result

    def phase_wall(self) -> None:
        args = self.args
        result = self._burst("wall", args.tasks, args.latency)
        ideal = args.tasks * args.latency / self.capacity
        result.update(ideal_s=ideal, wall_over_ideal=result["wall_s"] / ideal if ideal else None)
        self.results["wall"] = result

    def phase_throughput(self) -> None:
        self.results["throughput"] = self._burst("throughput", self.args.throughput_tasks, 0.0)

    def phase_ack(self) -> None:
        args = self.args
        with self.stack("ack", args.latency) as stack:
            batch = self.batch(stack, "ack", args.ack_count, rate=args.ack_rate)
        acks = [s.elapsed * 1000 for s in batch.sent]
        late = [(s.sent - s.due) * 1000 for s in batch.sent]
        self.results["ack"] = {
            "commands": args.ack_count,
            "rate_per_s": args.ack_rate,
            "p50_ms": pct(acks, 50),
            "p90_ms": pct(acks, 90),
            "p99_ms": pct(acks, 99),
            "max_ms": max(acks),
            "send_late_p99_ms": pct(late, 99),
        }

    def phase_overhead(self) -> None:
        args = self.args
        assert self.clock is not None
        rate = self.capacity / args.latency / 2 if args.latency > 0 else args.ack_rate
        with self.stack("overhead", args.latency) as stack:
            batch = self.batch(stack, "overhead", args.overhead_count, rate=rate)
        stages: dict[str, list[float]] = defaultdict(list)
        for s in batch.sent:
            spans = self.clock.of(s.prompt) if self.clock.exact else []
            claude = sum(end - start for start, end in spans) if spans else args.latency
            answered = batch.answered[s.task_id]
            stages["overhead"].append(answered - s.sent - claude)
            stages["total"].append(answered - s.sent)
            stages["ack"].append(s.elapsed)
            stages["to_parent"].append(batch.posted[s.task_id] - s.sent)
            stages["claude"].append(claude)
            stages["answer_to_done"].append(batch.finished[s.task_id] - answered)
            if spans:
                stages["parent_to_claude"].append(spans[0][0] - batch.posted[s.task_id])
                stages["claude_to_answer"].append(answered - spans[-1][1])
        self.results["overhead"] = {
            "tasks": args.overhead_count,
            "rate_per_s": rate,
            "claude_timed": "per call" if self.clock.exact else f"fixed {args.latency} s",
            "p50_ms": pct(stages["overhead"], 50) * 1000,
            "p99_ms": pct(stages["overhead"], 99) * 1000,
            "stages_ms": {
                name: {"p50": pct(values, 50) * 1000, "p99": pct(values, 99) * 1000}
                for name, values in stages.items()
                if values
            },
        }

    def phase_streaming(self) -> None:
        """Paced tasks whose answers Claude writes slowly enough to stream: the time from
        Claude's first token to the first text of the answer visible in Slack, and the Slack
        Web API calls made per task, by method."""
        args, slack, claude = self.args, self.slack, self.claude
        assert slack is not None and claude is not None and self.clock is not None
        latency = args.stream_latency
        try:  # warmed up with instant answers, which use none of Slack's budget of streams
            with self.stack("streaming", 0.0) as stack:
                claude.latency = latency
                claude.responder = lambda body: " ".join(f"word{i}" for i in range(STREAM_WORDS))
                self.tracker.reset()  # the warm-up's tasks are not measured
                before = len(slack.calls)
                batch = self.batch(stack, "streaming", args.stream_tasks, rate=STREAM_RATE)
                calls = [c.method for c in slack.calls[before:]]
                streams = slack.streams(CHANNEL)
        finally:
            claude.responder = None
        first_text = []
        for s in batch.sent:
            spans = self.clock.of(s.prompt)
            shown = self.tracker.shown.get(s.task_id)
            if spans and shown is not None:  # the fake's first delta comes after latency / 2
                first_text.append(shown - (spans[-1][0] + latency / 2))
        by_method = collections.Counter(calls)
        count = args.stream_tasks
        self.results["streaming"] = {
            "tasks": count,
            "rate_per_s": STREAM_RATE,
            "latency_s": latency,
            "streamed": len({st.thread_ts for st in streams}),
            "first_text_p50_ms": pct(first_text, 50) * 1000,
            "first_text_p95_ms": pct(first_text, 95) * 1000,
            "slack_calls_per_task": len(calls) / count,
            "slack_calls_per_task_by_method": {
                m: n / count for m, n in sorted(by_method.items(), key=lambda kv: -kv[1])
            },
        }

    def phase_recovery(self) -> None:
        """Paced tasks; the broker app stopped for --outage seconds, the tasks still coming;
        then timed from the broker back (start_app returned) to the first and the last answer."""
        args, node, slack = self.args, self.node, self.slack
        assert slack is not None and self.clock is not None
        if node is None:
            raise BenchFailure("recovery: needs the private RabbitMQ node (not --amqp-url)")
        rate = args.recovery_rate
        run = uuid.uuid4().hex[:6]
        most = int(rate * (RECOVERY_LEAD + args.outage + RECOVERY_SPARE)) + 1
        with self.stack("recovery", args.latency) as stack:
            commands = [
                (f"recovery {run} #{i}: say something", slack.new_response_url(channel=CHANNEL))
                for i in range(most)
            ]
            stop = threading.Event()
            sent: list[Sent] = []
            senders = max(PACED_SENDERS, args.senders)
            feeder = threading.Thread(
                target=lambda: sent.extend(send_commands(stack.url, commands, senders, rate, stop)),
                name="recovery-feeder",
                daemon=True,
            )
            at: dict[str, float] = {}  # perf_counter instants of the outage
            feeder.start()
            try:
                time.sleep(RECOVERY_LEAD)
                at["stop_called"] = time.perf_counter()
                node.stop_app()
                at["down"] = time.perf_counter()
                time.sleep(args.outage)
            finally:
                stop.set()  # what was sent so far was sent before or during the outage
                at["start_called"] = time.perf_counter()
                node.start_app()
                at["back"] = time.perf_counter()
                feeder.join()
            result = self._recovery_figures(stack, sent, at, len(commands))
            self.results["recovery"] = result
            stopping = time.perf_counter()
        # the workers drain what they hold and stop: after an outage too, one hopes promptly
        result["stack_stop_s"] = time.perf_counter() - stopping
        problems = [
            f"{result[key]} {what}"
            for key, what in (
                ("not_acked", "commands not acked with a task id"),
                ("lost", "tasks never finished (lost)"),
                ("failed", "tasks failed"),
                ("twice", "tasks with more than one parent or answer in Slack"),
            )
            if result[key]
        ]
        if problems:
            raise BenchFailure(f"recovery: {'; '.join(problems)}", result.pop("logs", ""))
        result.pop("logs", None)

    def _recovery_figures(
        self, stack: Stack, sent: list[Sent], at: dict[str, float], prepared: int
    ) -> dict[str, Any]:
        args, tracker = self.args, self.tracker
        assert self.slack is not None and self.clock is not None
        back = at["back"]
        acked = [s for s in sent if s.status == 200 and s.task_id]
        ids = {s.task_id for s in acked}
        during = [s for s in acked if s.sent >= at["stop_called"]]
        missing = tracker.wait(ids, tracker.finished, args.timeout)
        missing |= tracker.wait(ids - missing, tracker.shown, args.timeout)
        unsettled = self._wait_for_empty_queues(stack)
        time.sleep(SETTLE_GRACE)
        twice = []
        for task_id in ids - missing:
            parents = tracker.parents_of(task_id)
            replies = sum(len(self.slack.replies(CHANNEL, ts)) for ts in parents)
            if len(parents) != 1 or replies != 1:
                twice.append(f"{task_id}: {len(parents)} parent(s), {replies} reply(ies)")
        shown = {t: tracker.shown[t] for t in ids - missing}
        after = sorted(t for t in shown.values() if t > at["start_called"])
        backlog = len(after)
        ideal = backlog * args.latency / self.capacity
        first = after[0] - back if after else None
        drained = after[-1] - back if after and not missing else None
        calls = [len(self.clock.of(s.prompt)) for s in acked] if self.clock.exact else []
        outage_acks = [s.elapsed * 1000 for s in during]
        result: dict[str, Any] = {
            "rate_per_s": args.recovery_rate,
            "latency_s": args.latency,
            "outage_s": args.outage,
            "tasks": len(ids),
            "before": len(acked) - len(during),
            "during": len(during),
            "not_acked": len(sent) - len(acked),
            "lost": len(missing),
            "failed": len(ids & tracker.failed),
            "twice": len(twice),
            "twice_examples": twice[:5],
            "queues_not_empty": unsettled,
            "claude_more_than_once": sum(n > 1 for n in calls) if calls else None,
            "stop_app_s": at["down"] - at["stop_called"],
            "start_app_s": back - at["start_called"],
            "broker_out_s": back - at["stop_called"],
            "outage_ack_p99_ms": pct(outage_acks, 99) if outage_acks else None,
            "outage_ack_max_ms": max(outage_acks) if outage_acks else None,
            "answered_during_outage": sum(
                at["stop_called"] <= t <= at["start_called"] for t in shown.values()
            ),
            "backlog": backlog,
            "first_result_s": first,
            "drained_s": drained,
            "ideal_s": ideal,
            "drained_over_ideal": drained / ideal if drained is not None and ideal else None,
            "after_first_over_ideal": (
                (drained - first) / ideal
                if drained is not None and first is not None and ideal
                else None
            ),
            "reconnect_waits_s": _reconnect_waits(stack),
        }
        if len(sent) == prepared:
            self.warnings.append("recovery: the feeder ran out of commands before start_app")
        if missing or twice or result["failed"] or result["not_acked"]:
            examples = sorted(missing)[:3]
            result["logs"] = _grep_logs(stack, examples + [t.split(":")[0] for t in twice[:3]])
        return result

    def _wait_for_empty_queues(self, stack: Stack, timeout: float = 30.0) -> dict[str, int]:
        """Wait until the stack's task and result queues hold nothing (ready or unacked): no
        redelivery can still come. Returns what is left when it gives up (empty: all clear)."""
        assert self.node is not None
        vhost = urllib.parse.unquote(stack.env["AICO_AMQP_URL"].rsplit("/", 1)[1])
        deadline, left = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            counts: dict[str, int] = {}
            listing = self.node.ctl("list_queues", "-p", vhost, "name", "messages")
            for line in listing.splitlines():
                name, _, count = line.partition("\t")
                with contextlib.suppress(ValueError):
                    counts[name.strip()] = int(count)
            left = {queue: counts[queue] for queue in (TASKS, RESULTS) if counts.get(queue)}
            if not left:
                break
            time.sleep(0.2)
        return left

    # -- the derived figures

    def summarise(self) -> None:
        ran = [p for p in CPU_PHASES if p in self.results]
        if ran:
            tasks = sum(self.results[p]["tasks"] for p in ran)
            roles: dict[str, float] = defaultdict(float)
            for phase in ran:
                for role, ms in self.results[phase]["cpu_ms_per_task"].items():
                    roles[role] += ms * self.results[phase]["tasks"]
            per_task = {role: total / tasks for role, total in roles.items()}
            self.results["cpu"] = {
                "phases": ran,
                "tasks": tasks,
                "aico_ms_per_task": sum(v for r, v in per_task.items() if _is_aico(r)),
                "broker_ms_per_task": per_task.get("broker"),
                "by_process_ms_per_task": per_task,
            }
        if self.sampler is not None and self.sampler.samples:
            sampler = self.sampler
            self.results["memory"] = {
                "samples": sampler.samples,
                "task_workers": sampler.peak_workers,
                "peak_rss_mib": sampler.peak["rss"] / MIB,
                "peak_uss_mib": sampler.peak["uss"] / MIB if sampler.peak["uss"] else None,
                "peak_pss_mib": sampler.peak["pss"] / MIB if sampler.peak["pss"] else None,
                "peak_rss_by_process_mib": {
                    r: v / MIB for r, v in sorted(sampler.peak_by_role.items())
                },
                "mean_sample_ms": sampler.cost / sampler.samples * 1000,  # CPU time
                "slowest_sample_ms": sampler.slowest * 1000,
            }
        self.results["config"] = {
            "cpus": os.cpu_count(),
            "workers": self.args.workers,
            "concurrency": self.args.concurrency,
            "capacity": self.capacity,
            "latency_s": self.args.latency,
            "senders": self.args.senders,
            "warmup": self.args.warmup,
            "broker": "private node" if self.node else "--amqp-url",
            "build": build_id(),
        }
        if self.warnings:
            self.results["warnings"] = [w.splitlines()[0] for w in self.warnings]
        notes = [
            f"{phase}: other processes used {cpu['other']:.1f} of the machine's "
            f"{cpu['machine']:.1f} ms CPU per task: its figures are disturbed"
            for phase in PHASES
            if (cpu := self.results.get(phase, {}).get("cpu_ms_per_task"))
            and cpu["other"] > max(0.5, 0.1 * cpu["machine"])
        ]
        if notes:
            self.results["notes"] = notes


def aico_settings(workers: int, concurrency: int, log_level: str) -> dict[str, str]:
    """The environment a benchmarked aico stack gets beyond Stack's: a fixed pool of `workers`
    task workers of `concurrency` Claude calls each, and no per-channel pacing."""
    return {
        "AICO_MIN_WORKERS": str(workers),
        "AICO_MAX_WORKERS": str(workers),  # a fixed pool: the relay is measured
        "AICO_TASK_CONCURRENCY": str(concurrency),
        "AICO_LOG_LEVEL": log_level,
        # Every task goes to one channel here; Slack's pace for one channel (1 post/s)
        # would measure Slack, not aico.
        "AICO_SLACK_CHANNEL_RATE": "0",
    }


def build_id() -> str:
    """The commit measured, and how many files of the work tree differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = len(status.splitlines())
    return f"{head} + {changed} changed file(s)" if changed else head


def _reconnect_waits(stack: Stack) -> dict[str, list[float]]:
    """Each AMQP link's waits before its reconnection attempts, in order, from the logs."""
    waits: dict[str, list[float]] = defaultdict(list)
    for name in stack.processes.commands:
        for match in RETRYING.finditer(stack.processes.log(name)):
            waits[match[1]].append(float(match[2]))
    return dict(waits)


def _grep_logs(stack: Stack, words: list[str], limit: int = 60) -> str:
    """The process logs' lines that mention one of `words` or the broker, at most `limit` each."""
    found = []
    for name in stack.processes.commands:
        lines = [
            line
            for line in stack.processes.log(name).splitlines()
            if any(w in line for w in words) or "broker" in line or "Traceback" in line
        ]
        if lines:
            found.append(f"--- {name}\n" + "\n".join(lines[-limit:]))
    return "\n".join(found) or stack.logs()


def _is_aico(role: str) -> bool:
    return role not in NOT_AICO


def _cpu_figures(batch: Batch, count: int) -> dict[str, Any]:
    per_task = {role: cpu * 1000 / count for role, cpu in batch.cpu.items()}
    per_task["other"] = (batch.busy - sum(batch.cpu.values())) * 1000 / count
    per_task["machine"] = batch.busy * 1000 / count
    return {
        "window_s": batch.window,
        "cpu_ms_per_task": per_task,
        "aico_cpu_ms_per_task": sum(v for r, v in per_task.items() if _is_aico(r)),
        "machine_busy_pct": 100 * batch.busy / batch.between / (os.cpu_count() or 1),
    }


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, interpolated between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --------------------------------------------------------------------------- the report


def _f(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value + 0.0:.{digits}f}" if round(value, digits) else f"{0:.{digits}f}"


def report(results: dict[str, Any]) -> str:
    config = results["config"]
    lines = [
        f"aico end-to-end benchmark · {config['cpus']} CPUs · {config['workers']} task worker(s) "
        f"x concurrency {config['concurrency']} (C = {config['capacity']}) · "
        f"Claude {config['latency_s'] * 1000:.0f} ms · broker: {config['broker']} · "
        f"build {config['build']}",
        "",
        f"{'figure':<52}{'measured':>18}{'target':>12}{'reference':>12}",
    ]

    def row(label: str, value: str, key: str = "") -> None:
        target, ref = TARGETS.get(key, ""), REFERENCE.get(key, "")
        lines.append(f"{label:<52}{value:>18}{target:>12}{ref:>12}")

    if wall := results.get("wall"):
        row(
            f"wall ÷ ideal ({wall['tasks']} tasks, {wall['latency_s'] * 1000:.0f} ms, "
            f"C={config['capacity']})",
            _f(wall["wall_over_ideal"], 3),
            "wall_over_ideal",
        )
        row("  wall / ideal, s", f"{wall['wall_s']:.2f} / {wall['ideal_s']:.2f}")
        row("  tasks/s", _f(wall["tasks_per_s"]))
        if "slot_idle_ms_per_task" in wall:
            row(
                f"  Claude calls in flight (mean of {config['capacity']})",
                _f(wall["claude_in_flight_mean"], 2),
            )
            row(
                "  slot idle per task (C·wall - Σ Claude) / N, ms",
                _f(wall["slot_idle_ms_per_task"]),
            )
    if tput := results.get("throughput"):
        row(
            f"throughput ({tput['tasks']} tasks, Claude 0 ms), tasks/s",
            _f(tput["tasks_per_s"]),
            "throughput",
        )
        row(
            "  all acked / all parents posted / all answered, s",
            f"{tput['all_acked_s']:.2f} / {tput['all_posted_s']:.2f} / {tput['wall_s']:.2f}",
        )
    if ack := results.get("ack"):
        row(
            f"ack p50 / p99 ({ack['commands']} at {ack['rate_per_s']:g}/s), ms",
            f"{ack['p50_ms']:.1f} / {ack['p99_ms']:.1f}",
            "ack",
        )
        row("  max; sender late p99, ms", f"{ack['max_ms']:.1f}; {ack['send_late_p99_ms']:.1f}")
    if over := results.get("overhead"):
        row(
            f"overhead p50 / p99 ({over['tasks']} at {over['rate_per_s']:g}/s), ms",
            f"{over['p50_ms']:.1f} / {over['p99_ms']:.1f}",
            "overhead",
        )
    if st := results.get("streaming"):
        row(
            f"first token → first text in Slack p50 / p95 ({st['tasks']} at "
            f"{st['rate_per_s']:g}/s, Claude {st['latency_s']:g} s), ms",
            f"{st['first_text_p50_ms']:.0f} / {st['first_text_p95_ms']:.0f}",
            "first_text",
        )
        row("  answers streamed natively", f"{st['streamed']} of {st['tasks']}")
        row("  Slack Web API calls per task", _f(st["slack_calls_per_task"], 1), "slack_calls")
        by = st["slack_calls_per_task_by_method"]
        lines.append("  by method: " + ", ".join(f"{m} {n:.1f}" for m, n in by.items()))
    if rec := results.get("recovery"):
        row(
            f"recovery after {rec['outage_s']:g} s down ({rec['rate_per_s']:g}/s), "
            "first / drained, s",
            f"{_f(rec['first_result_s'], 2)} / {_f(rec['drained_s'], 2)}",
        )
        row(
            f"  drained ÷ ideal ({rec['backlog']} x {rec['latency_s'] * 1000:.0f} ms / "
            f"C={config['capacity']} = {rec['ideal_s']:.2f} s)",
            _f(rec["drained_over_ideal"], 2),
        )
        row("  (drained - first) ÷ ideal", _f(rec["after_first_over_ideal"], 2))
        row(
            "  tasks before / during outage; lost; twice",
            f"{rec['before']} / {rec['during']}; {rec['lost']}; {rec['twice']}",
        )
        row(
            "  stop_app / start_app / broker out, s",
            f"{rec['stop_app_s']:.1f} / {rec['start_app_s']:.1f} / {rec['broker_out_s']:.1f}",
        )
        if "stack_stop_s" in rec:
            row("  stack stop after the phase (workers drain), s", _f(rec["stack_stop_s"]))
        row(
            "  ack p99 / max during the outage, ms",
            f"{_f(rec['outage_ack_p99_ms'])} / {_f(rec['outage_ack_max_ms'])}",
        )
        waits = rec["reconnect_waits_s"]
        tries = ", ".join(
            f"{link} {len(w)} ({w[-1]:.1f})" for link, w in sorted(waits.items()) if w
        )
        lines.append(f"  reconnect tries by link (last wait, s): {tries or 'none logged'}")
    if cpu := results.get("cpu"):
        row(
            f"CPU per task, aico processes ({'+'.join(cpu['phases'])}), ms",
            _f(cpu["aico_ms_per_task"], 2),
            "cpu_per_task",
        )
        row("  broker (RabbitMQ node, not counted), ms", _f(cpu["broker_ms_per_task"], 2))
    if mem := results.get("memory"):
        row(
            f"peak RSS, aico processes ({mem['task_workers']} task worker), MiB",
            _f(mem["peak_rss_mib"]),
            "peak_rss",
        )
        if mem["peak_uss_mib"] is not None:
            row("  peak USS / PSS, MiB", f"{mem['peak_uss_mib']:.1f} / {mem['peak_pss_mib']:.1f}")
    lines += _cpu_table(results)
    lines += _stage_table(results)
    if mem:
        peaks = ", ".join(f"{r} {v:.1f}" for r, v in mem["peak_rss_by_process_mib"].items())
        lines += ["", f"peak RSS by process, MiB: {peaks}"]
        lines.append(
            f"({mem['samples']} samples of {mem['mean_sample_ms']:.1f} ms CPU on average, at most "
            f"{mem['slowest_sample_ms']:.1f} ms; "
            "the by-process peaks may come from different samples)"
        )
    for note in results.get("notes", []):
        lines.append(f"NOTE: {note}")
    for warning in results.get("warnings", []):
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)


def _cpu_table(results: dict[str, Any]) -> list[str]:
    phases = [p for p in PHASES if "cpu_ms_per_task" in results.get(p, {})]
    if not phases:
        return []
    roles = sorted(
        {r for p in phases for r in results[p]["cpu_ms_per_task"]},
        key=lambda r: (ROLES.index(r) if r in ROLES else len(ROLES), r),
    )
    both = results.get("cpu", {}).get("by_process_ms_per_task", {})
    header = f"{'CPU ms per task, by process':<40}" + "".join(f"{p:>12}" for p in phases)
    lines = ["", header + f"{'both':>12}"]
    labels = {
        "broker": "broker (RabbitMQ, not counted)",
        "harness": "harness: fakes + senders (not counted)",
        "other": "other processes on the machine",
        "machine": "whole machine",
    }
    for role in roles:
        if role in NOT_AICO:
            continue
        _cpu_row(lines, role, [results[p]["cpu_ms_per_task"].get(role) for p in phases], both)
    _cpu_row(lines, "aico total", [results[p]["aico_cpu_ms_per_task"] for p in phases], {})
    if "cpu" in results:
        lines[-1] += f"{results['cpu']['aico_ms_per_task']:>12.2f}"
    for role in NOT_AICO:
        if role in roles:
            values = [results[p]["cpu_ms_per_task"].get(role) for p in phases]
            _cpu_row(lines, labels[role], values, both, role)
    busy = [f"{results[p]['machine_busy_pct']:>11.0f}%" for p in phases]
    lines.append(f"{'machine busy (all CPUs)':<40}" + "".join(busy))
    return lines


def _cpu_row(
    lines: list[str], label: str, values: list[float | None], both: dict, role: str = ""
) -> None:
    cells = "".join(f"{_f(v, 2):>12}" for v in values)
    total = both.get(role or label)
    lines.append(f"{label:<40}{cells}" + (f"{total:>12.2f}" if total is not None else ""))


STAGES = {
    "ack": "command sent → ack received",
    "to_parent": "command sent → parent posted",
    "parent_to_claude": "parent posted → Claude called",
    "claude": "Claude (as FakeClaude saw it)",
    "claude_to_answer": "Claude answered → answer posted",
    "answer_to_done": "answer posted → parent says Done",
    "total": "command sent → answer posted",
    "overhead": "overhead (total - Claude)",
}


def _stage_table(results: dict[str, Any]) -> list[str]:
    stages = results.get("overhead", {}).get("stages_ms")
    if not stages:
        return []
    lines = ["", f"{'overhead phase, per task, ms':<40}{'p50':>12}{'p99':>12}"]
    for key, label in STAGES.items():
        if key in stages:
            lines.append(f"{label:<40}{stages[key]['p50']:>12.2f}{stages[key]['p99']:>12.2f}")
    return lines


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    cli.add_argument("--tasks", type=int, help="tasks of the wall ÷ ideal phase (200)")
    cli.add_argument("--throughput-tasks", type=int, help="tasks of the throughput phase (1000)")
    cli.add_argument("--latency", type=float, default=0.2, help="Claude's latency, seconds")
    cli.add_argument("--workers", type=int, default=1, help="AICO_MIN_WORKERS")
    cli.add_argument("--concurrency", type=int, default=8, help="AICO_TASK_CONCURRENCY")
    cli.add_argument("--ack-rate", type=float, default=50.0, help="commands per second")
    cli.add_argument("--ack-count", type=int, help="commands of the ack phase (200)")
    cli.add_argument("--overhead-count", type=int, help="tasks of the overhead phase (200)")
    cli.add_argument("--stream-tasks", type=int, help="tasks of the streaming phase (20)")
    cli.add_argument(
        "--stream-latency",
        type=float,
        default=3.0,
        help="Claude's latency in the streaming phase, seconds (half before the first token)",
    )
    cli.add_argument(
        "--recovery-rate", type=float, default=20.0, help="tasks per second of the recovery phase"
    )
    cli.add_argument(
        "--outage", type=float, help="seconds the broker app stays stopped, recovery phase (10)"
    )
    cli.add_argument(
        "--senders", type=int, default=8, help="keep-alive sender connections of the bursts"
    )
    cli.add_argument("--warmup", type=int, help="unmeasured tasks per stack (16)")
    cli.add_argument(
        "--phases",
        help=f"comma list of {','.join(PHASES)} (all; without recovery when --amqp-url is given)",
    )
    cli.add_argument(
        "--quick", action="store_true", help="small numbers for a smoke run: " + str(QUICK)
    )
    cli.add_argument("--amqp-url", default="", help="an existing broker instead of a private node")
    cli.add_argument("--json", type=Path, help="also write the JSON line to this file")
    cli.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="give up after this many seconds without a new answer",
    )
    cli.add_argument("--log-level", default="WARNING", help="AICO_LOG_LEVEL of the stack")
    cli.add_argument("--rss-only", action="store_true", help="sample RSS only, not USS/PSS")
    cli.add_argument("--keep", action="store_true", help="keep each stack's logs and data")
    args = cli.parse_args(argv)
    for name, value in QUICK.items() if args.quick else ():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name, value in FULL.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.phases is None:  # recovery stops the broker: only a private node of ours
        args.phases = ",".join(p for p in PHASES if p != "recovery" or not args.amqp_url)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        cli.error(f"unknown phase(s) {sorted(unknown)}; choose from {','.join(PHASES)}")
    if "recovery" in args.phases and args.amqp_url:
        cli.error("the recovery phase stops the broker: it needs the private node, not --amqp-url")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    failure: Exception | None = None
    try:
        bench.start()
        for phase in args.phases:
            bench.run(phase)
    except Exception as exc:  # the stack (or the node) failed: report what was measured
        failure = exc
        if not isinstance(exc, BenchFailure):
            traceback.print_exc()
    finally:
        bench.close()
    bench.summarise()
    print(report(bench.results))
    line = json.dumps(bench.results, separators=(",", ":"), default=str)
    print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(line + "\n")
    for warning in bench.warnings:
        print(f"\n{warning}", file=sys.stderr)
    if failure is not None:
        logs = getattr(failure, "logs", "")
        print(f"\nFAILED: {failure}\n\n{logs}", file=sys.stderr)
        return 1
    return 1 if bench.warnings else 0


if __name__ == "__main__":
    sys.exit(main())
