"""slack_sdk's WebClient over kept-alive connections: one pool per process.

slack_sdk's sync client goes through urllib, which opens a connection (DNS, TCP, TLS) for every
call, sends `Connection: close`, and builds an opener for it. Here the same WebClient -- its
request building, its retry handlers, its errors -- sends each request on a kept-alive HTTP/1.1
connection from a pool, one thread on a connection at a time. Only the last step changes:
`_perform_urllib_http_request_internal` (every Web API call) and `_upload_file`
(files_upload_v2's upload URL, on another host, pooled too).

The connections are http.client's, the very classes urllib drives, so what comes back is what
urllib gives: the status, the headers (an `http.client.HTTPMessage`) and the body; a non-2xx
answer raised as urllib's HTTPError (so the 429 handler reads Retry-After and SlackApiError is
built as before); a failure to connect or send raised as URLError of the socket or ssl error, a
broken answer as http.client's or the socket's own error (RemoteDisconnected, TimeoutError,
IncompleteRead...), exactly where urllib raises them. One difference: a 3xx is an HTTPError, not
followed (Slack's Web API does not redirect; urllib would have followed a 301/302/303 as a GET).

TLS: the client's `ssl` context as it is (the host name checked when the context says so), or
the default context urllib would make, made once per process instead of per call. Timeouts:
`timeout` for connecting and for each read, as urllib applies it. Proxies: with a proxy (the
`proxy` argument, or HTTPS_PROXY / https_proxy / HTTP_PROXY / http_proxy, which slack_sdk reads)
or any proxy urllib itself would use (`urllib.request.getproxies()`), the client takes
slack_sdk's own urllib path, unchanged: nothing is pooled then.

Why not urllib3's pool: measured against FakeSlack, a kept-alive http.client request costs about
70 us of CPU, the same through urllib3's HTTPConnectionPool about 155 us, urllib's new connection
about 215 us: urllib3's layers cost nearly what the connection did. Its rule for stale
connections is the one kept here (a pooled socket that is readable is dropped), and its answers
would have had to be translated back into urllib's errors; here they are urllib's own.

A POST is never sent twice: nothing here retries. A reused connection is safe because (1) one
the server ended with `Connection: close` is not kept; (2) one whose socket is readable when
taken from the pool -- the server closed it, or sent something unasked -- is closed and a new
connection opened: nothing was written on it; (3) one unused for longer than `IDLE_TIMEOUT` is
closed instead of reused, before servers close theirs (the shortest common default is 5 s). A
server that closes a connection just as a request goes out on it makes that call fail as a
connection error, outcome unknown, as any connection error was before: the caller decides (aico
looks for the message before posting again).
"""

from __future__ import annotations

import functools
import http.client
import io
import logging
import os
import select
import ssl
import sys
import threading
import time
import urllib.request
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.web.file_upload_v2_result import FileUploadV2Result

log = logging.getLogger(__name__)

# Seconds a connection may sit unused in the pool and still be reused; older ones are closed.
# Below the shortest idle timeout servers commonly keep (5 s: Apache, Node's http server before
# version 24; load balancers keep 60 s), so that a server does not close one as we send on it.
IDLE_TIMEOUT = 4.0
# Unused connections kept per host (more threads than this at once: the oldest are closed).
POOL_SIZE = 16
# What urllib sends to an upload URL (files_upload_v2 posts the bytes with no headers of its own).
_UPLOAD_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "User-Agent": "Python-urllib/{}.{}".format(*sys.version_info[:2]),
}


