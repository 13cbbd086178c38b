"""An HTTP/1.1 server for a WSGI app that gives no thread to an idle or slow socket.

One asyncio event loop (one thread) owns every connection: it parses with httptools (llhttp, the
parser of uvicorn and Node) and reads each request completely, within bounded times, before it
hands the request to a bounded pool of threads that run the WSGI app (Bolt's listeners block on
store appends and publishes). A socket that sends half a request, or dribbles it, costs a few
kilobytes and a timer until its deadline, never a thread; past MAX_CONNECTIONS the oldest idle or
unfinished connection is closed so that a new one (a real request) still gets in.

Answers go out in request order (pipelining-safe: one request of a connection runs at a time),
keep-alive as HTTP/1.1 and HTTP/1.0 say, `Connection: close` honoured. A body larger than
MAX_BODY_BYTES is refused with 413 from its Content-Length alone (or as soon as a chunked one
passes it), without being read; malformed HTTP gets 400; both close the connection. Nothing here
knows Slack: bot/serve.py wires it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import resource
import socket
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools

log = logging.getLogger(__name__)

WsgiApp = Callable[..., Iterable[bytes]]

# Deadlines, in seconds. Slack gives up on a request 3 s after sending it, so a real request is
# read in milliseconds and nothing it sends waits on these; they bound what a hostile or broken
# client can hold. None of them is reset by a byte arriving: dribbling buys nothing.
FIRST_BYTE_TIMEOUT = 5.0  # a new connection sends its first byte within this
HEADER_TIMEOUT = 5.0  # from a request's first byte to the end of its headers
BODY_TIMEOUT = 5.0  # from the end of the headers to the end of the body
# An idle keep-alive connection is closed after this. Longer than the idle timeout of the load
# balancers usually put in front (60 s on AWS's ALB; nginx's own keepalive_timeout is 75 s), so
# that the balancer, not aico, closes an idle connection: otherwise a request it sends just as
# aico closes is lost. Idle connections are also the first closed at MAX_CONNECTIONS.
KEEPALIVE_TIMEOUT = 75.0
WRITE_TIMEOUT = 10.0  # a client that stops reading its answer is cut off after this
LINGER = 2.0  # after a refusal (400/408/413/431): time for the client to read it before the close
STOP_GRACE = 10.0  # on stop, requests already received get this long to be answered

# Sizes. Slack publishes no maximum request size; the largest things it can send aico are a
# block_actions carrying a whole message (50 blocks, 3,000 characters of text each) or a Home tab
# view (100 blocks), and a message event with up to 40,000 characters of text (Slack truncates
# longer messages) plus its rich_text blocks: each a few hundred kilobytes as Slack encodes it
# (JSON, form-encoded for interactions). 1 MiB leaves room for that and refuses anything larger
# at once. (bolt-js settles on 4 MB as a generic default for any app; aico has no file uploads
# or modals that would need it.)
MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024  # request line and headers; Slack's are under 2 KiB (Node: 16 KiB)
_SLICE = 4 * 1024  # bytes fed to the parser at a time while headers may be read
# Connections held open at once; fewer if the process may open fewer files (RLIMIT_NOFILE) than
# this plus FD_RESERVE for the store, the broker and Slack's API.
MAX_CONNECTIONS = 1000
FD_RESERVE = 100
MAX_PIPELINED = 8  # requests of one connection waiting to run before it is read no further
WORKERS = 16  # threads that run the WSGI app
BACKLOG = 1024  # connections the kernel queues before the loop accepts them
SUMMARY_EVERY = 60.0  # seconds between log lines that count what the deadlines and caps closed

_IDLE, _HEAD, _BODY = "idle", "head", "body"
_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}
_NO_BODY = {HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED}


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request that gets refused."""


@dataclass(slots=True)
class Request:
    """One request as read off the wire, complete."""

    method: str
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    peer: tuple[str, int] | None = None


