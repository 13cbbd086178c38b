"""Drills of the bot's HTTP intake under hostile load, against the real stack from its Procfile:
hundreds of connections that send half a request (a slowloris) or dribble it, bodies larger than
anything Slack sends, malformed HTTP, malformed and forged Slack requests. A real signed slash
command, sent with Slack's own 3 s patience, still gets its ack and its task."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from aico.fakes.anthropic import FakeClaude
from aico.fakes.signing import FORM_CT, JSON_CT, SlackSender
from aico.fakes.slack import FakeSlack
from core.adapters.sqlite_store import SqliteEventStore
from tests.integration.stack import BOT_TOKEN, SIGNING_SECRET, Stack, fresh_vhost
from tests.integration.test_e2e import task_id_of

pytestmark = pytest.mark.integration

SLACK_PATIENCE = 3.0  # seconds Slack waits for an ack before it shows the user an error
HALF_OPEN = 300
DRIBBLERS = 20
CLOSE_WAIT = 30.0  # how long a drill waits for the server to close what it should close
HALF_REQUEST = (
    b"POST /slack/events HTTP/1.1\r\nHost: aico\r\nContent-Type: application/x-www-form-"
    b"urlencoded\r\nX-Slack-Request-Timestamp: 1\r\n"
)


@pytest.fixture(scope="module")
def stack(rabbit, tmp_path_factory) -> Iterator[Stack]:
    with FakeSlack(bot_token=BOT_TOKEN) as slack, FakeClaude(latency=0.05) as claude:
        workdir = tmp_path_factory.mktemp("hostile")
        running = Stack(workdir, fresh_vhost(rabbit), slack, claude).start()
        try:
            yield running
        finally:
            codes = running.stop()
            assert all(code == 0 for code in codes.values()), f"{codes}\n{running.logs()}"


class Slowloris:
    """`count` connections that each sent half a request, and `dribblers` more that send one
    byte of theirs every second, until the server closes them."""

    def __init__(self, port: int, count: int, dribblers: int = 0) -> None:
        self.port = port
        self.held = [self._half_open() for _ in range(count)]
        self.dribbling = [self._half_open() for _ in range(dribblers)]
        self.cut_off: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dribble, daemon=True)
        self._thread.start()

    def _half_open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.sendall(HALF_REQUEST)
        return sock

    def _dribble(self) -> None:
        while not self._stop.wait(1.0):
            for sock in list(self.dribbling):
                try:
                    sock.sendall(b"X")
                except OSError:  # the server closed it
                    self.dribbling.remove(sock)
                    self.cut_off.append(sock)

    def still_open(self) -> int:
        return sum(_is_open(sock) for sock in self.held + self.dribbling)

    def wait_all_closed(self, timeout: float) -> list[bytes]:
        """What the server said to each connection before closing it; fails past `timeout`."""
        deadline = time.monotonic() + timeout
        said = {sock: b"" for sock in self.held + self.dribbling + self.cut_off}
        open_ = set(said)
        while open_ and time.monotonic() < deadline:
            poll = select.poll()  # select() takes no descriptor above 1024
            by_fd = {sock.fileno(): sock for sock in open_}
            for fd in by_fd:
                poll.register(fd, select.POLLIN)
            for fd, _event in poll.poll(500):
                sock = by_fd[fd]
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                said[sock] += data
                if not data:
                    open_.discard(sock)
        assert not open_, f"{len(open_)} connections were never closed by the server"
        return list(said.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.held + self.dribbling + self.cut_off:
            sock.close()


@contextlib.contextmanager
def slowloris(stack: Stack, count: int, dribblers: int = 0) -> Iterator[Slowloris]:
    attack = Slowloris(stack.port, count, dribblers)
    try:
        yield attack
    finally:
        attack.close()


def _is_open(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def stored(stack: Stack, task_id: str):
    store = SqliteEventStore(stack.workdir / "data" / "aico.db")
    try:
        return store.task(task_id)
    finally:
        store.close()


def raw_exchange(stack: Stack, data: bytes) -> bytes:
    """Send `data` on a new connection; everything the server says until it closes."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=CLOSE_WAIT) as sock:
        sock.sendall(data)
        said = b""
        while chunk := sock.recv(65536):
            said += chunk
        return said


