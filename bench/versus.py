"""aico and its peer (Bolt on gunicorn + Celery + slack_sdk) side by side, interleaved.

    .venv/bin/python -m bench.versus [--reps 3] [--quick] [--peer DIR]
                                     [--phases wall,throughput,ack,overhead]
                                     [--tasks 200] [--throughput-tasks 500] [--latency 0.2]
                                     [--concurrency 8] [--ack-rate 50] [--ack-count 200]
                                     [--overhead-count 200] [--amqp-url URL] [--json PATH]

A sibling of bench/e2e.py rather than a mode of it: e2e.py accounts for aico's own messages (the
task id in the ack, the parent's Done badge, streaming, recovery), which the peer does not have,
and its CLI and figures stay as they are. This module imports e2e.py's machinery (the senders,
ClaudeClock, MemorySampler, the CPU snapshots) and adds what both stacks share: an answer is a
reply in the parent's thread that contains "Answer to: <prompt>".

One private RabbitMQ node (or --amqp-url), one FakeSlack and one FakeClaude serve every run. For
each phase, each repetition starts a fresh aico stack from aico's Procfile and then a fresh peer
stack from the peer's Procfile, each on a fresh vhost, warmed up with a few unmeasured tasks: aico,
peer, aico, peer... Both get C = --concurrency Claude calls in flight (aico: one task worker x
AICO_TASK_CONCURRENCY; the peer: PEER_CONCURRENCY) and no per-channel pacing
(AICO_SLACK_CHANNEL_RATE=0; the peer has none).

The peer is installed into a virtualenv of its own (--peer-venv, default bench/.peer-venv), created
on first use from --peer (default: the repository's sibling ../shared/peer_pipeline) and
reinstalled when its sources change; its processes run with that venv's bin first on PATH. Celery
and gunicorn never enter aico's environment.

The phases (the figures of issue 15's table):

wall         --tasks sent at once over 8 keep-alive connections, Claude answering in --latency s:
             first command sent to last answer posted, divided by the ideal N·L/C.
throughput   --throughput-tasks at once, Claude at 0 ms: tasks per second end to end, the acks'
             p99 during that burst, and the requests refused or reset (a request whose
             connection failed, even if the sender's one retry then got through; Slack does not
             retry a slash command) and the acks slower than Slack's 3 s.
ack          --ack-count commands at --ack-rate a second (open loop): the acks' p50 / p99.
overhead     --overhead-count commands at half capacity (C/L/2 a second): per task, answer
             posted in its thread - command sent - the time FakeClaude spent on its call.
CPU per task user+system CPU of every process of the stack (bot and its children, e.g. gunicorn's
             workers; pm and its task workers or the Celery worker; the result worker) over the
             wall and throughput phases, from before the first command to the last task done
             (aico: its parent says Done; the peer: its answer posted), ÷ their tasks. The broker's
             is shown beside it, not counted; neither are the fakes'.
peak memory  the peak summed RSS of the stack's processes, sampled every 0.2 s while each stack
             runs (warm-up included), the highest over a repetition's phases.

Each cell is the median over the repetitions and their min-max; the last column is aico's median
÷ the peer's. Every task sent and acked must be answered exactly once: a task lost, failed or
answered twice fails the run (exit 1, after printing what was measured). No figure is checked
against a target: this is a measurement tool.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
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
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from aico.fakes.anthropic import FakeClaude
from aico.fakes.signing import SlackSender
from aico.fakes.slack import FakeSlack
from aico.procfile import ProcessGroup
from aico.rabbit_node import RabbitNode
from bench.e2e import (
    CHANNEL,
    DONE_BADGE,
    FAILED_BADGE,
    NOT_AICO,
    BenchFailure,
    ClaudeClock,
    MemorySampler,
    Sent,
    aico_processes,
    aico_settings,
    broker_processes,
    build_id,
    cpu_delta,
    cpu_snapshot,
    machine_busy,
    pct,
    process_table,
    send_commands,
    tear_down,
)
from core.config import DEFAULT_MODEL
from tests.integration.stack import BOT_TOKEN, Stack, fresh_vhost

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PEER = ROOT.parent / "shared" / "peer_pipeline"
DEFAULT_PEER_VENV = ROOT / "bench" / ".peer-venv"
PHASES = ("wall", "throughput", "ack", "overhead")
CPU_PHASES = ("wall", "throughput")
KINDS = ("aico", "peer")
FULL = {
    "tasks": 200,
    "throughput_tasks": 500,
    "ack_count": 200,
    "overhead_count": 200,
    "warmup": 16,
}
QUICK = {"tasks": 40, "throughput_tasks": 100, "ack_count": 40, "overhead_count": 40, "warmup": 8}
PACED_SENDERS = 16  # connections of the paced phases, as in bench/e2e.py
SLACK_ACK_LIMIT = 3.0  # seconds: Slack shows the user an error past this
TOKEN = re.compile(r"\b(q[0-9a-f]{6}n\d+)\b")  # one task's mark in its prompt
ANSWER = re.compile(r"Answer to: \S+ (q[0-9a-f]{6}n\d+)\b")  # FakeClaude's answer to it
FAILURE_MARKS = (":x:", ":warning:")  # a reply that says the task failed (aico, the peer)
MIB = 1024 * 1024
PEER_MARKER = "aico-bench-peer-source.sha256"


# --------------------------------------------------------------------------- the peer's venv


@dataclass(frozen=True)
class PeerInstall:
    """The peer's sources and the virtualenv it is installed in."""

    source: Path
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def procfile(self) -> Path:
        return self.source / "Procfile"


