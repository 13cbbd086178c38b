"""bot/http.py's server on a loopback port, driven by raw sockets as clients (and attackers)
would: keep-alive, pipelining, HTTP/1.0, refusals of what is too large or malformed, the
deadlines of slow and idle clients, the connection cap, and a graceful stop."""

from __future__ import annotations

import contextlib
import io
import json
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bot import http
from bot.http import Request, Server, environ_of, response_bytes

WAIT = 20.0  # seconds a test waits for what it expects before it fails


class App:
    """A WSGI app that answers what it was asked (method, path, query, body, some headers) as
    JSON, and counts its calls; `hold` makes it wait until released."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.hold: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        seen = {
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "body": body.decode("latin-1"),
            "length": environ.get("CONTENT_LENGTH"),
            "x": environ.get("HTTP_X_TEST"),
        }
        self.calls.append(seen)
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(WAIT)
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("a listener broke")
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(seen).encode()]


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
def server(app: App) -> Iterator[Server]:
    running = Server(app, "127.0.0.1", 0).start()
    yield running
    running.stop(grace=1.0)


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    return sock


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


def read_answer(stream: io.BufferedReader, head: bool = False) -> Answer:
    """One HTTP answer off `stream` (framed by Content-Length), skipping 1xx interim ones."""
    while True:
        status_line = stream.readline()
        assert status_line, "the server closed the connection instead of answering"
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if status >= 200:
            break
    length = 0 if head else int(headers.get("content-length", "0"))
    return Answer(status, headers, stream.read(length))


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed: what is left to read ends (or the connection was reset)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def still_open(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False


def request(path: str = "/", body: bytes = b"", *extra: str, method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: aico", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- what a well-behaved client gets


def test_keep_alive_serves_several_requests_on_one_connection(server, app):
    with connect(server) as sock, sock.makefile("rb") as stream:
        for i in range(3):
            sock.sendall(request(f"/n{i}?q={i}", b"x" * i, f"X-Test: {i}"))
            answer = read_answer(stream)
            assert answer.status == 200
            assert answer.json() == {
                "method": "POST",
                "path": f"/n{i}",
                "query": f"q={i}",
                "body": "x" * i,
                "length": str(i),
                "x": str(i),
            }
            assert "connection" not in answer.headers


def test_pipelined_requests_are_answered_in_order_even_when_the_first_is_slowest(server, app):
    app.hold = threading.Event()
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/1") + request("/2") + request("/3", b"three"))
        assert app.entered.wait(WAIT)
        app.hold.set()
        paths = [read_answer(stream).json()["path"] for _ in range(3)]
    assert paths == ["/1", "/2", "/3"]


def test_connection_close_is_honoured(server):
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/bye", b"", "Connection: close") + request("/never"))
        answer = read_answer(stream)
        assert answer.status == 200 and answer.headers["connection"] == "close"
        assert stream.read() == b""  # closed: the second request got no answer


def test_http_1_0_closes_unless_asked_to_keep_alive(server):
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        assert read_answer(stream).headers["connection"] == "close"
        assert stream.read() == b""
    with connect(server) as sock, sock.makefile("rb") as stream:
        for _ in range(2):
            sock.sendall(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            answer = read_answer(stream)
            assert answer.status == 200 and answer.headers["connection"] == "keep-alive"


def test_a_chunked_body_reaches_the_app_whole_with_its_length(server):
    with connect(server) as sock, sock.makefile("rb") as stream:
        head = "POST /c HTTP/1.1\r\nHost: aico\r\nTransfer-Encoding: chunked\r\n\r\n"
        sock.sendall(head.encode() + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        answer = read_answer(stream).json()
    assert answer["body"] == "hello world" and answer["length"] == "11"


def test_expect_100_continue_is_answered_before_the_body(server):
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/e", b"", "Expect: 100-continue").replace(b"Length: 0", b"Length: 4"))
        assert stream.readline().startswith(b"HTTP/1.1 100 Continue")
        assert stream.readline() == b"\r\n"
        sock.sendall(b"body")
        assert read_answer(stream).json()["body"] == "body"


def test_a_head_request_gets_the_headers_only(server):
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/h", method="HEAD") + request("/after"))
        assert read_answer(stream, head=True).status == 200
        assert read_answer(stream).json()["path"] == "/after"  # nothing stray in between


def test_an_app_that_raises_answers_500_and_the_connection_goes_on(server):
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/boom") + request("/fine"))
        assert read_answer(stream).status == 500
        assert read_answer(stream).status == 200


# -- what is refused, without the app hearing of it


def test_a_body_larger_than_the_limit_is_refused_by_its_content_length_alone(server, app):
    with connect(server) as sock, sock.makefile("rb") as stream:
        # Given only the headers of a huge request (its body never sent)
        sock.sendall(
            f"POST /big HTTP/1.1\r\nHost: aico\r\nContent-Length: {10**9}\r\n\r\n".encode()
        )
        # Then the 413 comes at once, and the connection closes
        answer = read_answer(stream)
        assert answer.status == 413 and b"too large" in answer.body
        assert closed_by_server(sock)
    assert app.calls == []


def test_a_chunked_body_is_cut_off_at_the_limit(server, app):
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: aico\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
        with contextlib.suppress(OSError):  # the server stops reading once it has refused
            for _ in range(http.MAX_BODY_BYTES // (64 * 1024) + 2):
                sock.sendall(chunk)
        assert read_answer(stream).status == 413
    assert app.calls == []


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: aico\r\nContent-Length: twelve\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
    ],
)
def test_malformed_http_gets_400_and_the_connection_closed(server, app, garbage):
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(garbage)
        assert read_answer(stream).status == 400
        assert closed_by_server(sock)
    assert app.calls == []


def test_headers_larger_than_the_limit_get_431(server, app):
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/", b"", "X-Big: " + "y" * http.MAX_HEADER_BYTES))
        assert read_answer(stream).status == 431
    with connect(server) as sock, sock.makefile("rb") as stream:  # and one that never ends
        sock.sendall(b"GET / HTTP/1.1\r\nX-Big: ")
        with contextlib.suppress(OSError):
            for _ in range(4):
                sock.sendall(b"z" * http.MAX_HEADER_BYTES)
        assert read_answer(stream).status == 431
    assert app.calls == []


def test_a_never_ending_header_read_in_one_go_still_gets_431(server, app):
    # The server's loop is held while the whole header arrives, so that it reads it at once
    # (as a server under load does), not in the pieces the client sent.
    held, go = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        go.wait(WAIT)

    with connect(server) as sock, sock.makefile("rb") as stream:
        assert server._loop is not None
        server._loop.call_soon_threadsafe(hold)
        assert held.wait(WAIT)
        sock.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"z" * (3 * http.MAX_HEADER_BYTES))
        go.set()
        assert read_answer(stream).status == 431
    assert app.calls == []


def test_an_upgrade_is_not_followed(server, app):
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET /u HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI * HTTP/2")
        answer = read_answer(stream)  # answered as a plain request, then closed
        assert answer.status == 200 and answer.headers["connection"] == "close"
        assert stream.read() == b""
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert read_answer(stream).status == 400
    assert [c["path"] for c in app.calls] == ["/u"]


# -- slow and idle clients


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FIRST_BYTE_TIMEOUT", "HEADER_TIMEOUT", "BODY_TIMEOUT", "KEEPALIVE_TIMEOUT"):
        monkeypatch.setattr(http, name, 0.3)
    monkeypatch.setattr(http, "LINGER", 0.3)


def test_a_half_sent_request_gets_408_at_its_header_deadline(short_deadlines, server, app):
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: aico\r\n")
        assert read_answer(stream).status == 408
        assert closed_by_server(sock)
    assert app.calls == []


def test_dribbling_bytes_does_not_move_the_deadline(short_deadlines, server, app):
    with connect(server) as sock:
        sock.sendall(b"POST /slow HTTP/1.1\r\n")
        cut_off = threading.Event()

        def dribble() -> None:
            try:
                while not cut_off.wait(0.05):
                    sock.sendall(b"X")
            except OSError:
                pass

        dribbler = threading.Thread(target=dribble, daemon=True)
        dribbler.start()
        try:
            with sock.makefile("rb") as stream:
                assert read_answer(stream).status == 408
        finally:
            cut_off.set()
            dribbler.join(WAIT)


def test_a_body_that_stops_coming_gets_408(short_deadlines, server, app):
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: aico\r\nContent-Length: 10\r\n\r\nhalf")
        assert read_answer(stream).status == 408
    assert app.calls == []


def test_a_silent_new_connection_and_an_idle_keep_alive_one_are_closed(short_deadlines, server):
    with connect(server) as silent:
        assert closed_by_server(silent)
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/once"))
        assert read_answer(stream).status == 200
        assert stream.read() == b""  # then, idle past the keep-alive deadline, closed


def test_slow_clients_hold_no_thread_of_the_app(app):
    # Given a server with two app threads and sixty half-sent requests
    server = Server(app, "127.0.0.1", 0, workers=2).start()
    held = [connect(server) for _ in range(60)]
    try:
        for sock in held:
            sock.sendall(b"POST /slow HTTP/1.1\r\nHost: aico\r\n")
        # When a real request comes, it is answered
        with connect(server) as sock, sock.makefile("rb") as stream:
            sock.sendall(request("/real", b"hi"))
            assert read_answer(stream).json()["body"] == "hi"
    finally:
        for sock in held:
            sock.close()
        server.stop(grace=1.0)


def test_past_the_cap_the_oldest_waiting_connection_makes_room(app):
    # Given a server that holds 4 connections, all taken by half-sent requests
    server = Server(app, "127.0.0.1", 0, max_connections=4).start()
    held = [connect(server) for _ in range(4)]
    try:
        for sock in held:
            sock.sendall(b"POST /slow HTTP/1.1\r\nHost: aico\r\n")
        # When a fifth connection comes with a real request, it is answered
        with connect(server) as sock, sock.makefile("rb") as stream:
            sock.sendall(request("/real"))
            assert read_answer(stream).json()["path"] == "/real"
        # And one of the waiting ones, the oldest, was closed to make room
        select.select(held, [], [], WAIT)
        assert [s for s in held if not still_open(s)] == held[:1]
    finally:
        for sock in held:
            sock.close()
        server.stop(grace=1.0)


# -- stopping


def test_stop_answers_the_request_in_flight_then_refuses_new_connections(app):
    server = Server(app, "127.0.0.1", 0).start()
    app.hold = threading.Event()
    with connect(server) as busy, busy.makefile("rb") as stream, connect(server) as idle:
        busy.sendall(request("/in-flight"))
        assert app.entered.wait(WAIT)
        stopper = threading.Thread(target=server.stop, kwargs={"grace": WAIT})
        stopper.start()
        assert closed_by_server(idle)  # an idle connection is closed at once
        app.hold.set()  # the request in flight finishes...
        answer = read_answer(stream)
        assert answer.status == 200 and answer.headers["connection"] == "close"
        stopper.join(WAIT)
    with pytest.raises(OSError):
        connect(server)


# -- the pure parts


def test_the_environ_is_what_bolts_wsgi_adapter_reads():
    request = Request(
        method="POST",
        target=b"/slack/events%3Fx?a=1&b=%20",
        version="1.1",
        headers=[
            (b"Content-Type", b"application/x-www-form-urlencoded"),
            (b"Content-Length", b"999"),
            (b"X-Slack-Signature", b"v0=abc"),
            (b"X_Slack_Signature", b"v0=forged"),
            (b"Accept", b"a"),
            (b"Accept", b"b"),
        ],
        body=b"text=hi",
        keep_alive=True,
        peer=("10.0.0.1", 5555),
    )
    environ = environ_of(request, ("0.0.0.0", 3000))
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["PATH_INFO"] == "/slack/events?x" and environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert environ["CONTENT_LENGTH"] == "7"  # what was read, not what was claimed
    assert environ["HTTP_X_SLACK_SIGNATURE"] == "v0=abc"  # the underscore twin is dropped
    assert environ["HTTP_ACCEPT"] == "a, b"
    assert environ["wsgi.input"].read() == b"text=hi"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1" and environ["REMOTE_ADDR"] == "10.0.0.1"
    absolute = environ_of(
        Request("GET", b"http://aico.example/healthz?x=1", "1.1", [], b"", True), ("h", 1)
    )
    assert absolute["PATH_INFO"] == "/healthz" and absolute["QUERY_STRING"] == "x=1"


def test_the_answer_is_framed_by_the_server():
    headers = [("Content-Type", "text/plain"), ("Content-Length", "99"), ("Connection", "x")]
    wire = response_bytes("200 OK", headers, b"ok", keep_alive=True)
    assert wire == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
    closing = response_bytes("200 OK", [], b"ok", keep_alive=False, version="1.0")
    assert b"Connection: close\r\n" in closing
    kept = response_bytes("200 OK", [], b"ok", keep_alive=True, version="1.0")
    assert b"Connection: keep-alive\r\n" in kept
    head = response_bytes("200 OK", [("Content-Length", "5")], b"", keep_alive=True, head=True)
    assert head.endswith(b"Content-Length: 5\r\n\r\n")


def test_the_connection_cap_leaves_room_for_the_other_files(monkeypatch):
    monkeypatch.setattr(http.resource, "getrlimit", lambda _: (256, 4096))
    assert http.connection_cap() == 256 - http.FD_RESERVE
    monkeypatch.setattr(http.resource, "getrlimit", lambda _: (65536, 65536))
    assert http.connection_cap() == http.MAX_CONNECTIONS