def status_of(said: bytes) -> int:
    return int(said.split(b" ", 2)[1])


def test_a_slash_command_is_acked_while_hundreds_of_connections_hold_half_a_request(stack):
    # Given 300 connections that sent half a request and 20 that dribble a byte a second
    with slowloris(stack, HALF_OPEN, DRIBBLERS) as attack:
        assert attack.still_open() == HALF_OPEN + DRIBBLERS

        # When a real signed slash command comes, with Slack's patience
        with SlackSender(stack.url, SIGNING_SECRET, timeout=SLACK_PATIENCE) as slack:
            url = stack.slack.new_response_url(channel="C0CHAN1")
            status, body, _ = slack.command("task summarise the incident", response_url=url)

        # Then it is acked with its task, and the task is recorded
        assert status == 200
        task_id = task_id_of(body)
        assert f"`{task_id}`" in json.loads(body)["text"]
        task = stored(stack, task_id)
        assert task is not None and task.prompt == "summarise the incident"


def test_half_open_and_dribbling_connections_are_closed_at_the_header_deadline(stack):
    # Given connections that sent half a request, some dribbling, and one that sent nothing
    with (
        slowloris(stack, 50, 5) as attack,
        socket.create_connection(("127.0.0.1", stack.port)) as silent,
    ):
        # Then the server closes every one of them by itself, telling the half-open ones why
        said = attack.wait_all_closed(CLOSE_WAIT)
        assert all(status_of(answer) == 408 for answer in said if answer)
        assert sum(1 for answer in said if answer) >= 50
        silent.settimeout(CLOSE_WAIT)
        assert silent.recv(1) == b""


def test_a_body_larger_than_slack_sends_is_refused_before_it_is_read(stack):
    # Given only the headers of a request that says it carries a gigabyte
    head = (
        b"POST /slack/events HTTP/1.1\r\nHost: aico\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\n\r\n"
    )
    # Then 413 comes without the body ever being sent, and the connection closes
    said = raw_exchange(stack, head)
    assert status_of(said) == 413 and b"too large" in said


def test_a_signed_body_that_is_not_json_gets_400_saying_so(stack):
    with SlackSender(stack.url, SIGNING_SECRET, timeout=SLACK_PATIENCE) as slack:
        status, text, _ = slack.post(b'{"type": "event_callback", "event": ', JSON_CT)
        assert status == 400 and "not valid JSON" in text
        status, text, _ = slack.post(b"payload=%7Bnot-json", FORM_CT)
        assert status == 400 and "payload is not valid JSON" in text


def test_a_forged_request_gets_401_before_its_body_is_judged(stack):
    with SlackSender(stack.url, "not-the-signing-secret", timeout=SLACK_PATIENCE) as forger:
        assert forger.post(b'{"broken": ', JSON_CT)[0] == 401
        assert forger.command("task let me in")[0] == 401


def test_malformed_http_gets_400_and_the_connection_closed(stack):
    said = raw_exchange(stack, b"HELLO THERE\r\n\r\n")
    assert status_of(said) == 400


def test_the_bot_still_answers_after_the_drills(stack):
    with SlackSender(stack.url, SIGNING_SECRET, timeout=SLACK_PATIENCE) as slack:
        url = stack.slack.new_response_url(channel="C0CHAN1")
        status, body, _ = slack.command("task check the payload limits", response_url=url)
    assert status == 200
    task = stored(stack, task_id_of(body))
    assert task is not None and task.prompt == "check the payload limits"
    assert status_of(raw_exchange(stack, b"GET /healthz HTTP/1.0\r\n\r\n")) == 200
