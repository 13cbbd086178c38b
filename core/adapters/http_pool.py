"""Kept-alive HTTP/1.1 connections (http.client's), pooled per origin, one per process: what
the Slack client (slack_http.py) and the Claude client (claude_http.py) send on. See
slack_http.py for why by hand and why a reused connection is safe: a connection is in the pool
or in one thread's hands, never both; one whose socket is readable when taken (the server closed
it, or sent something unasked) is closed instead of reused; one unused for longer than the idle
timeout is closed before servers close theirs. A forked child starts with no pools."""

from __future__ import annotations

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
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


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
