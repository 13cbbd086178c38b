"""Kept-alive HTTP/1.1 connections (http.client's), pooled per origin, one per process: what
the Slack client (slack_http.py) and the Claude client (claude_http.py) send on. See
slack_http.py for why by hand and why a reused connection is safe: a connection is in the pool
or in one thread's hands, never both; one whose socket is readable when taken (the server closed
it, or sent something unasked) is closed instead of reused; one unused for longer than the idle
timeout is closed before servers close theirs. A forked child starts with no pools."""

from __future__ import annotations

import contextlib
import http.client
import os
import select
import ssl
import threading
import time
from typing import Any

# Seconds a connection may sit unused in the pool and still be reused; older ones are closed.
# Below the shortest idle timeout servers commonly keep (5 s: Apache, Node's http server before
# version 24; load balancers keep 60 s), so that a server does not close one as we send on it.
IDLE_TIMEOUT = 4.0
# Unused connections kept per host (more threads than this at once: the oldest are closed).
POOL_SIZE = 16
# http.client's limits on an answer's head: the length of a line, the number of header fields.
MAX_LINE, MAX_FIELDS = 65536, 100


class Response(http.client.HTTPResponse):
    """http.client's answer, with its head read here (see the module's docstring): the same
    rules and the same errors (RemoteDisconnected, BadStatusLine, LineTooLong, UnknownProtocol,
    HTTPException), a 1xx before the answer skipped, and its fields in an HTTPMessage as
    http.client's parser leaves them (the value without the spaces after the colon and without
    the line end; a folded line kept in the value; a repeated field kept twice)."""

    def __init__(
        self, sock: Any, debuglevel: int = 0, method: str | None = None, url: str | None = None
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.asked = method

    def begin(self) -> None:
        if self.headers is not None:  # already begun
            return
        while True:
            version, status, reason = self._status_line()
            if status != http.client.CONTINUE:
                break
            self._fields()  # a 100 Continue's own head, skipped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = fields = self._fields()
        coding = fields.get("transfer-encoding")
        self.chunked = bool(coding) and coding.lower() == "chunked"
        self.chunk_left = None
        connection = (fields.get("connection") or "").lower()
        if self.version == 11:
            self.will_close = "close" in connection
        else:  # HTTP/1.0 closes unless it says it keeps the connection alive
            proxy = (fields.get("proxy-connection") or "").lower()
            kept = bool(fields.get("keep-alive")) or "keep-alive" in connection + proxy
            self.will_close = not kept
        self.length = None
        length = fields.get("content-length")
        if length and not self.chunked:
            with contextlib.suppress(ValueError):
                self.length = int(length) if int(length) >= 0 else None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or status < 200:
            self.length = 0
        if self.asked == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # the body runs to the connection's end

    def _status_line(self) -> tuple[str, int, str]:
        raw = self.fp.readline(MAX_LINE + 1)
        if len(raw) > MAX_LINE:
            raise http.client.LineTooLong("status line")
        line = raw.decode("iso-8859-1")
        if not line:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        parts = line.split(None, 2)
        version, code, reason = [*parts, ""][:3] if len(parts) > 1 else ("", "", "")
        number = code.isascii() and code.isdigit()
        if not version.startswith("HTTP/") or not number or not 100 <= int(code) <= 999:
            raise http.client.BadStatusLine(line)
        return version, int(code), reason

    def _fields(self) -> http.client.HTTPMessage:
        fields = http.client.HTTPMessage()
        name, value, count = "", "", 0
        while True:
            raw = self.fp.readline(MAX_LINE + 1)
            if len(raw) > MAX_LINE:
                raise http.client.LineTooLong("header line")
            count += 1
            if count > MAX_FIELDS:
                raise http.client.HTTPException(f"got more than {MAX_FIELDS} headers")
            if raw in (b"\r\n", b"\n", b""):
                break
            line = raw.decode("iso-8859-1")
            if line[0] in " \t":  # a folded line goes on with the field before it
                value += line if name else ""
                continue
            if name:
                fields.set_raw(name, value.rstrip("\r\n"))
            name, colon, value = line.partition(":")
            if not colon:
                raise http.client.HTTPException(f"malformed header line: {line!r}")
            value = value.lstrip(" \t")
        if name:
            fields.set_raw(name, value.rstrip("\r\n"))
        return fields


class Pool:
    """Unused kept-alive connections to one origin (scheme, host, port and TLS context), the
    newest last; a connection is in here or in one thread's hands, never both."""

    def __init__(
        self, scheme: str, host: str, port: int | None, context: ssl.SSLContext | None, idle: float
    ) -> None:
        self.scheme, self.host, self.port, self.context = scheme, host, port, context
        self.idle_timeout = idle
        self._lock = threading.Lock()
        self._idle: list[tuple[float, http.client.HTTPConnection]] = []  # (since, conn)

    def take(self, timeout: float) -> http.client.HTTPConnection:
        """The most recently used connection that is still good, or a new one (it connects on
        its first request)."""
        with self._lock:
            stale = self._expired()
            conn = self._idle.pop()[1] if self._idle else None
        for old in stale:
            old.close()
        if conn is not None and dropped(conn):
            conn.close()
            conn = None
        if conn is None:
            return self._new(timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append((time.monotonic(), conn))
            extra = [c for _, c in self._idle[:-POOL_SIZE]]
            del self._idle[:-POOL_SIZE]
            extra += self._expired()
        for old in extra:
            old.close()

    def sweep(self) -> None:
        """Close the connections that idled too long or that the server closed."""
        with self._lock:
            stale = self._expired()
            dead = [entry for entry in self._idle if dropped(entry[1])]
            self._idle = [entry for entry in self._idle if entry not in dead]
        for conn in stale + [c for _, c in dead]:
            conn.close()

    def _expired(self) -> list[http.client.HTTPConnection]:
        """Take out the connections unused for longer than the idle timeout (oldest first)."""
        now, n = time.monotonic(), 0
        while n < len(self._idle) and now - self._idle[n][0] > self.idle_timeout:
            n += 1
        expired = [c for _, c in self._idle[:n]]
        del self._idle[:n]
        return expired

    def _new(self, timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        conn.response_class = Response
        return conn


def dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection can no longer carry a request: no socket, or a socket with
    something to read (the server's close, or bytes nobody asked for), as urllib3 judges it."""
    sock = conn.sock
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


_lock = threading.Lock()
_pools: dict[tuple[Any, ...], Pool] = {}
_contexts: list[ssl.SSLContext] = []


def pool_for(
    scheme: str, host: str, port: int | None, context: ssl.SSLContext | None, idle: float
) -> Pool:
    key = (scheme, host, port, context, idle)
    pool = _pools.get(key)
    if pool is None:
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                for other in _pools.values():  # a new host: let go of dead connections
                    other.sweep()
                pool = _pools[key] = Pool(scheme, host, port, context, idle)
    return pool


def default_context() -> ssl.SSLContext:
    """The context http.client makes when given none (certificates verified, the host name
    checked, ALPN http/1.1), made once."""
    if not _contexts:
        with _lock:
            if not _contexts:
                context = ssl._create_default_https_context()
                context.set_alpn_protocols(["http/1.1"])
                if context.post_handshake_auth is not None:
                    context.post_handshake_auth = True
                _contexts.append(context)
    return _contexts[0]


def _forget_after_fork() -> None:
    """A forked child must not write on its parent's connections: it starts with no pools."""
    global _lock
    _lock = threading.Lock()
    _pools.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
