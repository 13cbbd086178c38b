"""The bot's HTTP intake under a slowloris: aico and its peer (Bolt on gunicorn), side by side.

    .venv/bin/python -m bench.hostile [--connections 300] [--commands 100] [--rate 10]
                                      [--reps 2] [--kinds aico,peer] [--peer DIR]
                                      [--peer-venv DIR] [--amqp-url URL] [--json PATH]

One private RabbitMQ node (or --amqp-url), one FakeSlack and one FakeClaude serve every run. For
each repetition, a fresh aico stack from aico's Procfile, then a fresh peer stack from the peer's
Procfile (installed as bench/versus.py installs it), each on a fresh vhost and warmed up with a
few commands. Then:

slowloris  --connections sockets that each send half a request (the request line and a few
           headers) and then one more header byte every second, never finishing. One closed by
           the server is opened again at once, as attack tools do: the attack holds its number.
commands   meanwhile, --commands signed `/aico task …` slash commands at --rate a second (open
           loop), each on a new connection (as a first request from Slack comes) with Slack's
           3 s patience and no retry (Slack does not retry a slash command).

Printed for each stack: how many commands were acked (HTTP 200), timed out at 3 s, or refused or
reset; the acks' p50 / p99 / max; and the slowloris connections that were open on average while
the commands went, with how many the server closed. No figure is checked against a target.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aico.fakes.anthropic import FakeClaude
from aico.fakes.signing import FORM_CT, sign, slash_command_body
from aico.fakes.slack import FakeSlack
from aico.rabbit_node import RabbitNode
from bench.e2e import CHANNEL, BenchFailure, aico_settings, build_id, pct, tear_down
from bench.versus import DEFAULT_PEER, DEFAULT_PEER_VENV, PeerInstall, PeerStack, ensure_peer
from core.config import DEFAULT_MODEL
from tests.integration.stack import BOT_TOKEN, SIGNING_SECRET, Stack, fresh_vhost

KINDS = ("aico", "peer")
SLACK_PATIENCE = 3.0  # seconds Slack waits for a slash command's answer
WARMUP = 3
HALF_REQUEST = (
    b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Type: " + FORM_CT.encode() + b"\r\n"
    b"X-Slack-Request-Timestamp: 1\r\nX-Hold: "
)
DRIBBLE_EVERY = 1.0  # seconds between two bytes of a slowloris connection


class Slowloris(threading.Thread):
    """Holds `count` half-sent requests open against 127.0.0.1:`port`, dribbling a byte into
    each every DRIBBLE_EVERY seconds and replacing each one the server closes."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__(name="slowloris", daemon=True)
        self.port, self.count = port, count
        self.open: list[socket.socket] = []
        self.closed_by_server = 0
        self.failed_to_open = 0
        self.samples: list[int] = []
        self.error: Exception | None = None
        self._done = threading.Event()

    def fill(self) -> None:
        while len(self.open) < self.count and not self._done.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=2.0)
                sock.sendall(HALF_REQUEST)
                sock.setblocking(False)
                self.open.append(sock)
            except OSError:
                self.failed_to_open += 1
                return

    def run(self) -> None:
        try:
            self._attack()
        except Exception as exc:  # the figures would be of no attack: say so
            self.error = exc

    def _attack(self) -> None:
        next_byte = time.monotonic() + DRIBBLE_EVERY
        while not self._done.is_set():
            self._reap(timeout=0.1)
            if time.monotonic() >= next_byte:
                next_byte += DRIBBLE_EVERY
                for sock in list(self.open):
                    try:
                        sock.send(b"a")
                    except OSError:
                        self._drop(sock)
            self.fill()

    def _reap(self, timeout: float) -> None:
        """Drop the connections the server closed (or answered, which ends them too)."""
        if not self.open:
            self._done.wait(timeout)
            return
        poll = select.poll()  # select() takes no descriptor above 1024
        by_fd = {sock.fileno(): sock for sock in self.open}
        for fd in by_fd:
            poll.register(fd, select.POLLIN)
        for fd, _event in poll.poll(timeout * 1000):
            self._drop(by_fd[fd])

    def _drop(self, sock: socket.socket) -> None:
        if sock in self.open:
            self.open.remove(sock)
            self.closed_by_server += 1
            sock.close()

    def sample(self) -> None:
        self.samples.append(len(self.open))

    def stop(self) -> None:
        self._done.set()
        self.join(10)
        for sock in self.open:
            sock.close()


