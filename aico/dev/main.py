"""`aico dev`: the whole stack on one machine, for a first run on a laptop.

What it brings up, from the environment (the same variables as production, see DESIGN.md):

- Broker: `AICO_AMQP_URL` when something listens there; otherwise a private RabbitMQ node under
  `AICO_DATA_DIR` (`rabbitmq/`), stopped on exit. When we are root and the `rabbitmq` user cannot
  reach the data dir (a private home directory), the node lives under the temp dir instead.
- Claude: the real API with `ANTHROPIC_API_KEY`; without it the project's fake Messages API,
  whose answers are labelled "[offline model]", so the whole path still runs. It takes
  OFFLINE_LATENCY seconds to answer, half before its first word and half writing, so that an
  answer visibly streams (progress is reported from 0.5 s into an answer, then every second).
- Slack: real Slack with `SLACK_BOT_TOKEN` (the processes then write to this terminal);
  without it the project's fake Slack Web API, subscribed to the manifest's events (the stop
  button's `agent_session_stopped` included), and a console on stdin/stdout (console.py): a
  `/aico …` line, a mention, a reply, a DM, an attached file, a button pressed is sent to the bot
  exactly as Slack would send it, and what the bot posts, streams or updates is printed as Slack
  would show it; the processes log to `<data dir>/logs/`.

Then the Procfile's processes (bot, pm, result) run until `quit`, end of input, Ctrl-C or SIGTERM,
and everything this command started is stopped. The fakes of Slack and Claude are the ones the
tests use (`aico.fakes`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aico.dev.console import (
    CHANNEL_NAME,
    EXAMPLE,
    USER_NAME,
    Console,
    Output,
    describe_exits,
    exited,
    tails,
)
from aico.fakes.anthropic import FakeClaude
from aico.fakes.signing import SlackSender
from aico.fakes.slack import SUBSCRIBED_EVENTS, FakeSlack
from aico.procfile import ProcessGroup
from aico.rabbit_node import NODE_USER, NOT_INSTALLED, RabbitNode, is_installed
from core.config import Settings
from core.errors import AicoError, ConfigError

log = logging.getLogger(__name__)

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
OFFLINE_LABEL = "[offline model]"
OFFLINE_MODEL = "aico-offline"  # what its receipts name; priced at nothing: Claude is not asked
OFFLINE_NOTICE = (
    f"No ANTHROPIC_API_KEY: using the offline model; answers are labelled {OFFLINE_LABEL}"
)
READY_TIMEOUT = 60.0  # seconds for the bot to answer /healthz
OFFLINE_LATENCY = 3.0  # seconds the offline model takes to answer (see the docstring)
# The bot events the fake Slack sends, as manifest.yml subscribes them.
BOT_EVENTS = SUBSCRIBED_EVENTS | {"agent_session_stopped"}


class DevError(AicoError):
    """`aico dev` cannot go on; the message says why and what to do."""


def main() -> int:
    """Bring the stack up, run the console (or wait), stop everything; the exit code."""
    out = Output(sys.stdout)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    with contextlib.ExitStack() as cleanup:
        dev = Dev(out, cleanup)
        try:
            return dev.run()
        except DevError as exc:
            out.say(f"aico dev: {exc}")
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            _ignore_interrupts()  # a second Ctrl-C must not cut the shutdown short
            if dev.running:
                out.say("aico dev: stopping…")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _ignore_interrupts() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


# --------------------------------------------------------------------------- bringing it up


class Dev:
    """One `aico dev` run: what it started is registered in `cleanup`, stopped in reverse."""

    def __init__(self, out: Output, cleanup: contextlib.ExitStack) -> None:
        self.out = out
        self.cleanup = cleanup
        self.started = time.monotonic()
        self.env = dict(os.environ)  # what the processes get, with what dev adds
        self.settings = Settings()
        self.broker = ""  # what the banner says about the broker
        self.running = False  # whether anything was started that must be stopped

    @property
    def console(self) -> bool:
        return not self.settings.slack_bot_token

    @property
    def offline(self) -> bool:
        return not self.settings.anthropic_api_key

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def run(self) -> int:
        self._read_settings()
        self._prepare_env()
        self._check_settings()
        self._ensure_broker()
        if self.offline:
            self._start_offline_model()
        slack = self._start_fake_slack() if self.console else None
        group = self._start_processes()
        if slack is None:
            return self._serve_real_slack(group)
        self._wait_ready(group)
        self._banner()
        return Console(self.out, slack, SlackSender, self.env, group, self.data_dir).run()

    def _on_exit(self, stop: Any, *args: Any) -> None:
        """Stop this on the way out (in reverse order of starting)."""
        if not self.running:
            self.running = True
            self.cleanup.callback(self.out.say, "aico dev: stopped")
        self.cleanup.callback(stop, *args)

    def _read_settings(self) -> None:
        try:
            settings = Settings.from_env(None, self.env)
        except ConfigError as exc:
            raise DevError(str(exc)) from exc
        self.settings = replace(settings, data_dir=settings.data_dir.resolve())

    def _prepare_env(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env["AICO_DATA_DIR"] = str(self.data_dir)
        if self.console:  # slack_sdk ignores NO_PROXY: it would send 127.0.0.1 to the proxy
            for name in PROXY_VARS:
                self.env.pop(name, None)
        elif self.offline:  # the anthropic SDK honours NO_PROXY; real Slack keeps the proxy
            hosts = [h for h in self.env.get("NO_PROXY", "").split(",") if h]
            self.env["NO_PROXY"] = ",".join([*hosts, "127.0.0.1", "localhost"])

    # ---- broker

    def _ensure_broker(self) -> None:
        url = self.settings.amqp_url
        if broker_reachable(url):
            self.broker = redact(url)
            return
        if not is_installed():
            raise DevError(f"nothing answers at AICO_AMQP_URL ({redact(url)}) and {NOT_INSTALLED}")
        self.out.say(f"Nothing answers at {redact(url)}: starting a private RabbitMQ node…")
        node = self._start_node(self._node_dir())
        self.env["AICO_AMQP_URL"] = node.url
        self.broker = f"{redact(node.url)} (private node in {node.base_dir}, stopped on exit)"

    def _node_dir(self) -> Path:
        if node_user_can_enter(self.data_dir):
            return self.data_dir / "rabbitmq"
        fallback = private_node_dir(self.data_dir)
        self.out.say(
            f"The {NODE_USER} user cannot reach {self.data_dir} (a parent directory is "
            f"private), so the node keeps its data in {fallback}"
        )
        return fallback

    def _start_node(self, base_dir: Path) -> RabbitNode:
        name = "aico-dev-" + hashlib.sha256(str(base_dir).encode()).hexdigest()[:8]
        node = RabbitNode(base_dir, name=name)
        self._on_exit(self._stop_node, node)
        began = time.monotonic()
        try:
            node.start()
        except AicoError as exc:
            raise DevError(f"the private RabbitMQ node did not start: {exc}") from exc
        self.out.say(f"RabbitMQ node up at {redact(node.url)} in {time.monotonic() - began:.1f} s")
        return node

    def _stop_node(self, node: RabbitNode) -> None:
        self.out.say("Stopping the private RabbitMQ node…")
        node.stop()

    # ---- Claude and Slack

    def _start_offline_model(self) -> None:
        self.out.say(OFFLINE_NOTICE)
        models = (OFFLINE_MODEL,)
        claude = FakeClaude(label=OFFLINE_LABEL, latency=OFFLINE_LATENCY, models=models)
        claude.tool_answers["plan_project"] = offline_plan
        claude.start()
        self._on_exit(claude.stop)
        self.env["ANTHROPIC_BASE_URL"] = claude.url
        self.env["ANTHROPIC_API_KEY"] = "offline-model-placeholder"
        self.env["AICO_MODEL"] = OFFLINE_MODEL
        prices = self.env.get("AICO_PRICES", "")
        self.env["AICO_PRICES"] = (
            f"{prices},{OFFLINE_MODEL}=0/0" if prices else f"{OFFLINE_MODEL}=0/0"
        )

    def _start_fake_slack(self) -> FakeSlack:
        token = "xoxb-dev-" + secrets.token_hex(8)
        slack = FakeSlack(bot_token=token, bot_events=frozenset(BOT_EVENTS)).start()
        self._on_exit(slack.stop)
        self.env.pop("SLACK_APP_TOKEN", None)
        self.env.update(
            SLACK_BOT_TOKEN=token,
            SLACK_API_URL=slack.api_url,
            SLACK_SIGNING_SECRET=secrets.token_hex(16),
            PORT=str(free_port()),
        )
        return slack

    # ---- processes

    def _check_settings(self) -> None:
        """Refuse now, before anything starts, what the processes would refuse."""
        env = dict(self.env)
        if self.console:  # what _start_fake_slack will provide
            env.update(SLACK_BOT_TOKEN="console", SLACK_SIGNING_SECRET="console", PORT="0")
            env.pop("SLACK_APP_TOKEN", None)
        if self.offline:
            env["ANTHROPIC_API_KEY"] = "offline"
        for role in ("bot", "pm", "result", "task"):
            try:
                Settings.from_env(role, env)
            except ConfigError as exc:
                raise DevError(str(exc)) from exc

    def _start_processes(self) -> ProcessGroup:
        log_dir = self.data_dir / "logs" if self.console else None
        group = ProcessGroup(self.env, log_dir)
        if log_dir is not None:
            rotate_logs(log_dir, list(group.commands))
        self._on_exit(self._stop_processes, group)
        names = ", ".join(group.commands)
        where = f"; logs in {log_dir}/<name>.log" if log_dir else ""
        self.out.say(f"Starting {names}{where}")
        group.start()
        return group

    def _stop_processes(self, group: ProcessGroup) -> None:
        codes = group.stop()
        log.debug("exit codes: %s", codes)
        killed = [name for name, code in codes.items() if code is None]
        if killed:
            self.out.say(f"{', '.join(killed)} did not stop in time and was killed")

    def _wait_ready(self, group: ProcessGroup) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not healthy(int(self.env.get("PORT") or 3000)):
            dead = exited(group)
            if dead:
                raise DevError(describe_exits(group, dead))
            if time.monotonic() > deadline:
                raise DevError(f"the bot did not answer in {READY_TIMEOUT:.0f} s{tails(group)}")
            time.sleep(0.1)

    def _serve_real_slack(self, group: ProcessGroup) -> int:
        if not self.env.get("SLACK_APP_TOKEN"):
            self._wait_ready(group)
        model = "the offline model" if self.offline else "Claude"
        self.out.say(f"Broker {self.broker}, {model}, real Slack: running; Ctrl-C to stop")
        while True:
            dead = exited(group)
            if dead:
                self.out.say(f"aico dev: {describe_exits(group, dead)}")
                return 1
            time.sleep(0.5)

    def _banner(self) -> None:
        model = (
            f"offline model, answers labelled {OFFLINE_LABEL} (set ANTHROPIC_API_KEY for Claude)"
            if self.offline
            else f"Claude ({self.env.get('AICO_MODEL') or 'default model'})"
        )
        self.out.say(
            f"\naico dev is ready in {time.monotonic() - self.started:.1f} s\n"
            f"  broker   {self.broker}\n"
            f"  model    {model}\n"
            f"  slack    local console: you are @{USER_NAME} in #{CHANNEL_NAME}\n"
            f"  logs     {self.data_dir / 'logs'}\n"
            f"Type a slash command as in Slack, e.g.  {EXAMPLE}  (or @aico <what to do>)\n"
            "`help` shows more; `quit` (or Ctrl-D) stops everything.\n"
        )


# --------------------------------------------------------------------------- helpers


def offline_plan(body: dict[str, Any]) -> dict[str, Any]:
    """The offline model's plan for a project (its `plan_project` input): two steps side by
    side, a third after both, and the final assembly, around the goal it was given; so that
    `/aico project` runs offline too."""
    goal = _last_user_text(body).rpartition("Their goal:")[2].strip() or "the goal"
    about = goal[:200]

    def step(id_: str, title: str, needs: list[str]) -> dict[str, Any]:
        prompt = f"{title} for: {about}"
        return {"id": id_, "title": title, "prompt": prompt, "needs": needs, "produces": title}

    return {
        "title": f"Offline plan: {goal[:60]}",
        "steps": [
            step("facts", "Gather the facts", []),
            step("outline", "Outline the answer", []),
            step("draft", "Write the draft", ["facts", "outline"]),
        ],
        "final": {"prompt": f"Assemble the answer to: {about}"},
    }


def _last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content or [] if b.get("type") == "text")


def rotate_logs(log_dir: Path, names: list[str]) -> None:
    """This run's logs start empty; the previous run's are kept as `<name>.log.1`."""
    for name in names:
        log_file = log_dir / f"{name}.log"
        if log_file.exists():
            log_file.replace(log_dir / f"{name}.log.1")


def broker_reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at the AMQP URL's host and port."""
    parts = urlsplit(url)
    try:
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    except ValueError as exc:
        raise DevError(f"AICO_AMQP_URL has a bad port: {exc}") from exc
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return True
    except OSError:
        return False


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}"))


def node_user_can_enter(path: Path) -> bool:
    """Whether the node's account (used when we are root) can reach `path`."""
    if os.geteuid() != 0:
        return True
    try:
        probe = subprocess.run(
            ["test", "-x", str(path)],
            user=NODE_USER,
            group=NODE_USER,
            extra_groups=[],
            capture_output=True,
        )
    except (KeyError, OSError):  # no such account: let RabbitNode say what is wrong
        return True
    return probe.returncode == 0


def private_node_dir(data_dir: Path) -> Path:
    """A node directory under the temp dir, one per data dir, reachable by the node's user."""
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    parent = Path(tempfile.gettempdir()) / f"aico-dev-{digest}"
    parent.mkdir(exist_ok=True)
    parent.chmod(0o755)
    return parent / "rabbitmq"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False
