"""The whole aico stack from its Procfile, against a real broker and the project's fakes."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from aico.fakes.anthropic import FakeClaude
from aico.fakes.signing import SlackSender
from aico.fakes.slack import FakeSlack
from aico.procfile import ProcessGroup
from aico.rabbit_node import RabbitNode
from core.adapters.sqlite_store import SqliteEventStore

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-aico-test"
APP_TOKEN = "xapp-1-aico-test"
CLAUDE_KEY = "sk-ant-test"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05):
    """For what no fake can signal (the OS process table): re-check every `interval`."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{getattr(predicate, '__name__', predicate)} not true in {timeout}s"
            )
        time.sleep(interval)
    return value


@contextlib.contextmanager
def event_store(stack: Stack) -> Iterator[SqliteEventStore]:
    """The stack's own event store, to read what it recorded."""
    store = SqliteEventStore(Path(stack.env["AICO_DATA_DIR"]) / "aico.db")
    try:
        yield store
    finally:
        store.close()


def fresh_vhost(rabbit: RabbitNode) -> str:
    """A vhost of its own, so no test sees another's queues; returns its AMQP URL."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    rabbit.ctl("add_vhost", name)
    rabbit.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return rabbit.url.rsplit("/", 1)[0] + "/" + name


class Stack:
    """bot (HTTP or Socket Mode), pm (with its task workers) and the result worker."""

    def __init__(
        self,
        workdir: Path,
        amqp_url: str,
        slack: FakeSlack,
        claude: FakeClaude,
        socket_mode_url: str = "",
        **settings: str,
    ) -> None:
        self.workdir = workdir
        self.slack = slack
        self.claude = claude
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        self.env.update(
            {
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": slack.api_url,
                "ANTHROPIC_API_KEY": CLAUDE_KEY,
                "ANTHROPIC_BASE_URL": claude.url,
                "AICO_AMQP_URL": amqp_url,
                "AICO_DATA_DIR": str(workdir / "data"),
                "AICO_MIN_WORKERS": "1",
                # Many tasks share one channel here: Slack's real pace (1 post/s) would only slow
                # the tests down. test_e2e checks the pacing itself.
                "AICO_SLACK_CHANNEL_RATE": "50",
                "AICO_SLACK_CHANNEL_BURST": "10",
                "PORT": str(self.port),
            }
        )
        if socket_mode_url:
            self.env["SLACK_APP_TOKEN"] = APP_TOKEN
            slack.socket_mode_url = socket_mode_url
        self.env.update(settings)
        if "AICO_MAX_WORKERS" not in settings:  # a fixed pool, unless the test scales it
            self.env["AICO_MAX_WORKERS"] = self.env["AICO_MIN_WORKERS"]
        self.processes = ProcessGroup(self.env, log_dir=workdir / "logs")
        self.url = f"http://127.0.0.1:{self.port}/slack/events"
        self.sender = SlackSender(self.url, SIGNING_SECRET)

    def start(self, timeout: float = 30.0) -> Stack:
        self.processes.start()
        try:
            if "SLACK_APP_TOKEN" not in self.env:
                self._wait_for_the_bot(timeout)
        except BaseException:
            self.stop()  # a stack that failed to start leaves nothing running
            raise
        return self

    def _wait_for_the_bot(self, timeout: float) -> None:
        for _ in range(3):
            try:
                self.wait_healthy(timeout)
                return
            except RuntimeError:
                if not self._port_was_taken():
                    raise

    def _port_was_taken(self) -> bool:
        """free_port() races with every other socket on the machine: if the port went to someone
        else before the bot bound it, start the bot again on another one."""
        bot = self.processes.processes["bot"]
        if bot.poll() is None or "Address already in use" not in self.processes.log("bot"):
            return False
        self.port = free_port()
        self.env["PORT"] = self.processes.env["PORT"] = str(self.port)
        self.url = f"http://127.0.0.1:{self.port}/slack/events"
        self.sender = SlackSender(self.url, SIGNING_SECRET)
        self.processes.start("bot")
        return True

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                self._check_alive()
                time.sleep(0.05)
        raise TimeoutError(f"the bot did not answer /healthz in {timeout}s:\n{self.logs()}")

    def _check_alive(self) -> None:
        dead = {
            n: p.returncode for n, p in self.processes.processes.items() if p.poll() is not None
        }
        if dead:
            raise RuntimeError(f"processes exited {dead}:\n{self.logs()}")

    def command(self, text: str, **fields: str) -> tuple[int, str, float]:
        """A signed `/aico <text>` as Slack sends it, with a working response_url."""
        fields.setdefault(
            "response_url", self.slack.new_response_url(channel=fields.get("channel_id", "C0CHAN1"))
        )
        return self.sender.command(text, **fields)

    def press(
        self, channel: str, message: dict, action_id: str, value: str, user: str, block_id: str = ""
    ) -> list:
        """Press a button of `message` in `channel` as Slack sends it (a signed block_actions
        with a working response_url); the answers that came back through that URL."""
        url = self.slack.new_response_url(channel=channel, message_ts=message["ts"])
        action = {"type": "button", "action_id": action_id, "value": value, "action_ts": "1.1"}
        payload = {
            "type": "block_actions",
            "user": {"id": user},
            "api_app_id": "A0AICO",
            "team": {"id": "T0AICO"},
            "channel": {"id": channel},
            "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel},
            "message": message,
            "response_url": url,
            "trigger_id": "1.2.3",
            "actions": [{**action, "block_id": block_id} if block_id else action],
        }
        status, _, elapsed = self.sender.action(payload)
        assert status == 200 and elapsed < 3.0
        return self.slack.wait_for(lambda: self.slack.responses_for(url), 10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {n}\n{self.processes.log(n)[-4000:]}" for n in self.processes.commands
        )

    def stop(self) -> dict[str, int | None]:
        self.sender.close()
        return self.processes.stop(timeout=75.0)  # a worker may drain for up to 60 s
