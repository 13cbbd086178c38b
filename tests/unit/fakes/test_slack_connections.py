"""FakeSlack's connections behave like a real server's: kept alive between requests, closed
without a word after idling past `idle_timeout`, closed with `Connection: close` on the last of
`max_requests` answers, and served over TLS when given a certificate. Seen from a plain
http.client connection, as any HTTP client would see it."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from aico.fakes.slack import IDLE_TIMEOUT, FakeSlack
from tests.unit.fakes.tls import self_signed

TOKEN = "xoxb-conn"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(bot_token=TOKEN) as fake:
        yield fake


def connect(fake: FakeSlack) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(fake.host, fake.port, timeout=10)


def auth_test(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
    conn.request("POST", "/api/auth.test", body=b"", headers=AUTH)
    response = conn.getresponse()
    assert json.loads(response.read())["ok"] is True
    return response


def closed_by_server(conn: http.client.HTTPConnection) -> bool:
    """Whether the server closed the connection: its next read is the end of the stream (the
    socket's timeout bounds the wait)."""
    assert conn.sock is not None
    return conn.sock.recv(1) == b""


def test_a_connection_is_kept_alive_between_requests(fake: FakeSlack) -> None:
    conn = connect(fake)
    answers = [auth_test(conn) for _ in range(5)]

    assert fake.connections == 1
    assert all(a.getheader("Connection") is None for a in answers), "nothing says close"
    assert len(fake.calls_to("auth.test")) == 5


def test_a_connection_idle_past_the_timeout_is_closed_without_a_word(fake: FakeSlack) -> None:
    # Given a fake that lets a connection idle for a moment only
    fake.idle_timeout = 0.2
    conn = connect(fake)
    auth_test(conn)

    # When the connection waits: the server ends it, sending nothing
    assert closed_by_server(conn)
    fake.wait_for(lambda: fake.idle_closes == 1)

    # Then a new connection is needed for the next request
    conn.close()
    auth_test(conn)
    assert fake.connections == 2


def test_a_request_under_way_is_not_cut_by_the_idle_timeout(fake: FakeSlack) -> None:
    fake.idle_timeout = 0.2
    slow = socket.create_connection((fake.host, fake.port), timeout=10)
    slow.sendall(b"POST /api/auth.test HTTP/1.1\r\nHost: x\r\n")  # the rest comes later
    idle = socket.create_connection((fake.host, fake.port), timeout=10)

    assert idle.recv(1) == b"", "the connection that sent nothing is closed"
    fake.wait_for(lambda: fake.idle_closes == 1)
    slow.sendall(f"Authorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n".encode())

    assert slow.recv(4096).startswith(b"HTTP/1.1 200 ")
    slow.close()
    idle.close()


def test_the_idle_timeout_defaults_to_the_short_end_of_real_servers() -> None:
    assert 1 <= FakeSlack().idle_timeout == IDLE_TIMEOUT <= 60


def test_the_last_of_max_requests_says_connection_close_and_closes(fake: FakeSlack) -> None:
    fake.max_requests = 3
    sock = socket.create_connection((fake.host, fake.port), timeout=10)
    answers = [raw_auth_test(sock) for _ in range(3)]

    assert [a.getheader("Connection") for a in answers] == [None, None, "close"]
    assert sock.recv(1) == b"", "closed after the last answer"
    conn = connect(fake)
    auth_test(conn)
    assert fake.connections == 2


def test_a_client_that_asks_to_close_is_answered_then_closed(fake: FakeSlack) -> None:
    sock = socket.create_connection((fake.host, fake.port), timeout=10)
    raw_auth_test(sock, b"Connection: close\r\n")

    assert sock.recv(1) == b"", "closed after the answer"


def raw_auth_test(sock: socket.socket, extra: bytes = b"") -> http.client.HTTPResponse:
    """One auth.test on a bare socket, its answer read (the socket stays ours to watch)."""
    request = f"POST /api/auth.test HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    sock.sendall(request.encode() + extra + b"Content-Length: 0\r\n\r\n")
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert json.loads(response.read())["ok"] is True
    return response


def test_the_fake_serves_https_with_a_certificate(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    with FakeSlack(bot_token=TOKEN, tls=cert.server()) as fake:
        assert fake.api_url.startswith("https://")
        conn = http.client.HTTPSConnection(fake.host, fake.port, timeout=10, context=cert.client())
        auth_test(conn)
        auth_test(conn)
        assert fake.connections == 1