class PooledWebClient(WebClient):
    """A WebClient whose calls reuse kept-alive connections (see the module's docstring).
    `idle_timeout`: seconds an unused connection is kept for reuse."""

    def __init__(self, *args: Any, idle_timeout: float = IDLE_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_timeout = idle_timeout
        # urllib would also go through a proxy of the environment or of the system's settings
        proxies = urllib.request.getproxies()
        self._urllib_proxied = "http" in proxies or "https" in proxies

    def _perform_urllib_http_request_internal(
        self, url: str, req: urllib.request.Request
    ) -> dict[str, Any]:
        if not self._pooled(url, self.proxy) or not isinstance(req.data, bytes | None):
            return super()._perform_urllib_http_request_internal(url, req)
        headers = {name.title(): str(value) for name, value in req.header_items()}
        if req.data is not None and "Content-Type" not in headers:
            headers["Content-Type"] = "application/x-www-form-urlencoded"  # as urllib adds
        response, data = post(url, req.data, headers, self.timeout, self.ssl, self.idle_timeout)
        body: str | bytes = data
        content_type = response.msg.get("Content-Type", "")
        if _media_type(content_type) != "application/gzip":  # admin.analytics.getFile: bytes
            body = data.decode(_charset(content_type))
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug(
                "Received the following response - status: %s, headers: %s, body: %s",
                response.status,
                dict(response.msg),
                body if isinstance(body, str) else "(binary)",
            )
        return {"status": response.status, "headers": response.msg, "body": body}

    def _upload_file(
        self,
        *,
        url: str,
        data: bytes,
        logger: logging.Logger,
        timeout: int,
        proxy: str | None,
        ssl: ssl.SSLContext | None,
    ) -> FileUploadV2Result:
        if not self._pooled(url, proxy):
            return super()._upload_file(
                url=url, data=data, logger=logger, timeout=timeout, proxy=proxy, ssl=ssl
            )
        response, answer = post(url, data, dict(_UPLOAD_HEADERS), timeout, ssl, self.idle_timeout)
        body = answer.decode(_charset(response.msg.get("Content-Type", "")))
        return FileUploadV2Result(status=response.status, body=body)

    def _pooled(self, url: str, proxy: str | None) -> bool:
        direct = proxy is None and not self._urllib_proxied
        return direct and url[:8].lower().startswith(("http://", "https://"))


def post(
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    timeout: float,
    context: ssl.SSLContext | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
) -> tuple[http.client.HTTPResponse, bytes]:
    """POST `body` to `url` on a pooled connection: the answer and its body if it is a 2xx,
    else urllib's HTTPError of it. Errors as urllib raises them (see the module's docstring)."""
    scheme, host, port, target = _split(url)
    if scheme == "https":
        context = context or _default_context()
    pool = _pool(scheme, host, port, context if scheme == "https" else None, idle_timeout)
    conn = pool.take(timeout)
    try:
        try:
            conn.request("POST", target, body, headers)  # connects first if it must
        except OSError as err:  # as urllib: not connected, or the request not sent
            raise URLError(err) from err
        response = conn.getresponse()
        data = response.read()
    except BaseException:
        conn.close()
        raise
    if response.will_close:  # the server said Connection: close (http.client let go of it)
        conn.close()
    else:
        pool.give_back(conn)
    if not 200 <= response.status < 300:
        raise HTTPError(url, response.status, response.reason, response.msg, io.BytesIO(data))
    return response, data


@functools.lru_cache(maxsize=256)
def _split(url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port, the request target) of `url`."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not parts.hostname:
        raise URLError("no host given")
    return parts.scheme.lower(), parts.hostname, parts.port, target


def _media_type(content_type: str) -> str:
    """The type/subtype of a Content-Type, lower case ("text/plain" without one), as
    `email.message.Message.get_content_type` gives it, without its cost."""
    media = content_type.partition(";")[0].strip().lower()
    return media if media.count("/") == 1 else "text/plain"


def _charset(content_type: str) -> str:
    """The charset parameter of a Content-Type, lower case (utf-8 without one), as
    `email.message.Message.get_content_charset() or "utf-8"` gives it, without its cost."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"').lower()
    return "utf-8"


# --------------------------------------------------------------------------- the pools


class _Pool:
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
        if conn is not None and _dropped(conn):
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
            dead = [entry for entry in self._idle if _dropped(entry[1])]
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


def _dropped(conn: http.client.HTTPConnection) -> bool:
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
_pools: dict[tuple[Any, ...], _Pool] = {}
_contexts: list[ssl.SSLContext] = []


def _pool(
    scheme: str, host: str, port: int | None, context: ssl.SSLContext | None, idle: float
) -> _Pool:
    key = (scheme, host, port, context, idle)
    pool = _pools.get(key)
    if pool is None:
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                for other in _pools.values():  # a new host: let go of dead connections
                    other.sweep()
                pool = _pools[key] = _Pool(scheme, host, port, context, idle)
    return pool


def _default_context() -> ssl.SSLContext:
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