def source_digest(source: Path) -> str:
    """A hash of the peer's installable files (pyproject and package), to reinstall on change."""
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        parts = path.relative_to(source).parts
        if not path.is_file() or any(p == "__pycache__" or p.endswith(".egg-info") for p in parts):
            continue
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def ensure_peer(source: Path, venv: Path) -> PeerInstall:
    """Create `venv` and install the peer from `source` into it, unless it is there already and
    its sources did not change. The sources are copied first: pip builds in the source tree,
    which may be read-only."""
    install = PeerInstall(source.resolve(), venv.resolve())
    if not install.procfile.is_file():
        raise BenchFailure(f"no peer at {source}: no Procfile (see --peer)")
    digest = source_digest(install.source)
    marker = install.venv / PEER_MARKER
    if (install.bin / "peer").exists() and marker.is_file() and marker.read_text() == digest:
        return install
    print(f"[peer] installing {install.source} into {install.venv}", file=sys.stderr, flush=True)
    fresh = not (install.bin / "python").exists()
    if fresh:
        subprocess.run([sys.executable, "-m", "venv", str(install.venv)], check=True)
    with tempfile.TemporaryDirectory(prefix="aico-bench-peer-src-") as tmp:
        copy = Path(tmp) / "peer"
        shutil.copytree(
            install.source, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        pip = [str(install.bin / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, str(copy)], check=True)  # dependencies as the pyproject says
        if not fresh:  # the same version number: make pip take the changed code anyway
            subprocess.run([*pip, "--no-deps", "--force-reinstall", str(copy)], check=True)
    marker.write_text(digest)
    return install


class PeerStack(Stack):
    """The peer from its own Procfile, with the environment aico's Stack gives aico (tokens,
    fake URLs, broker URL, port) and the peer venv's bin first on PATH."""

    def __init__(
        self,
        workdir: Path,
        amqp_url: str,
        slack: FakeSlack,
        claude: FakeClaude,
        peer: PeerInstall,
        **settings: str,
    ) -> None:
        super().__init__(workdir, amqp_url, slack, claude, **settings)
        for name in ("PYTHONPATH", "PYTHONHOME"):
            self.env.pop(name, None)
        self.env["VIRTUAL_ENV"] = str(peer.venv)
        self.env["PATH"] = os.pathsep.join([str(peer.bin), self.env.get("PATH", os.defpath)])
        self.processes = ProcessGroup(self.env, log_dir=workdir / "logs", procfile=peer.procfile)


# --------------------------------------------------------------------------- what Slack shows


class AnswerTracker:
    """FakeSlack's changes, timed, for aico and the peer alike, by the task's mark in its prompt:
    its parent posted (a top-level message with the mark), its answer posted (a reply in that
    parent's thread containing "Answer to: <prompt>", posted, updated or streamed), its parent
    Done (aico only), a failure reply. `on_change` runs in the fake's request threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._token_of: dict[str, str] = {}  # parent ts -> mark
        self.posted: dict[str, float] = {}  # mark -> perf_counter when its parent was posted
        self.answered: dict[str, float] = {}  # ... when its answer was first shown in the thread
        self.finished: dict[str, float] = {}  # ... when its parent said Done or Failed
        self.answers: dict[str, set[str]] = defaultdict(set)  # mark -> ts of replies answering
        self.parents: dict[str, int] = defaultdict(int)  # mark -> top-level posts carrying it
        self.failed: set[str] = set()
        self.orphans = 0  # replies in threads of no parent we saw

    def reset(self) -> None:
        with self._cond:
            for table in (self._token_of, self.posted, self.answered, self.finished):
                table.clear()
            self.answers.clear()
            self.parents.clear()
            self.failed.clear()
            self.orphans = 0

    def on_change(self, kind: str, channel: str, msg: dict) -> None:
        now = time.perf_counter()
        if channel != CHANNEL or kind not in ("posted", "updated", "streamed"):
            return
        ts, thread_ts = msg.get("ts"), msg.get("thread_ts")
        content = f"{msg.get('text', '')}\n{msg.get('blocks', '')}"
        with self._cond:
            if thread_ts and thread_ts != ts:
                self._on_reply(kind, thread_ts, str(ts), msg, content, now)
            elif kind == "posted":
                self._on_parent(str(ts), content, now)
            else:
                self._on_parent_update(str(ts), content, now)
            self._cond.notify_all()

    def _on_parent(self, ts: str, content: str, now: float) -> None:
        match = TOKEN.search(content)
        if match:
            self._token_of[ts] = match[1]
            self.posted.setdefault(match[1], now)
            self.parents[match[1]] += 1

    def _on_parent_update(self, ts: str, content: str, now: float) -> None:
        token = self._token_of.get(ts)
        if token is None or token in self.finished:
            return
        if FAILED_BADGE in content:
            self.failed.add(token)
            self.finished[token] = now
        elif DONE_BADGE in content:
            self.finished[token] = now

    def _on_reply(
        self, kind: str, thread_ts: str, ts: str, msg: dict, content: str, now: float
    ) -> None:
        token = self._token_of.get(thread_ts)
        if token is None:
            self.orphans += kind == "posted"
            return
        answer = ANSWER.search(content)
        if answer and answer[1] == token:
            self.answers[token].add(ts)
            self.answered.setdefault(token, now)
        elif kind == "posted" and str(msg.get("text", "")).startswith(FAILURE_MARKS):
            self.failed.add(token)

    def wait(self, tokens: set[str], table: dict[str, float], stall: float) -> set[str]:
        """Wait until every mark is in `table` or failed; give up once nothing new came for
        `stall` seconds. Returns the marks still missing (empty when all are there)."""
        with self._cond:
            left, deadline = -1, 0.0
            while True:
                missing = tokens - table.keys() - self.failed
                if not missing:
                    return missing
                if len(missing) != left:
                    left, deadline = len(missing), time.monotonic() + stall
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return missing
                self._cond.wait(remaining)


class CountingSender(SlackSender):
    """A SlackSender that counts the exchanges whose connection failed (refused, reset, closed
    without an answer), including those its one retry then got through."""

    def __init__(self, url: str, secret: str, failures: list[str]) -> None:
        super().__init__(url, secret)
        self.failures = failures  # shared by a batch's senders; list.append is atomic

    def _exchange(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        try:
            return super()._exchange(body, headers)
        except (http.client.HTTPException, OSError) as exc:
            self.failures.append(type(exc).__name__)
            raise


# --------------------------------------------------------------------------- the runs


@dataclass
class Batch:
    """One measured burst or paced run of tasks on one stack."""

    sent: list[Sent]
    tokens: dict[str, Sent]  # mark -> its command, for the commands acked
    answered: dict[str, float]
    posted: dict[str, float]
    cpu: dict[str, float]  # role -> CPU seconds over the batch
    busy: float  # the machine's busy CPU seconds over the batch
    between: float  # seconds between the two CPU snapshots
    connection_failures: list[str]

    @property
    def first_sent(self) -> float:
        return min(s.sent for s in self.sent)

    @property
    def wall(self) -> float:
        return max(self.answered.values()) - self.first_sent

    @property
    def not_acked(self) -> int:
        return len(self.sent) - len(self.tokens)

    @property
    def stack_cpu(self) -> float:
        return sum(cpu for role, cpu in self.cpu.items() if role not in NOT_AICO)


@dataclass
class Versus:
    args: argparse.Namespace
    peer: PeerInstall
    node: RabbitNode | None = None
    slack: FakeSlack | None = None
    claude: FakeClaude | None = None
    tracker: AnswerTracker = field(default_factory=AnswerTracker)
    clock: ClaudeClock | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _dirs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        if not self.args.amqp_url:
            base = Path(tempfile.mkdtemp(prefix="aico-versus-rabbit-"))
            self._dirs.append(base)
            self.node = RabbitNode(base)
            self.node.start()
        self.slack = FakeSlack(bot_token=BOT_TOKEN).start()
        self.slack.on_change.append(self.tracker.on_change)
        self.claude = FakeClaude(latency=self.args.latency).start()
        self.clock = ClaudeClock(self.claude)

    def close(self) -> None:
        steps = [fake.stop for fake in (self.claude, self.slack) if fake is not None]
        steps += [self.node.stop] if self.node else []
        tear_down(steps, self._dirs, self.warnings)

    def run_all(self) -> None:
        """Phase by phase; within a phase, aico then the peer, --reps times."""
        for phase in self.args.phases:
            for rep in range(self.args.reps):
                for kind in KINDS:
                    started = time.monotonic()
                    result = {"kind": kind, "phase": phase, "rep": rep}
                    result.update(getattr(self, f"phase_{phase}")(kind, f"{phase}{rep}"))
                    self.runs.append(result)
                    took = time.monotonic() - started
                    print(
                        f"[{phase} {rep + 1}/{self.args.reps} {kind}] {brief(result)} "
                        f"({took:.0f} s)",
                        file=sys.stderr,
                        flush=True,
                    )

    # -- one stack per run

    @contextlib.contextmanager
    def stack(self, kind: str, label: str, latency: float) -> Iterator[tuple[Stack, dict]]:
        """A fresh stack of `kind` on a fresh vhost, warmed up; yields it and a dict that gets
        the run's peak memory once the stack has stopped."""
        assert self.slack is not None and self.claude is not None and self.clock is not None
        self.slack.reset()
        self.tracker.reset()
        self.clock.reset()
        self.claude.latency = latency
        workdir = Path(tempfile.mkdtemp(prefix=f"aico-versus-{kind}-{label}-"))
        amqp_url = self.args.amqp_url or fresh_vhost(self.node)  # type: ignore[arg-type]
        concurrency = str(self.args.concurrency)
        stack: Stack
        if kind == "aico":
            settings = aico_settings(1, self.args.concurrency, self.args.log_level)
            stack = Stack(workdir, amqp_url, self.slack, self.claude, **settings)
        else:
            # the model aico asks for by default (the peer's default is retired in FakeClaude)
            settings = {"PEER_CONCURRENCY": concurrency, "AICO_MODEL": DEFAULT_MODEL}
            stack = PeerStack(workdir, amqp_url, self.slack, self.claude, self.peer, **settings)
        memory: dict[str, Any] = {}
        sampler = MemorySampler(full=not self.args.rss_only)
        try:
            stack.start(timeout=60)
            if kind == "aico":
                self._wait_for_task_worker(stack)
            sampler.stack = stack
            sampler.start()
            if self.args.warmup:
                self.batch(stack, kind, f"{label}-warmup", self.args.warmup)
            yield stack, memory
        finally:
            if sampler.is_alive():
                sampler.stop()
            memory["peak_rss_mib"] = sampler.peak["rss"] / MIB
            memory["peak_pss_mib"] = sampler.peak["pss"] / MIB if sampler.peak["pss"] else None
            memory["peak_rss_by_process_mib"] = {
                role: rss / MIB for role, rss in sorted(sampler.peak_by_role.items())
            }
            codes = stack.stop()
            bad = {name: code for name, code in codes.items() if code != 0}
            if bad:
                self.warnings.append(f"{kind} {label}: processes exited {bad}\n{stack.logs()}")
            if self.args.keep:
                print(f"[{kind} {label}] logs kept in {workdir / 'logs'}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    def _wait_for_task_worker(self, stack: Stack, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(role == "task" for role, _ in aico_processes(stack)):
                return
            time.sleep(0.1)
        raise BenchFailure("aico's pm did not start its task worker", stack.logs())

    def _cpu_snapshot(self, stack: Stack) -> dict[int, tuple[str, float]]:
        table = process_table()
        procs = aico_processes(stack, table)
        procs += [("broker", p) for p in broker_processes(self.node, table)]
        procs.append(("harness", psutil.Process()))
        return cpu_snapshot(procs)

    def batch(
        self, stack: Stack, kind: str, label: str, count: int, rate: float | None = None
    ) -> Batch:
        """Send `count` tasks; wait until each one acked is answered (and, for aico, Done);
        check that each was answered once and none failed."""
        assert self.slack is not None
        run = uuid.uuid4().hex[:6]
        commands = [
            (f"{label} q{run}n{i} say something", self.slack.new_response_url(channel=CHANNEL))
            for i in range(count)
        ]
        failures: list[str] = []

        def connect(url: str, secret: str) -> SlackSender:
            return CountingSender(url, secret, failures)

        before, busy_before, t_before = self._cpu_snapshot(stack), machine_busy(), time.monotonic()
        senders = self.args.senders if rate is None else max(PACED_SENDERS, self.args.senders)
        sent = send_commands(stack.url, commands, senders, rate, connect=connect)
        tokens = {TOKEN.findall(s.prompt)[0]: s for s in sent if s.status == 200 and not s.error}
        tables = [(self.tracker.answered, "answered")]
        if kind == "aico":  # its work on a task ends with the parent's Done
            tables.append((self.tracker.finished, "Done"))
        for table, what in tables:
            missing = self.tracker.wait(set(tokens), table, self.args.timeout)
            if missing:
                raise BenchFailure(
                    f"{kind} {label}: {len(missing)} of {len(tokens)} acked tasks never {what} "
                    f"(nothing new for {self.args.timeout:.0f} s; "
                    f"{len(missing - self.tracker.posted.keys())} without a parent message)",
                    stack.logs(),
                )
        after, busy_after, t_after = self._cpu_snapshot(stack), machine_busy(), time.monotonic()
        self._check_once(stack, kind, label, set(tokens))
        return Batch(
            sent=sent,
            tokens=tokens,
            answered={t: self.tracker.answered[t] for t in tokens},
            posted={t: self.tracker.posted[t] for t in tokens if t in self.tracker.posted},
            cpu=cpu_delta(before, after),
            busy=busy_after - busy_before,
            between=t_after - t_before,
            connection_failures=failures,
        )

    def _check_once(self, stack: Stack, kind: str, label: str, tokens: set[str]) -> None:
        tracker = self.tracker
        failed = tokens & tracker.failed
        twice = {t for t in tokens if len(tracker.answers[t]) > 1 or tracker.parents[t] > 1}
        if failed or twice:
            raise BenchFailure(
                f"{kind} {label}: {len(failed)} tasks failed, {len(twice)} answered or posted "
                f"more than once, of {len(tokens)}",
                stack.logs(),
            )
        if tracker.orphans:
            self.warnings.append(f"{kind} {label}: {tracker.orphans} replies in unknown threads")

    # -- the phases: each returns one run's figures

    def _burst(self, kind: str, label: str, count: int, latency: float) -> dict[str, Any]:
        with self.stack(kind, label, latency) as (stack, memory):
            batch = self.batch(stack, kind, label, count)
        acks = [s.elapsed for s in batch.sent if s.status == 200 and not s.error]
        return {
            "tasks": len(batch.tokens),
            "wall_s": batch.wall,
            "tasks_per_s": len(batch.tokens) / batch.wall,
            "ack_p99_ms": pct(acks, 99) * 1000,
            "ack_max_ms": max(acks) * 1000,
            "acks_over_3s": sum(a > SLACK_ACK_LIMIT for a in acks),
            "not_acked": batch.not_acked,
            "connection_failures": len(batch.connection_failures),
            "all_acked_s": max(s.sent + s.elapsed for s in batch.sent) - batch.first_sent,
            "all_posted_s": max(batch.posted.values()) - batch.first_sent,
            **_cpu_figures(batch),
            **memory,
        }

    def phase_wall(self, kind: str, label: str) -> dict[str, Any]:
        args = self.args
        result = self._burst(kind, label, args.tasks, args.latency)
        ideal = args.tasks * args.latency / args.concurrency
        result.update(ideal_s=ideal, wall_over_ideal=result["wall_s"] / ideal if ideal else None)
        return result

    def phase_throughput(self, kind: str, label: str) -> dict[str, Any]:
        return self._burst(kind, label, self.args.throughput_tasks, 0.0)

    def phase_ack(self, kind: str, label: str) -> dict[str, Any]:
        args = self.args
        with self.stack(kind, label, args.latency) as (stack, memory):
            batch = self.batch(stack, kind, label, args.ack_count, rate=args.ack_rate)
        acks = [s.elapsed * 1000 for s in batch.tokens.values()]
        return {
            "tasks": len(batch.tokens),
            "rate_per_s": args.ack_rate,
            "ack_p50_ms": pct(acks, 50),
            "ack_p99_ms": pct(acks, 99),
            "not_acked": batch.not_acked,
            "connection_failures": len(batch.connection_failures),
            "send_late_p99_ms": pct([(s.sent - s.due) * 1000 for s in batch.sent], 99),
            **_cpu_figures(batch),
            **memory,
        }

    def phase_overhead(self, kind: str, label: str) -> dict[str, Any]:
        args = self.args
        assert self.clock is not None
        rate = args.concurrency / args.latency / 2 if args.latency > 0 else args.ack_rate
        with self.stack(kind, label, args.latency) as (stack, memory):
            batch = self.batch(stack, kind, label, args.overhead_count, rate=rate)
        overhead, to_parent, to_claude, from_claude = [], [], [], []
        for token, s in batch.tokens.items():
            spans = self.clock.of(s.prompt) if self.clock.exact else []
            claude = sum(end - start for start, end in spans) if spans else args.latency
            answered = batch.answered[token]
            overhead.append((answered - s.sent - claude) * 1000)
            if token in batch.posted:
                to_parent.append((batch.posted[token] - s.sent) * 1000)
            if spans:
                to_claude.append((spans[0][0] - s.sent) * 1000)
                from_claude.append((answered - spans[-1][1]) * 1000)
        return {
            "tasks": len(batch.tokens),
            "rate_per_s": rate,
            "overhead_p50_ms": pct(overhead, 50),
            "overhead_p99_ms": pct(overhead, 99),
            "to_parent_p50_ms": pct(to_parent, 50),
            "to_claude_p50_ms": pct(to_claude, 50),
            "claude_to_answer_p50_ms": pct(from_claude, 50),
            "not_acked": batch.not_acked,
            "connection_failures": len(batch.connection_failures),
            **_cpu_figures(batch),
            **memory,
        }


def _cpu_figures(batch: Batch) -> dict[str, Any]:
    tasks = len(batch.tokens)
    other = batch.busy - sum(batch.cpu.values())
    return {
        "cpu_s": batch.stack_cpu,
        "cpu_ms_per_task": batch.stack_cpu * 1000 / tasks,
        "cpu_by_role_s": batch.cpu,
        "broker_ms_per_task": batch.cpu.get("broker", 0.0) * 1000 / tasks,
        "other_ms_per_task": other * 1000 / tasks,
        "machine_busy_pct": 100 * batch.busy / batch.between / (os.cpu_count() or 1),
    }


def brief(result: dict[str, Any]) -> str:
    """One run's headline figure, for the progress lines."""
    keys = ("wall_over_ideal", "tasks_per_s", "ack_p50_ms", "overhead_p50_ms")
    key = next(k for k in keys if k in result)
    return f"{key} {result[key]:.3f} · peak RSS {result.get('peak_rss_mib', 0):.0f} MiB"


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Spread:
    """The median of a figure over repetitions, with its lowest and highest values."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread | None:
        found = [v for v in values if v is not None]
        if not found:
            return None
        return cls(statistics.median(found), min(found), max(found), len(found))

    def cell(self, digits: int) -> str:
        if self.count == 1:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


@dataclass(frozen=True)
class Row:
    """One figure of the table: its label, each side's spread, the digits it is shown with."""

    label: str
    peer: Spread | None
    aico: Spread | None
    digits: int = 1


def ratio(aico: Spread | None, peer: Spread | None) -> str:
    """aico's median ÷ the peer's, or a dash when either is missing or the peer's is 0."""
    if aico is None or peer is None or not peer.median:
        return "—"
    return f"{aico.median / peer.median:.2f}"


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| figure | peer (median, min-max) | aico (median, min-max) | aico ÷ peer |",
        "|---|---|---|---|",
    ]
    for row in rows:
        peer = row.peer.cell(row.digits) if row.peer else "n/a"
        aico = row.aico.cell(row.digits) if row.aico else "n/a"
        lines.append(f"| {row.label} | {peer} | {aico} | {ratio(row.aico, row.peer)} |")
    return "\n".join(lines)


def per_rep(runs: list[dict[str, Any]], kind: str, phase: str, key: str) -> list[float]:
    """The figure `key` of each repetition of `phase` by `kind`, in order."""
    found = [r for r in runs if r["kind"] == kind and r["phase"] == phase and key in r]
    return [r[key] for r in sorted(found, key=lambda r: r["rep"])]


def cpu_per_task(runs: list[dict[str, Any]], kind: str) -> list[float]:
    """Per repetition: the stack's CPU over the CPU phases ÷ their tasks, in ms."""
    by_rep: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in runs:
        if r["kind"] == kind and r["phase"] in CPU_PHASES:
            by_rep[r["rep"]][0] += r["cpu_s"]
            by_rep[r["rep"]][1] += r["tasks"]
    return [cpu * 1000 / tasks for _, (cpu, tasks) in sorted(by_rep.items()) if tasks]


def peak_memory(runs: list[dict[str, Any]], kind: str, key: str = "peak_rss_mib") -> list[float]:
    """Per repetition: the highest peak (RSS, or `key`) of `kind`'s stacks over the phases, in
    MiB."""
    by_rep: dict[int, float] = defaultdict(float)
    for r in runs:
        if r["kind"] == kind and r.get(key) is not None:
            by_rep[r["rep"]] = max(by_rep[r["rep"]], r[key])
    return [v for _, v in sorted(by_rep.items())]


def table_rows(runs: list[dict[str, Any]], config: dict[str, Any]) -> list[Row]:
    latency_ms = config["latency_s"] * 1000
    c = config["concurrency"]

    def row(label: str, phase: str, key: str, digits: int = 1) -> Row | None:
        peer, aico = (Spread.of(per_rep(runs, k, phase, key)) for k in ("peer", "aico"))
        return Row(label, peer, aico, digits) if peer or aico else None

    candidates = [
        row(f"wall ÷ ideal, {config['tasks']} tasks, Claude {latency_ms:.0f} ms, C = {c}",
            "wall", "wall_over_ideal", 3),
        row(f"tasks/s end to end, {config['throughput_tasks']} tasks, Claude 0 ms",
            "throughput", "tasks_per_s", 0),
        row(f"ack p99 during that {config['throughput_tasks']}-task burst, ms",
            "throughput", "ack_p99_ms", 0),
        row(f"ack p50 at {config['ack_rate']:g} slash commands/s, ms", "ack", "ack_p50_ms"),
        row(f"ack p99 at {config['ack_rate']:g} slash commands/s, ms", "ack", "ack_p99_ms"),
        row(f"overhead p50 (answer in thread - command - Claude), {config['overhead_rate']:g}/s"
            ", ms", "overhead", "overhead_p50_ms"),
        row(f"overhead p99, {config['overhead_rate']:g}/s, ms", "overhead", "overhead_p99_ms"),
    ]  # fmt: skip
    rows = [r for r in candidates if r is not None]
    peer, aico = (Spread.of(cpu_per_task(runs, k)) for k in ("peer", "aico"))
    if peer or aico:
        phases = "+".join(p for p in CPU_PHASES if p in config["phases"])
        rows.append(Row(f"CPU per task, all processes of the stack ({phases}), ms", peer, aico, 2))
    peer, aico = (Spread.of(peak_memory(runs, k)) for k in ("peer", "aico"))
    if peer or aico:
        rows.append(Row("peak memory of the whole stack (RSS), MiB", peer, aico, 0))
    peer, aico = (Spread.of(peak_memory(runs, k, "peak_pss_mib")) for k in ("peer", "aico"))
    if peer or aico:  # forked processes share pages that RSS counts in each of them
        rows.append(Row("  the same in PSS (shared pages split), MiB", peer, aico, 0))
    return rows


def report(runs: list[dict[str, Any]], config: dict[str, Any], warnings: list[str]) -> str:
    lines = [
        f"aico vs the peer · {config['cpus']} CPUs · C = {config['concurrency']} for both · "
        f"{config['reps']} interleaved repetition(s) · broker: {config['broker']} · "
        f"build {config['build']}",
        "",
        markdown_table(table_rows(runs, config)),
    ]
    lines += _burst_lines(runs)
    lines += _detail_lines(runs)
    for run in runs:
        if run.get("other_ms_per_task", 0) > max(0.5, 0.1 * run.get("cpu_ms_per_task", 0)):
            lines.append(
                f"NOTE: {run['kind']} {run['phase']} #{run['rep'] + 1}: other processes used "
                f"{run['other_ms_per_task']:.1f} ms CPU per task: its figures are disturbed"
            )
    lines += [f"WARNING: {w.splitlines()[0]}" for w in warnings]
    return "\n".join(lines)


def _burst_lines(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["", "requests refused or reset during the burst, per run (and acks over 3 s):"]
    for kind in ("peer", "aico"):
        cells = [
            f"{r['not_acked'] + r['connection_failures']} ({r['acks_over_3s']})"
            for r in sorted(runs, key=lambda r: r["rep"])
            if r["kind"] == kind and r["phase"] == "throughput"
        ]
        lines.append(f"  {kind}: {', '.join(cells) or 'n/a'}")
    others = {
        kind: sum(
            r["not_acked"] + r["connection_failures"]
            for r in runs
            if r["kind"] == kind and r["phase"] != "throughput"
        )
        for kind in ("peer", "aico")
    }
    lines.append(f"  in the other phases, all runs: peer {others['peer']}, aico {others['aico']}")
    return lines


def _detail_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Medians that help read the table: where the time and the CPU go."""
    lines = ["", "| detail (medians) | peer | aico |", "|---|---|---|"]
    details = [
        ("throughput: all acked / all parents posted, s", "throughput", ("all_acked_s",
         "all_posted_s"), 2),
        ("overhead: command → parent posted p50, ms", "overhead", ("to_parent_p50_ms",), 1),
        ("overhead: command → Claude called p50, ms", "overhead", ("to_claude_p50_ms",), 1),
        ("overhead: Claude answered → answer posted p50, ms", "overhead",
         ("claude_to_answer_p50_ms",), 1),
        ("broker CPU per task, wall / throughput (not counted), ms", None,
         ("broker_ms_per_task",), 2),
    ]  # fmt: skip
    for label, phase, keys, digits in details:
        cells = []
        for kind in ("peer", "aico"):
            values = []
            for key in keys:
                phases = [phase] if phase else list(CPU_PHASES)
                for p in phases:
                    spread = Spread.of(per_rep(runs, kind, p, key))
                    values.append(f"{spread.median:.{digits}f}" if spread else "n/a")
            cells.append(" / ".join(values))
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    rss = [_rss_by_role(runs, kind) for kind in ("peer", "aico")]
    lines.append(f"| peak RSS by process, MiB | {rss[0]} | {rss[1]} |")
    by_role = [_by_role(runs, kind) for kind in ("peer", "aico")]
    lines.append(f"| CPU per task by process (wall+throughput), ms | {by_role[0]} | {by_role[1]} |")
    return lines


def _rss_by_role(runs: list[dict[str, Any]], kind: str) -> str:
    """Each process's peak RSS: the highest over a repetition's runs, the median over reps."""
    peaks: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for r in runs:
        for role, mib in r.get("peak_rss_by_process_mib", {}).items() if r["kind"] == kind else ():
            peaks[role][r["rep"]] = max(peaks[role][r["rep"]], mib)
    cells = [
        f"{role} {statistics.median(reps.values()):.0f}" for role, reps in sorted(peaks.items())
    ]
    return ", ".join(cells) or "n/a"


def _by_role(runs: list[dict[str, Any]], kind: str) -> str:
    cpu: dict[str, float] = defaultdict(float)
    tasks = 0
    for r in runs:
        if r["kind"] == kind and r["phase"] in CPU_PHASES:
            tasks += r["tasks"]
            for role, seconds in r["cpu_by_role_s"].items():
                if role not in NOT_AICO:
                    cpu[role] += seconds
    if not tasks:
        return "n/a"
    return ", ".join(f"{role} {s * 1000 / tasks:.2f}" for role, s in sorted(cpu.items()))


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(prog="python -m bench.versus", description=__doc__.split("\n")[0])
    cli.add_argument("--reps", type=int, default=3, help="repetitions of each phase (3)")
    cli.add_argument(
        "--peer",
        type=Path,
        default=DEFAULT_PEER,
        help="the peer's sources (../shared/peer_pipeline)",
    )
    cli.add_argument(
        "--peer-venv", type=Path, default=DEFAULT_PEER_VENV, help="its venv (bench/.peer-venv)"
    )
    cli.add_argument("--tasks", type=int, help="tasks of the wall ÷ ideal phase (200)")
    cli.add_argument("--throughput-tasks", type=int, help="tasks of the throughput burst (500)")
    cli.add_argument("--latency", type=float, default=0.2, help="Claude's latency, seconds")
    cli.add_argument("--concurrency", type=int, default=8, help="C, Claude calls in flight")
    cli.add_argument("--ack-rate", type=float, default=50.0, help="commands per second")
    cli.add_argument("--ack-count", type=int, help="commands of the ack phase (200)")
    cli.add_argument("--overhead-count", type=int, help="tasks of the overhead phase (200)")
    cli.add_argument("--senders", type=int, default=8, help="keep-alive connections of a burst")
    cli.add_argument("--warmup", type=int, help="unmeasured tasks per stack (16)")
    cli.add_argument("--phases", default=",".join(PHASES), help=f"comma list of {PHASES}")
    cli.add_argument("--quick", action="store_true", help="small numbers: " + str(QUICK))
    cli.add_argument("--amqp-url", default="", help="an existing broker instead of a private node")
    cli.add_argument("--json", type=Path, help="also write the JSON line to this file")
    cli.add_argument("--timeout", type=float, default=60.0, help="stall limit, seconds")
    cli.add_argument("--log-level", default="WARNING", help="AICO_LOG_LEVEL of aico's stack")
    cli.add_argument("--rss-only", action="store_true", help="sample RSS only, not USS/PSS")
    cli.add_argument("--keep", action="store_true", help="keep each stack's logs and data")
    args = cli.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        cli.error(f"unknown phase(s) {sorted(unknown)}; choose from {','.join(PHASES)}")
    if args.reps < 1:
        cli.error("--reps must be at least 1")
    return args


def config_of(args: argparse.Namespace, node: RabbitNode | None) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "reps": args.reps,
        "phases": args.phases,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "tasks": args.tasks,
        "throughput_tasks": args.throughput_tasks,
        "ack_rate": args.ack_rate,
        "ack_count": args.ack_count,
        "overhead_count": args.overhead_count,
        "overhead_rate": args.concurrency / args.latency / 2 if args.latency else args.ack_rate,
        "warmup": args.warmup,
        "broker": "private node" if node else "--amqp-url",
        "build": build_id(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    failure: Exception | None = None
    try:
        peer = ensure_peer(args.peer, args.peer_venv)
    except (BenchFailure, subprocess.CalledProcessError, OSError) as exc:
        print(f"FAILED: the peer could not be installed: {exc}", file=sys.stderr)
        return 1
    versus = Versus(args, peer)
    try:
        versus.start()
        versus.run_all()
    except Exception as exc:  # a stack (or the node) failed: report what was measured
        failure = exc
        if not isinstance(exc, BenchFailure):
            traceback.print_exc()
    finally:
        versus.close()
    config = config_of(args, versus.node)
    print(report(versus.runs, config, versus.warnings))
    warnings = [w.splitlines()[0] for w in versus.warnings]
    results = {"config": config, "runs": versus.runs, "warnings": warnings}
    line = json.dumps(results, separators=(",", ":"), default=str)
    print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(line + "\n")
    for warning in versus.warnings:
        print(f"\n{warning}", file=sys.stderr)
    if failure is not None:
        print(f"\nFAILED: {failure}\n\n{getattr(failure, 'logs', '')}", file=sys.stderr)
        return 1
    return 1 if versus.warnings else 0


if __name__ == "__main__":
    sys.exit(main())