def connection_cap(limit: int = MAX_CONNECTIONS) -> int:
    """How many connections to hold: `limit`, or fewer if the file descriptors allowed are."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limit
    return max(16, min(limit, soft - FD_RESERVE))


def environ_of(request: Request, server: tuple[str, int]) -> dict[str, Any]:
    """The WSGI environ (PEP 3333) of a complete request: what Bolt's WSGI adapter reads
    (REQUEST_METHOD, PATH_INFO, QUERY_STRING, CONTENT_TYPE, CONTENT_LENGTH, HTTP_*, wsgi.input)
    and the rest of the standard keys. A header whose name has an underscore is dropped, as
    nginx and gunicorn do: it would otherwise pass for its dashed twin (X_Slack_Signature)."""
    path, _, query = _origin_form(request.target).partition(b"?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{request.version}",
        "CONTENT_LENGTH": str(len(request.body)),  # chunked bodies too: they are read whole
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if request.peer:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = request.peer[0], str(request.peer[1])
    for raw_name, raw_value in request.headers:
        if b"_" in raw_name:
            continue
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_LENGTH":
            continue
        key = name if name == "CONTENT_TYPE" else "HTTP_" + name
        environ[key] = f"{environ[key]}, {value}" if key in environ else value
    return environ


def _origin_form(target: bytes) -> bytes:
    """`/path?query` of a request target, also when it came in absolute form."""
    if target.startswith(b"/"):
        return target
    if target == b"*":
        return b"*"
    url = httptools.parse_url(target)
    return (url.path or b"/") + (b"?" + url.query if url.query else b"")


def response_bytes(
    status: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    keep_alive: bool,
    version: str = "1.1",
    head: bool = False,
) -> bytes:
    """The answer on the wire: the app's status and headers with our own framing (Content-Length,
    and Connection when the client's version would not assume it)."""
    code = int(status.split(" ", 1)[0])
    lines = [f"HTTP/1.1 {status}".encode("latin-1")]
    length = None
    for name, value in headers:
        lowered = name.lower().encode("latin-1")
        if lowered == b"content-length":
            length = value  # a HEAD answer tells the length of what GET would send
        if lowered not in _HOP_BY_HOP:
            lines.append(f"{name}: {value}".encode("latin-1"))
    if code not in _NO_BODY and code >= 200:
        size = length if head and length is not None else str(len(body))
        lines.append(b"Content-Length: " + size.encode())
    if not keep_alive:
        lines.append(b"Connection: close")
    elif version == "1.0":
        lines.append(b"Connection: keep-alive")
    sent = b"" if head or code in _NO_BODY or code < 200 else body
    return b"\r\n".join(lines) + b"\r\n\r\n" + sent


def refusal(status: HTTPStatus, reason: str) -> bytes:
    """A short plain-text answer after which the connection is closed."""
    body = reason.encode() + b"\n"
    headers = [("Content-Type", "text/plain; charset=utf-8")]
    return response_bytes(f"{status.value} {status.phrase}", headers, body, keep_alive=False)


