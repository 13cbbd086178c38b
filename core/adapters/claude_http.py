"""The Anthropic SDK's requests sent on kept-alive connections from aico's pool (http_pool.py).

The SDK still builds each request, retries what it retries (429, 5xx, 529, connection errors and
timeouts, with its backoff and Retry-After) and reads the answer; only the transport under its
httpx client changes: httpcore and h11 are replaced by http.client, the classes the Slack client
sends on too. Measured against FakeClaude, a streamed call cost 0.84 ms of CPU through the SDK's
own transport and 0.63 ms through this one; `Body.lines` lets the adapter read the stream's
lines straight from http.client, without httpx's decoders.

TLS as httpx sets it up (the system's certificates, or SSL_CERT_FILE / SSL_CERT_DIR). Errors
are httpx's, as its own transport raises them, so that the SDK handles them as before:
ConnectError / ConnectTimeout when no connection could be made, WriteError when the request
could not be sent, ReadTimeout when an answer (or the next part of it) takes longer than the
read timeout, RemoteProtocolError when the server hangs up before its answer or in the middle
of it. Timeouts: the request's connect timeout for connecting, its read timeout for each read.
`gated(ready)` holds the requests a thread makes back until `ready()` says they may go (the
task worker builds its request while the attempt's claim is being recorded).
TCP keep-alive probes as the SDK's own client sets them. With a proxy in the environment
(HTTPS_PROXY and the like, which httpx would use) the SDK's own client is used: see `usable`.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import socket
import ssl
import threading
import urllib.request
from collections.abc import Callable, Iterator

import anthropic
import httpx2

from core.adapters.http_pool import IDLE_TIMEOUT, Pool, pool_for
from core.errors import Withheld

CHUNK = 65536
BODY = "aico.body"  # the response extension that holds its Body
# TCP keep-alive, as the SDK's default client sets it: probes after 60 s idle, every 60 s, 5 of
# them, so that a connection a NAT or a load balancer dropped is noticed.
_KEEPALIVE = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *[
        (socket.IPPROTO_TCP, option, value)
        for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 5))
        if (option := getattr(socket, name, None)) is not None
    ],
]


class _Withheld(anthropic.AnthropicError, Withheld):
    """Withheld, as the SDK lets it through: an error of its own is neither wrapped nor retried."""


_gates = threading.local()


@contextlib.contextmanager
def gated(ready: Callable[[], bool] | None) -> Iterator[None]:
    """The requests this thread sends meanwhile first wait for `ready()`: False withholds them
    (Withheld). `ready` is asked again for each of them (the SDK's retries included)."""
    before = getattr(_gates, "ready", None)
    _gates.ready = ready
    try:
        yield
    finally:
        _gates.ready = before


def usable() -> bool:
    """Whether requests may go straight to their host: no proxy in the environment (or the
    system's settings), which httpx would go through."""
    proxies = urllib.request.getproxies()
    return not ("http" in proxies or "https" in proxies or "all" in proxies)


class PooledTransport(httpx2.BaseTransport):
    """An httpx transport on pooled http.client connections (see the module's docstring)."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.idle_timeout = idle_timeout

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        ready = getattr(_gates, "ready", None)
        if ready is not None and not ready():
            raise _Withheld("held back: its attempt was not claimed")
        timeouts = request.extensions.get("timeout", {})
        connect, read = timeouts.get("connect"), timeouts.get("read")
        context = _tls() if url.scheme == "https" else None
        pool = pool_for(url.scheme, url.host, url.port, context, self.idle_timeout)
        conn = pool.take(connect)
        try:
            if conn.sock is None:
                _connect(conn)
            conn.sock.settimeout(read)
            try:
                conn.request(request.method, _target(url), request.read(), _headers(request))
            except OSError as exc:
                raise httpx2.WriteError(str(exc) or type(exc).__name__) from exc
            try:
                answer = conn.getresponse()
            except TimeoutError as exc:
                raise httpx2.ReadTimeout(str(exc) or "timed out") from exc
            except (http.client.HTTPException, OSError) as exc:
                message = "Server disconnected without sending a response."
                raise httpx2.RemoteProtocolError(message) from exc
        except BaseException:
            conn.close()
            raise
        body = Body(conn, answer, pool)
        return httpx2.Response(
            answer.status,
            headers=answer.getheaders(),
            stream=body,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": answer.reason.encode(),
                BODY: body,  # the client wraps the stream; this is how the adapter finds it
            },
        )


class Body(httpx2.SyncByteStream):
    """An answer's body as it comes; its connection goes back to the pool once it was read to
    its end (else it is closed)."""

    def __init__(
        self, conn: http.client.HTTPConnection, answer: http.client.HTTPResponse, pool: Pool
    ) -> None:
        self._conn, self._answer, self._pool = conn, answer, pool
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._read(lambda: self._answer.read1(CHUNK)):
            yield chunk

    def lines(self) -> Iterator[str]:
        """The body's lines, decoded (UTF-8) and without their line ends: what httpx's
        `iter_lines` gives for a server-sent event stream, read straight from http.client."""
        while line := self._read(self._answer.readline):
            yield line.decode("utf-8", "replace").rstrip("\r\n")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._answer.isclosed() and not self._answer.will_close:
            self._pool.give_back(self._conn)  # read to its end: the connection can serve again
        else:
            self._conn.close()

    def _read(self, read: Callable[[], bytes]) -> bytes:
        try:
            return read()
        except TimeoutError as exc:
            raise httpx2.ReadTimeout(str(exc) or "timed out") from exc
        except (http.client.HTTPException, OSError) as exc:
            raise httpx2.RemoteProtocolError(f"the answer broke off: {exc!r}") from exc


def _tls() -> ssl.SSLContext:
    """The TLS context httpx (so the SDK) would use: the system's certificates, or
    SSL_CERT_FILE / SSL_CERT_DIR; HTTP/1.1 offered by ALPN. Made once for each of those."""
    return _tls_for(os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))


@functools.cache
def _tls_for(_cafile: str, _capath: str) -> ssl.SSLContext:
    context = httpx2.create_ssl_context()  # it reads them itself
    context.set_alpn_protocols(["http/1.1"])
    return context


def _connect(conn: http.client.HTTPConnection) -> None:
    try:
        conn.connect()
    except TimeoutError as exc:
        raise httpx2.ConnectTimeout(str(exc) or "timed out") from exc
    except OSError as exc:
        raise httpx2.ConnectError(str(exc) or type(exc).__name__) from exc
    for level, option, value in _KEEPALIVE:
        conn.sock.setsockopt(level, option, value)


def _target(url: httpx2.URL) -> str:
    return url.raw_path.decode("ascii")


def _headers(request: httpx2.Request) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers.raw}
