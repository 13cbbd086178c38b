"""The TCP proxy in front of a tiny echo server on 127.0.0.1: forwarding, black holes, stop."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from aico.fakes.tcp_proxy import TcpProxy

SILENCE = 0.5  # seconds a black-holed connection is listened to


class EchoServer:
    """Sends back whatever it receives; remembers the bytes and its side of each connection."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.received = bytearray()
        self.peers: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.peers.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            while data := _recv(conn):
                self.received += data
                conn.sendall(data)

    def close(self) -> None:
        self._listener.close()
        for conn in self.peers:
            _close(conn)


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except OSError:
        return b""


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", echo.port) as running:
        yield running


def connect(proxy: TcpProxy) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    conn.settimeout(5)
    return conn


def echoed(conn: socket.socket, data: bytes) -> bytes:
    conn.sendall(data)
    got = b""
    while len(got) < len(data) and (chunk := conn.recv(65536)):
        got += chunk
    return got


def test_it_forwards_bytes_both_ways(proxy: TcpProxy, echo: EchoServer) -> None:
    payload = bytes(range(256)) * 1024  # larger than one read
    with connect(proxy) as conn:
        assert echoed(conn, b"hello") == b"hello"
        assert echoed(conn, payload) == payload
        assert (proxy.accepted, proxy.connections) == (1, 1)
    assert bytes(echo.received) == b"hello" + payload
    wait_for(lambda: proxy.connections == 0)


def test_after_blackhole_an_old_connection_hears_nothing_and_a_new_one_works(
    proxy: TcpProxy, echo: EchoServer
) -> None:
    with connect(proxy) as old:
        assert echoed(old, b"before") == b"before"
        proxy.blackhole()

        old.sendall(b"into the void")  # accepted by the OS: the connection looks open
        old.settimeout(SILENCE)
        with pytest.raises(TimeoutError):  # nothing back, not even an end of stream
            old.recv(1)
        assert bytes(echo.received) == b"before", "nothing reached the upstream either"

        with connect(proxy) as new:
            assert echoed(new, b"after") == b"after"
            assert (proxy.accepted, proxy.connections) == (2, 2)


def test_a_blackholed_connection_is_not_told_when_the_upstream_closes(
    proxy: TcpProxy, echo: EchoServer
) -> None:
    with connect(proxy) as old:
        assert echoed(old, b"ping") == b"ping"
        proxy.blackhole()
        _close(echo.peers[0])  # the broker gives up on it

        old.settimeout(SILENCE)
        with pytest.raises(TimeoutError):  # no FIN, no RST: still silence
            old.recv(1)
        assert proxy.connections == 1, "open until its client closes too"
    wait_for(lambda: proxy.connections == 0)


def test_stop_closes_everything(echo: EchoServer) -> None:
    proxy = TcpProxy("127.0.0.1", echo.port).start()
    holed = connect(proxy)
    assert echoed(holed, b"x") == b"x"
    proxy.blackhole()
    normal = connect(proxy)
    assert echoed(normal, b"y") == b"y"

    proxy.stop()

    for conn in (holed, normal):
        with conn:
            assert _recv(conn) == b"", "ended by the proxy"
    assert proxy.connections == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1)