@dataclass
class Command:
    status: int = 0
    elapsed: float = 0.0
    outcome: str = ""  # "acked", "timed out", "refused or reset", "status N"


def one_command(port: int, text: str, response_url: str) -> Command:
    """A signed slash command on a new connection, with Slack's patience and no retry."""
    body = slash_command_body(text, channel_id=CHANNEL, response_url=response_url)
    headers = {"Content-Type": FORM_CT, **sign(SIGNING_SECRET, body)}
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SLACK_PATIENCE)
    result = Command()
    try:
        conn.request("POST", "/slack/events", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        result.status = response.status
        result.outcome = "acked" if response.status == 200 else f"status {response.status}"
    except TimeoutError:
        result.outcome = "timed out"
    except (OSError, http.client.HTTPException):
        result.outcome = "refused or reset"
    finally:
        result.elapsed = time.perf_counter() - started
        conn.close()
    return result


@dataclass
class Hostile:
    args: argparse.Namespace
    peer: PeerInstall | None
    node: RabbitNode | None = None
    slack: FakeSlack | None = None
    claude: FakeClaude | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _dirs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        if not self.args.amqp_url:
            base = Path(tempfile.mkdtemp(prefix="aico-hostile-rabbit-"))
            self._dirs.append(base)
            self.node = RabbitNode(base)
            self.node.start()
        self.slack = FakeSlack(bot_token=BOT_TOKEN).start()
        self.claude = FakeClaude(latency=0.0).start()

    def close(self) -> None:
        steps = [fake.stop for fake in (self.claude, self.slack) if fake is not None]
        steps += [self.node.stop] if self.node else []
        tear_down(steps, self._dirs, self.warnings)

    def run_all(self) -> None:
        for rep in range(self.args.reps):
            for kind in self.args.kinds:
                started = time.monotonic()
                result = {"kind": kind, "rep": rep, **self.run(kind, f"r{rep}")}
                self.runs.append(result)
                print(
                    f"[{kind} {rep + 1}/{self.args.reps}] acked {result['acked']}/"
                    f"{result['commands']}, p99 {_ms(result['ack_p99_ms'])} ms "
                    f"({time.monotonic() - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )

    @contextlib.contextmanager
    def stack(self, kind: str, label: str) -> Iterator[Stack]:
        assert self.slack is not None and self.claude is not None
        self.slack.reset()
        workdir = Path(tempfile.mkdtemp(prefix=f"aico-hostile-{kind}-{label}-"))
        amqp_url = self.args.amqp_url or fresh_vhost(self.node)  # type: ignore[arg-type]
        stack: Stack
        if kind == "aico":
            settings = aico_settings(1, 8, self.args.log_level)
            stack = Stack(workdir, amqp_url, self.slack, self.claude, **settings)
        else:
            assert self.peer is not None
            settings = {"PEER_CONCURRENCY": "8", "AICO_MODEL": DEFAULT_MODEL}
            stack = PeerStack(workdir, amqp_url, self.slack, self.claude, self.peer, **settings)
        try:
            stack.start(timeout=60)
            yield stack
        finally:
            codes = stack.stop()
            bad = {name: code for name, code in codes.items() if code != 0}
            if bad:
                self.warnings.append(f"{kind} {label}: processes exited {bad}\n{stack.logs()}")
            shutil.rmtree(workdir, ignore_errors=True)

    def run(self, kind: str, label: str) -> dict[str, Any]:
        assert self.slack is not None
        args = self.args
        with self.stack(kind, label) as stack:
            for i in range(WARMUP):
                warm = one_command(stack.port, f"task warm-up {i}", self._url())
                if warm.outcome != "acked":
                    raise BenchFailure(f"{kind}: a warm-up command was {warm.outcome}")
            attack = Slowloris(stack.port, args.connections)
            attack.fill()
            attack.start()
            try:
                commands = self._commands(stack.port, attack)
            finally:
                attack.stop()
            if attack.error is not None:
                raise BenchFailure(f"{kind}: the slowloris broke down: {attack.error!r}")
        acks = [c.elapsed * 1000 for c in commands if c.outcome == "acked"]
        outcomes = [c.outcome for c in commands]
        return {
            "connections": args.connections,
            "commands": len(commands),
            "acked": outcomes.count("acked"),
            "timed_out": outcomes.count("timed out"),
            "refused_or_reset": outcomes.count("refused or reset"),
            "other_status": sum(o.startswith("status") for o in outcomes),
            "ack_p50_ms": pct(acks, 50) if acks else None,
            "ack_p99_ms": pct(acks, 99) if acks else None,
            "ack_max_ms": max(acks) if acks else None,
            "slowloris_open_mean": statistics.fmean(attack.samples) if attack.samples else 0,
            "slowloris_closed_by_server": attack.closed_by_server,
            "slowloris_failed_to_open": attack.failed_to_open,
        }

    def _commands(self, port: int, attack: Slowloris) -> list[Command]:
        args = self.args
        prompts = [(f"task hostile command {i}", self._url()) for i in range(args.commands)]
        with ThreadPoolExecutor(max_workers=min(64, args.commands)) as pool:
            t0 = time.perf_counter()
            futures = []
            for i, (text, url) in enumerate(prompts):
                if (delay := t0 + i / args.rate - time.perf_counter()) > 0:
                    time.sleep(delay)
                attack.sample()
                futures.append(pool.submit(one_command, port, text, url))
            return [future.result() for future in futures]

    def _url(self) -> str:
        assert self.slack is not None
        return self.slack.new_response_url(channel=CHANNEL)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report(runs: list[dict[str, Any]], config: dict[str, Any]) -> str:
    lines = [
        f"hostile intake: {config['connections']} slowloris connections (half a request, one "
        f"more byte a second, re-opened when closed); {config['commands']} signed slash commands "
        f"at {config['rate']:g}/s, each on a new connection, {SLACK_PATIENCE:g} s client timeout, "
        f"no retry; {config['reps']} repetition(s), build {config['build']}",
        "",
        "| stack | acked | timed out at 3 s | refused/reset | ack p50 ms | ack p99 ms | ack max ms "
        "| slowloris open (mean) | closed by server |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run['kind']} | {run['acked']}/{run['commands']} | {run['timed_out']} "
            f"| {run['refused_or_reset']} | {_ms(run['ack_p50_ms'])} | {_ms(run['ack_p99_ms'])} "
            f"| {_ms(run['ack_max_ms'])} | {run['slowloris_open_mean']:.0f} "
            f"| {run['slowloris_closed_by_server']} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    about = __doc__.split("\n")[0]
    cli = argparse.ArgumentParser(prog="python -m bench.hostile", description=about)
    cli.add_argument("--connections", type=int, default=300, help="slowloris connections (300)")
    cli.add_argument("--commands", type=int, default=100, help="signed slash commands (100)")
    cli.add_argument("--rate", type=float, default=10.0, help="commands per second (10)")
    cli.add_argument("--reps", type=int, default=2, help="repetitions, interleaved (2)")
    cli.add_argument("--kinds", default=",".join(KINDS), help="aico,peer or one of them")
    cli.add_argument("--peer", type=Path, default=DEFAULT_PEER, help="the peer's sources")
    cli.add_argument("--peer-venv", type=Path, default=DEFAULT_PEER_VENV, help="its venv")
    cli.add_argument("--amqp-url", default="", help="an existing broker instead of a private node")
    cli.add_argument("--log-level", default="WARNING", help="AICO_LOG_LEVEL of aico's stack")
    cli.add_argument("--json", type=Path, help="also write the JSON line to this file")
    args = cli.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if set(args.kinds) - set(KINDS) or not args.kinds:
        cli.error(f"--kinds: choose from {','.join(KINDS)}")
    if args.reps < 1 or args.commands < 1 or args.rate <= 0 or args.connections < 0:
        cli.error("--reps, --commands and --rate must be positive, --connections not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    peer = None
    if "peer" in args.kinds:
        try:
            peer = ensure_peer(args.peer, args.peer_venv)
        except (BenchFailure, subprocess.CalledProcessError, OSError) as exc:
            print(f"FAILED: the peer could not be installed: {exc}", file=sys.stderr)
            return 1
    bench = Hostile(args, peer)
    failure: Exception | None = None
    try:
        bench.start()
        bench.run_all()
    except Exception as exc:
        failure = exc
        if not isinstance(exc, BenchFailure):
            traceback.print_exc()
    finally:
        bench.close()
    config = {
        "connections": args.connections,
        "commands": args.commands,
        "rate": args.rate,
        "reps": args.reps,
        "build": build_id(),
    }
    print(report(bench.runs, config))
    line = json.dumps({"config": config, "runs": bench.runs}, separators=(",", ":"))
    print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(line + "\n")
    for warning in bench.warnings:
        print(f"\n{warning}", file=sys.stderr)
    if failure is not None:
        print(f"\nFAILED: {failure}\n\n{getattr(failure, 'logs', '')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