def run_app(app: WsgiApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Call the WSGI app and collect its whole answer (Slack's answers are small); an app that
    raises answers 500."""
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return chunks.append

    try:
        result = app(environ, start_response)
        try:
            chunks.extend(chunk for chunk in result if chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if not started:
            raise RuntimeError("the WSGI app returned without calling start_response")
    except Exception:
        log.exception("%s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
        text = [("Content-Type", "text/plain; charset=utf-8")]
        return "500 Internal Server Error", text, b"internal error\n"
    return started[0], started[1], b"".join(chunks)


class Server:
    """`app` on (host, port) until stop(): start() binds (an OSError if it cannot) and returns
    once the loop accepts connections; stop() stops accepting, lets the requests already read
    finish within `grace` seconds, and closes every connection."""

    def __init__(
        self,
        app: WsgiApp,
        host: str = "0.0.0.0",
        port: int = 0,
        *,
        workers: int = WORKERS,
        max_connections: int | None = None,
    ) -> None:
        self.app = app
        self.host, self.requested_port = host, port
        self.cap = connection_cap() if max_connections is None else max_connections
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="http-app")
        self.connections: set[_Connection] = set()
        # connections that wait on their client (idle, or a request half read), oldest first
        self.waiting: OrderedDict[_Connection, None] = OrderedDict()
        self.stopping = False
        self.grace = STOP_GRACE
        self.address = (host, port)  # SERVER_NAME and SERVER_PORT, once bound
        self.closed: Counter[str] = Counter()  # what the deadlines and caps closed, for the log
        self._summary_at = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._sock: socket.socket | None = None
        self._failed: Exception | None = None

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> Server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.requested_port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.address = (self.host, int(sock.getsockname()[1]))
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sock, ready), name="http")
        self._thread.daemon = True
        self._thread.start()
        ready.wait()
        if self._failed is not None:
            raise OSError(f"the HTTP server did not start: {self._failed}") from self._failed
        return self

    def stop(self, grace: float = STOP_GRACE) -> None:
        self.grace = grace
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(grace + 1.0)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- the loop's thread

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(sock, ready))
        except Exception as exc:
            self._failed = exc
            log.exception("the HTTP server stopped on an error")
        finally:
            ready.set()
            loop.close()
            sock.close()

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await loop.create_server(
            lambda: _Connection(self), sock=sock, backlog=BACKLOG, reuse_address=True
        )
        ready.set()
        await self._stop.wait()
        server.close()
        self.stopping = True
        for connection in list(self.connections):
            connection.shutdown()
        deadline = loop.time() + self.grace
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.abort()
        for _ in range(2):  # let the aborted transports close their sockets
            await asyncio.sleep(0)
        self._summarise(force=True)

    # -- what connections tell the server

    def opened(self, connection: _Connection) -> None:
        self.connections.add(connection)
        self.waiting[connection] = None
        if len(self.connections) > self.cap:
            victim = next(iter(self.waiting))  # the oldest waiting; at worst the new one itself
            self.closed["closed (over the connection cap)"] += 1
            victim.abort()
        self._summarise()

    def gone(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        self.waiting.pop(connection, None)

    def count(self, what: str) -> None:
        self.closed[what] += 1
        self._summarise()

    def _summarise(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.closed or (not force and now - self._summary_at < SUMMARY_EVERY):
            return
        counts = ", ".join(f"{n} {what}" for what, n in self.closed.most_common())
        log.warning("HTTP intake, last %.0f s: %s", now - self._summary_at, counts)
        self.closed.clear()
        self._summary_at = now


class _Connection(asyncio.Protocol):
    """One client connection: reads requests with httptools, runs them one at a time in the
    server's pool, writes the answers in order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer: tuple[str, int] | None = None
        self.reading = _IDLE  # which part of a request the client owes us
        self.queue: deque[Request] = deque()  # read, waiting for the one running to be answered
        self.running = False
        self.ignoring = False  # read no more: the connection closes after what it owes
        self.close_when_done = False
        self.last_words: bytes | None = None  # a refusal, sent once the running request is answered
        self.read_paused = False
        self.timer: asyncio.TimerHandle | None = None  # the client's deadline
        self.stall: asyncio.TimerHandle | None = None  # the writing (or lingering) deadline
        self.head_raw = 0
        self._new_request()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else None
        self._arm(FIRST_BYTE_TIMEOUT, "idle before a first byte")
        self.server.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.stall is not None:
            self.stall.cancel()
        self.transport = None
        self.server.gone(self)

    def data_received(self, data: bytes) -> None:
        if self.reading == _BODY or len(data) <= _SLICE:
            self._feed(data)
            return
        # Fed in slices while headers may be read: the bytes of unfinished headers are counted
        # slice by slice, however many arrived in one read (a server reading late gets a whole
        # never-ending header at once, and must still see it pass the limit).
        for start in range(0, len(data), _SLICE):
            if self.ignoring or self.transport is None:
                return
            if self.reading == _BODY:
                self._feed(data[start:])
                return
            self._feed(data[start : start + _SLICE])

    def _feed(self, data: bytes) -> None:
        if self.ignoring:
            return  # lingering after a refusal, or past an Upgrade: dropped
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.ignoring = True  # the rest is another protocol: see on_headers_complete
        except httptools.HttpParserError:
            if self.ignoring:  # bytes after a `Connection: close` request: dropped
                return
            self.refuse(HTTPStatus.BAD_REQUEST, "malformed HTTP request", "malformed")
            return
        if self.reading != _HEAD:
            return
        # Counted whole even when the request began inside this slice: at most _SLICE too many,
        # which the limit allows for (complete headers are measured exactly, on_headers_complete).
        self.head_raw += len(data)
        if self.head_raw > MAX_HEADER_BYTES + _SLICE:
            too_large = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            self.refuse(too_large, "request headers too large", "headers too large")

    def eof_received(self) -> bool:
        """The client sends no more (an HTTP/1.0 client may half-close after its request):
        answer what it sent, then close. A request half read is abandoned."""
        if self.reading != _IDLE or not (self.running or self.queue):
            return False  # the transport closes itself
        self.ignoring = self.close_when_done = True
        return True

    def pause_writing(self) -> None:
        if self.stall is None:
            self.stall = self.loop.call_later(WRITE_TIMEOUT, self._cut, "not reading answers")

    def resume_writing(self) -> None:
        if self.stall is not None and self.last_words is None:
            self.stall.cancel()
            self.stall = None

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self._new_request()
        self.reading = _HEAD
        self.head_raw = 0
        self._arm(HEADER_TIMEOUT, "past the header deadline")
        if not self.running and not self.queue:  # the youngest of those who wait on the client
            self.server.waiting.pop(self, None)
            self.server.waiting[self] = None

    def on_url(self, url: bytes) -> None:
        self.target += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        if self.head_size > MAX_HEADER_BYTES:
            too_large = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            self.refuse(too_large, "request headers too large", "headers too large")
            raise _Refused
        length, expect, framed = None, False, False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length, framed = int(value), True  # llhttp has checked it is a number
            elif lowered == b"transfer-encoding":
                framed = True
            elif lowered == b"expect":
                expect = value.strip().lower() == b"100-continue"
        if length is not None and length > MAX_BODY_BYTES:
            self.refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large", "too large")
            raise _Refused
        if self.parser.should_upgrade():
            # Nothing here speaks another protocol. llhttp skips an Upgrade's body, so only a
            # request without one can be answered (as if it had not asked); then we close.
            if framed or self.parser.get_method() == b"CONNECT":
                self.refuse(HTTPStatus.BAD_REQUEST, "upgrades are not supported", "upgrade")
                raise _Refused
            self.close_when_done = True
        self.reading = _BODY
        self._arm(BODY_TIMEOUT, "past the body deadline")
        first = not (self.running or self.queue) and self.parser.get_http_version() == "1.1"
        if expect and length and first and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        self.body_size += len(chunk)
        if self.body_size > MAX_BODY_BYTES:  # chunked: no Content-Length said so beforehand
            self.refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large", "too large")
            raise _Refused
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        parser = self.parser
        request = Request(
            method=parser.get_method().decode("ascii", "replace"),
            target=self.target,
            version=parser.get_http_version(),
            headers=self.headers,
            body=b"".join(self.body),
            keep_alive=parser.should_keep_alive() and not self.close_when_done,
            peer=self.peer,
        )
        self.queue.append(request)
        self.reading = _IDLE
        if not request.keep_alive:
            self.ignoring = True  # the last request of this connection
        self._new_request()
        if len(self.queue) >= MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
            self.read_paused = True
        self._next()

    # -- running requests, in order

    def _next(self) -> None:
        """Run the next request unless one runs; with none left, wait on the client again."""
        transport = self.transport
        if transport is None or self.running or self.last_words is not None:
            return
        if self.queue:
            request = self.queue.popleft()
            self.running = True
            self.server.waiting.pop(self, None)
            if self.reading == _IDLE:
                self._disarm()  # it waits on us, not on the client
            if self.read_paused and len(self.queue) < MAX_PIPELINED:
                self.read_paused = False
                transport.resume_reading()
                if self.reading != _IDLE:  # its deadline ran while we did not read: anew
                    self._arm(HEADER_TIMEOUT, "past the header deadline")
            future = self.loop.run_in_executor(self.server.pool, _answer, self.server, request)
            future.add_done_callback(self._answered)
        elif self.close_when_done or self.server.stopping:
            if self.reading == _IDLE:
                self._close()
        else:
            self.server.waiting[self] = None
            if self.reading == _IDLE:
                self._arm(KEEPALIVE_TIMEOUT, "idle past the keep-alive deadline")

    def _answered(self, future: asyncio.Future[tuple[bytes, bool]]) -> None:
        self.running = False
        if self.transport is None:
            return  # the client went away meanwhile
        try:
            data, keep_alive = future.result()
        except BaseException:  # cancelled at stop
            data, keep_alive = refusal(HTTPStatus.SERVICE_UNAVAILABLE, "stopping"), False
        self.transport.write(data)
        if self.last_words is not None:
            self._say_last_words()
        elif not keep_alive:
            self.queue.clear()
            self._close()
        else:
            self._next()

    # -- refusing and closing

    def refuse(self, status: HTTPStatus, reason: str, what: str) -> None:
        """Answer `status` (after the request running, if one is), then close once the client
        has had LINGER seconds to read it; what it sends meanwhile is dropped, so that no reset
        destroys the answer. Requests read after the running one get no answer."""
        if self.transport is None or self.last_words is not None:
            return
        self.server.count(f"refused ({what})")
        self.ignoring = True
        self._disarm()
        self.queue.clear()
        self.last_words = refusal(status, reason)
        if not self.running:
            self._say_last_words()

    def _say_last_words(self) -> None:
        assert self.transport is not None and self.last_words is not None
        self.transport.write(self.last_words)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.stall is not None:
            self.stall.cancel()
        self.stall = self.loop.call_later(LINGER, self.abort)

    def shutdown(self) -> None:
        """At stop: close now unless something was received that waits for its answer."""
        if not self.running and not self.queue and self.reading == _IDLE:
            self._close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _close(self) -> None:
        """Close once what was written has gone; cut off a client that does not read it."""
        if self.transport is None:
            return
        self._disarm()
        self.ignoring = True
        self.transport.close()
        if self.stall is None:
            self.stall = self.loop.call_later(WRITE_TIMEOUT, self.abort)

    def _cut(self, what: str) -> None:
        self.server.count(f"closed ({what})")
        self.abort()

    def _expired(self, what: str) -> None:
        self.timer = None
        if self.reading == _IDLE:
            self.server.count(f"closed ({what})")
            self._close()
        else:
            self.refuse(HTTPStatus.REQUEST_TIMEOUT, "request not received in time", what)

    # -- helpers

    def _new_request(self) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.head_size = 0

    def _arm(self, delay: float, what: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(delay, self._expired, what)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _answer(server: Server, request: Request) -> tuple[bytes, bool]:
    """In a pool thread: run the app on `request`; its answer as bytes, and whether the
    connection stays open after it."""
    status, headers, body = run_app(server.app, environ_of(request, server.address))
    asked_close = any(
        name.lower() == "connection" and "close" in value.lower() for name, value in headers
    )
    keep_alive = request.keep_alive and not asked_close and not server.stopping
    data = response_bytes(
        status,
        headers,
        body,
        keep_alive=keep_alive,
        version=request.version,
        head=request.method == "HEAD",
    )
    return data, keep_alive
