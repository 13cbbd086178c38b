"""A fake Anthropic API on 127.0.0.1 that the real `anthropic` SDK talks to: Messages and Models.

    with FakeClaude(label="[offline model]") as fake:
        client = anthropic.Anthropic(api_key="test", base_url=fake.url)

Messages. `POST /v1/messages` is checked like the real API and answered with
`"Answer to: <last user message>"`, so a test can prove that an answer belongs to its prompt, as
JSON or, with `"stream": true`, as server-sent events (`message_start`, `content_block_start`,
`ping`, `content_block_delta` x N, `content_block_stop`, `message_delta`, `message_stop`) sent
with chunked transfer encoding. Token counts are word counts; an answer longer than `max_tokens`
words is cut there with `stop_reason: "max_tokens"`. A call is recorded just before the last byte
of its answer is sent, so once a client has its answer, `calls` has it too. Checks, in order:
a body over `max_request_bytes` (default 32 MB, as the API) gets 413 `request_too_large` unread
and unparsed, before anything else (the API's 413 comes from its edge); no key in `x-api-key` or,
as the 2.x SDK sends it, `Authorization: Bearer` -> 401 (with `api_key`, any other key too);
no `anthropic-version` -> 400; a bad `model` / `max_tokens` / `messages` / `stream` /
`temperature` -> 400 naming the field; a `model` that is in `retired` or not in `models` -> 404
`not_found_error` with the message `"model: <id>"`, as the API answers; on the strict-sampling
families (`STRICT_SAMPLING`: every id starting with claude-sonnet-5, claude-opus-5,
claude-haiku-5, claude-fable-5 or claude-mythos-5) a `temperature` other than 1, any `top_p`,
any `top_k`, or `thinking: {"type": "enabled"}` -> 400 naming the field. Other models accept
them. `models` (default `CURRENT_MODELS`) and `retired` (default `RETIRED_MODELS`) may be
replaced while running.

Models. `GET /v1/models/{id}` (the SDK's `models.retrieve`) answers the model object (`type`,
`id`, `display_name`, `created_at` in RFC 3339, `lifecycle`, `line`, `deprecated_at`,
`retires_at`); an unknown id gets 404 `not_found_error` (`"model: <id>"`). As in the real API
(see the SDK's `ModelInfo.lifecycle`), a retired model stays in the catalogue with `lifecycle:
"retired"` while requests naming it fail, and a served model with a date in `RETIREMENT_DATES`
is "deprecated" (still served). `GET /v1/models` (`models.list`) answers a page `{"data",
"has_more", "first_id", "last_id"}`, most recent first (the order of `models`), honouring
`limit` (1..1000, default 20), `after_id`, `before_id` and `lifecycle` (by default active and
deprecated models only; retired ones only when asked for). A date the fake does not know is the
epoch, as the API allows for release dates. The same key and `anthropic-version` checks apply.
These requests are recorded in `model_calls` (`model_lookups`: the ids retrieved), not in
`calls`, and never count as in flight.

Errors are sent as the API sends them: body `{"type": "error", "error": {"type", "message"},
"request_id"}`, a `request-id` header, and `x-should-retry` (true for 429 / 500 / 529). A 429
also sends `retry-after: <retry_after>` (default 0: the SDK then uses its own backoff, about
0.5 s for the first retry) and the `anthropic-ratelimit-requests-limit/-remaining/-reset` and
`anthropic-ratelimit-tokens-limit/-remaining/-reset` headers (resets in RFC 3339).

Latency: a JSON answer waits `latency` seconds; a stream waits `latency / 2` before its headers
and spreads the other half over the gaps between its text deltas.

Faults, taken by a request that passed the checks above, first from `fail_next`, then from
`fault_next`, then from `fail_for`, then drawn by `flaky`; `hang_next` holds a request without
answering (to trip client timeouts) and adds to any of them. Waits end early on `stop()`.
The kinds (`FAULT_KINDS`):
- "429", "500", "529", "413": that API error instead of an answer (`fail_next` / `fail_for`
  take any status);
- "error_event": a stream gets its 200, `message_start` and `after_deltas` text deltas, then
  `event: error` with `{"type": "error", "error": {"type": "overloaded_error", "message":
  "Overloaded"}}` and the end of the response, without `message_stop` (the SDK raises an
  `APIStatusError` whose status is 200 and whose `type` is "overloaded_error"); a JSON request
  gets a 529 instead, the API's non-streaming form of the same failure;
- "cut": a stream is cut after `after_deltas` text deltas (the socket is shut down without the
  terminating chunk: the client sees an incomplete chunked read); a JSON request's connection
  is closed without any answer, recorded with status `NOT_ANSWERED` (0);
- "refusal": the text of the first `after_deltas` deltas, then `stop_reason: "refusal"` with
  `stop_details` (in `message_delta` when streaming);
- "max_tokens": the same with `stop_reason: "max_tokens"`.
Every `Call` records the fault it got in `fault` (the kind, or the status as a string for
`fail_next` / `fail_for`; None when nothing was injected) and keeps the HTTP status it got: an
error_event, cut or refusal stream is still a 200. `prompts()`, `answered(prompt)` and
`requests(prompt)` count only complete, clean answers (status 200, no fault) or every request.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
RETRYABLE_STATUSES = (429, 500, 529)
WORDS_PER_DELTA = 3
CLIENT_GONE = 499  # the status recorded when the client hung up before its answer
NOT_ANSWERED = 0  # the status recorded when a "cut" closed a JSON request's connection unanswered
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # the Messages API's limit
RATE_LIMIT_REQUESTS = 50  # per minute, sent in the anthropic-ratelimit-requests-* headers
RATE_LIMIT_TOKENS = 30_000  # per minute, sent in the anthropic-ratelimit-tokens-* headers
_SHUTDOWN_POLL = 0.05  # seconds; how quickly `stop()` returns
_DISCARD_CHUNK = 64 * 1024

# The models the fake serves by default, most recent first ("claude-fake-1" is the unit tests').
CURRENT_MODELS: tuple[str, ...] = (
    "claude-sonnet-5-5",
    "claude-opus-5-5",
    "claude-fable-5-1",
    "claude-sonnet-5",
    "claude-opus-5",
    "claude-opus-4-8",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "claude-haiku-4-5-20251001",
    "claude-fake-1",
)
# Models past their retirement date: requests naming them get a 404.
RETIRED_MODELS: tuple[str, ...] = (
    "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-1",
    "claude-opus-4-0",
    "claude-sonnet-4-0",
    "claude-sonnet-4-20250514",
    "claude-3-7-sonnet-latest",
    "claude-3-5-haiku",
)
# Retirement dates the fake knows (any other shows the epoch); a served model with one of them
# is "deprecated" (it is served, but headed for retirement), as in the SDK's DEPRECATED_MODELS.
RETIREMENT_DATES = {
    "claude-sonnet-4-5": "2026-11-30",
    "claude-sonnet-4-5-20250929": "2026-11-30",
    "claude-opus-4-5": "2027-01-22",
    "claude-opus-4-5-20251101": "2027-01-22",
}
# Model families that accept only default sampling and adaptive thinking (400 otherwise).
STRICT_SAMPLING = (
    "claude-sonnet-5",
    "claude-opus-5",
    "claude-haiku-5",
    "claude-fable-5",
    "claude-mythos-5",
)
FAULT_KINDS = ("429", "500", "529", "413", "error_event", "cut", "refusal", "max_tokens")
_STREAM_FAULTS = ("error_event", "cut")
_STOP_FAULTS = ("refusal", "max_tokens")
_MODEL_LINES = ("haiku", "sonnet", "opus", "fable", "mythos")
_EPOCH = "1970-01-01T00:00:00Z"
_FAULT_MESSAGES = {
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "This request would exceed the rate limit for your organization (injected).",
    500: "Internal server error",
    529: "Overloaded",
}
OVERLOADED_EVENT = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
REFUSAL_DETAILS = {
    "type": "refusal",
    "category": "general_harms",
    "explanation": "This request was declined (a refusal injected by FakeClaude).",
}

Responder = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Call:
    """One request as the fake saw it; `at` is `time.monotonic()` on arrival.

    `status` is the HTTP status answered, `CLIENT_GONE` (499) when the client had gone before
    the answer, or `NOT_ANSWERED` (0) when a "cut" fault closed a JSON request's connection
    before any answer. `fault` is the fault injected into it (a `FAULT_KINDS` kind, or the
    status of `fail_next` / `fail_for` as a string), None when none was. `path` is the
    request's path (Models API requests are in `FakeClaude.model_calls`).
    """

    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    status: int
    fault: str | None = None
    path: str = "/v1/messages"


class _ApiError(Exception):
    """An error answer: its HTTP status and the API's error message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _Injected:
    """The fault (if any) one request gets, where in its answer, and how long it is held first."""

    kind: str | None = None
    after_deltas: int = 2
    hang: float = 0.0

    @property
    def status(self) -> int | None:
        return int(self.kind) if self.kind is not None and self.kind.isdigit() else None


@dataclass
class _Faults:
    fail_count: int = 0
    fail_status: int = 529
    fail_until: float = 0.0
    fail_for_status: int = 529
    hang_count: int = 0
    hang_seconds: float = 0.0
    queue: deque[tuple[str, int]] = field(default_factory=deque)
    rates: dict[str, float] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    flaky_after_deltas: int = 2


class FakeClaude:
    """A threaded HTTP/1.1 fake of the Messages and Models APIs; see the module docstring.

    `responder(request_body) -> str` replaces the default answer; `label`, when set, prefixes
    every answer (the default one or the responder's) to show which fake answered. With
    `api_key`, any other `x-api-key` gets a 401. `latency`, `models`, `retired`,
    `retry_after` and `max_request_bytes` may be changed while running.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        responder: Responder | None = None,
        label: str | None = None,
        api_key: str | None = None,
        *,
        models: Collection[str] = CURRENT_MODELS,
        retired: Collection[str] = RETIRED_MODELS,
        retry_after: float = 0,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self.latency = latency
        self.responder = responder
        self.label = label
        self.api_key = api_key
        self.models = models
        self.retired = retired
        self.retry_after = retry_after
        self.max_request_bytes = max_request_bytes
        self.in_flight = 0
        self.max_in_flight = 0
        self._calls: list[Call] = []
        self._model_calls: list[Call] = []
        self._faults = _Faults()
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._server = _Server((host, port), _Handler, self)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def calls(self) -> list[Call]:
        """Every Messages API request (every POST), in the order they were answered."""
        with self._changed:
            return list(self._calls)

    @property
    def model_calls(self) -> list[Call]:
        """Every Models API request (every GET)."""
        with self._changed:
            return list(self._model_calls)

    @property
    def model_lookups(self) -> list[str]:
        """The model ids asked for with `GET /v1/models/{id}` (`models.retrieve`), in order."""
        prefix = "/v1/models/"
        return [
            unquote(c.path.removeprefix(prefix))
            for c in self.model_calls
            if c.path.startswith(prefix)
        ]

    def prompts(self) -> list[str]:
        """The last user message of every call that got a complete, clean answer, in order."""
        return [_last_user_text(call.body) for call in self.calls if _clean(call)]

    def answered(self, prompt: str) -> int:
        """How many calls whose last user message is `prompt` got a complete, clean answer."""
        return sum(
            1 for call in self.calls if _clean(call) and _last_user_text(call.body) == prompt
        )

    def requests(self, prompt: str) -> int:
        """How many calls (answered or not, retries included) had `prompt` as last user message."""
        return sum(1 for call in self.calls if _last_user_text(call.body) == prompt)

    def start(self) -> FakeClaude:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _SHUTDOWN_POLL},
            name="fake-claude",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, cut open connections and wake held requests; idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self._server.close_connections()

    def __enter__(self) -> FakeClaude:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def fail_next(self, count: int = 1, status: int = 529) -> None:
        """Answer the next `count` requests with an API error of `status`."""
        with self._changed:
            self._faults.fail_count, self._faults.fail_status = count, status

    def fail_for(self, seconds: float, status: int = 529) -> None:
        """Answer every request with an API error of `status` for the next `seconds`."""
        with self._changed:
            self._faults.fail_until = time.monotonic() + seconds
            self._faults.fail_for_status = status

    def fault_next(self, kind: str, count: int = 1, after_deltas: int = 2) -> None:
        """Give the next `count` requests the fault `kind` (one of `FAULT_KINDS`), after
        `after_deltas` text deltas for the kinds that break an answer off; queued after any
        earlier `fault_next`."""
        _check_kind(kind)
        if count < 0 or after_deltas < 0:
            raise ValueError("count and after_deltas must be >= 0")
        with self._changed:
            self._faults.queue.extend([(kind, after_deltas)] * count)

    def flaky(
        self, rates: Mapping[str, float], seed: int | None = None, after_deltas: int = 2
    ) -> None:
        """From now on every request draws at most one fault, each kind with its rate, e.g.
        `{"529": 0.1, "error_event": 0.1}`, from a `random.Random(seed)`; `flaky({})` stops it."""
        for kind, rate in rates.items():
            _check_kind(kind)
            if not 0 <= rate <= 1:
                raise ValueError(f"the rate of {kind!r} must be between 0 and 1, not {rate}")
        if sum(rates.values()) > 1:
            raise ValueError("the rates add up to more than 1")
        with self._changed:
            self._faults.rates = dict(rates)
            self._faults.rng = random.Random(seed)
            self._faults.flaky_after_deltas = after_deltas

    def hang_next(self, count: int = 1, seconds: float = 30.0) -> None:
        """Hold the next `count` requests for `seconds` before answering them."""
        with self._changed:
            self._faults.hang_count, self._faults.hang_seconds = count, seconds

    def wait_for(self, predicate: Callable[[FakeClaude], bool], timeout: float = 5.0) -> None:
        """Block until `predicate(self)` holds, re-checked whenever a request starts or ends."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self), timeout):
                raise TimeoutError(
                    f"FakeClaude: condition not met within {timeout}s "
                    f"({len(self._calls)} calls, {self.in_flight} in flight)"
                )

    def _answer(self, body: dict[str, Any]) -> str:
        """The answer to a valid request before `max_tokens` truncation, prefixed by the label."""
        if self.responder is not None:
            text = self.responder(body)
        else:
            text = f"Answer to: {_last_user_text(body)}"
        return f"{self.label} {text}" if self.label else text

    def _lifecycle(self, model: str) -> str | None:
        """The model's lifecycle stage; None for a model the fake does not know."""
        if model in self.retired:
            return "retired"
        if model in self.models:
            return "deprecated" if model in RETIREMENT_DATES else "active"
        return None

    def _catalogue(self) -> list[tuple[str, str]]:
        """(id, lifecycle) of every model the Models API lists, most recent first."""
        served = [m for m in _ordered(self.models) if m not in self.retired]
        listed = [(model, self._lifecycle(model) or "active") for model in served]
        return listed + [(model, "retired") for model in _ordered(self.retired)]

    def _next_id(self) -> int:
        return next(self._ids)

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the fake stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _take_fault(self) -> _Injected:
        """The fault and hang time the current request gets."""
        faults = self._faults
        with self._changed:
            hang = 0.0
            if faults.hang_count > 0:
                faults.hang_count -= 1
                hang = faults.hang_seconds
            if faults.fail_count > 0:
                faults.fail_count -= 1
                return _Injected(str(faults.fail_status), hang=hang)
            if faults.queue:
                kind, after_deltas = faults.queue.popleft()
                return _Injected(kind, after_deltas, hang)
            if time.monotonic() < faults.fail_until:
                return _Injected(str(faults.fail_for_status), hang=hang)
            if faults.rates:
                draw, threshold = faults.rng.random(), 0.0
                for kind in FAULT_KINDS:
                    threshold += faults.rates.get(kind, 0.0)
                    if draw < threshold:
                        return _Injected(kind, faults.flaky_after_deltas, hang)
            return _Injected(hang=hang)

    def _request_started(self) -> None:
        with self._changed:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._changed.notify_all()

    def _request_finished(self, call: Call) -> None:
        with self._changed:
            self.in_flight -= 1
            self._calls.append(call)
            self._changed.notify_all()

    def _model_request_finished(self, call: Call) -> None:
        with self._changed:
            self._model_calls.append(call)
            self._changed.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the benchmark opens many connections at once

    def __init__(self, address: tuple[str, int], handler: type, fake: FakeClaude) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut idle keep-alive connections too, so a stopped fake really is gone."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log."""

    def handle(self) -> None:
        """Serve the connection's requests; a client that reset it between two requests (e.g.
        after it stopped reading a broken stream) just ends it."""
        with contextlib.suppress(ConnectionError):
            super().handle()

    def do_POST(self) -> None:
        self._begin(messages=True)
        self.server.fake._request_started()
        unanswered = 500  # recorded if the fake itself fails before answering
        try:
            self._post(self.server.fake)
        except _ApiError as err:
            self._send_error(err)
        except OSError:  # the client hung up while we were answering
            self.close_connection = True
            unanswered = CLIENT_GONE
        finally:
            self._record(unanswered)

    def do_GET(self) -> None:
        self._begin(messages=False)
        unanswered = 500
        try:
            self._get(self.server.fake)
        except _ApiError as err:
            self._send_error(err)
        except OSError:
            self.close_connection = True
            unanswered = CLIENT_GONE
        finally:
            self._record(unanswered)

    def _begin(self, messages: bool) -> None:
        self._arrived = time.monotonic()
        self._messages = messages
        self._body: dict[str, Any] = {}
        self._fault: str | None = None
        self._recorded = False

    def _record(self, status: int) -> None:
        """Record this call once, with the status it got; it is no longer in flight."""
        if self._recorded:
            return
        self._recorded = True
        headers = {name.lower(): value for name, value in self.headers.items()}
        path = self.path.split("?")[0]
        call = Call(self._body, headers, self._arrived, status, self._fault, path)
        if self._messages:
            self.server.fake._request_finished(call)
        else:
            self.server.fake._model_request_finished(call)

    def _client_gone(self) -> bool:
        """Whether the client closed its end, e.g. after its own timeout."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)

    def _read_body(self, limit: int | None = None) -> bytes | None:
        """The request body, or None when it is longer than `limit` (then read and dropped)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError as err:
            self.close_connection = True
            raise _ApiError(400, "Content-Length: not a number") from err
        if limit is None or length <= limit:
            return self.rfile.read(length)
        while length > 0:  # drained unparsed, so that the 413 reaches the client
            chunk = self.rfile.read(min(length, _DISCARD_CHUNK))
            if not chunk:
                break
            length -= len(chunk)
        return None

    def _post(self, fake: FakeClaude) -> None:
        raw = self._read_body(limit=fake.max_request_bytes)
        if raw is None:
            raise _ApiError(
                413,
                f"Request exceeds the maximum allowed number of bytes ({fake.max_request_bytes}).",
            )
        if self.path.split("?")[0] != "/v1/messages":
            raise _ApiError(404, f"Not found: POST {self.path}")
        self._check_headers(fake)
        self._body = body = _parse_json(raw)
        _validate(body)
        model = body["model"]
        if fake._lifecycle(model) in (None, "retired"):
            raise _ApiError(404, f"model: {model}")
        _check_sampling(model, body)
        injected = fake._take_fault()
        fake._sleep(injected.hang)
        self._fault = injected.kind
        stream = bool(body.get("stream"))
        if injected.status is not None:
            raise _ApiError(injected.status, _fault_message(injected.status))
        if injected.kind == "error_event" and not stream:
            raise _ApiError(529, _fault_message(529))
        if injected.kind == "cut" and not stream:
            self._cut(NOT_ANSWERED)
            return
        reply = _Reply.build(fake, body, injected)
        if stream:
            self._stream(fake, reply, injected)
        else:
            fake._sleep(fake.latency)
            self._send_json(200, reply.message(), reply.request_id)

    def _get(self, fake: FakeClaude) -> None:
        self._read_body()
        url = urlsplit(self.path)
        self._check_headers(fake)
        if url.path.rstrip("/") == "/v1/models":
            page = _model_page(fake, parse_qs(url.query))
        elif url.path.startswith("/v1/models/"):
            page = _model_info(fake, unquote(url.path.removeprefix("/v1/models/")))
        else:
            raise _ApiError(404, f"Not found: GET {url.path}")
        self._send_json(200, page, _request_id(fake))

    def _check_headers(self, fake: FakeClaude) -> None:
        key = self._api_key()
        if not key:
            raise _ApiError(401, "x-api-key header (or Authorization: Bearer) is required")
        if fake.api_key is not None and key != fake.api_key:
            raise _ApiError(401, "invalid x-api-key")
        if not self.headers.get("anthropic-version"):
            raise _ApiError(400, "anthropic-version: header is required")

    def _api_key(self) -> str | None:
        """The key from `x-api-key`, or from `Authorization: Bearer`, which SDK 2.x sends."""
        bearer = (self.headers.get("authorization") or "").removeprefix("Bearer ").strip()
        return self.headers.get("x-api-key") or bearer or None

    def _stream(self, fake: FakeClaude, reply: _Reply, injected: _Injected) -> None:
        fake._sleep(fake.latency / 2)
        if self._hung_up():
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", reply.request_id)
        self.end_headers()
        deltas = reply.deltas()
        broken = injected.kind in _STREAM_FAULTS
        if broken:
            deltas = deltas[: injected.after_deltas]
        gap, pause = fake.latency / 2 / max(1, len(deltas) - 1), 0.0
        for event in reply.opening():
            self._write_event(event)
        for event in reply.delta_events(deltas):
            fake._sleep(pause)
            pause = gap
            self._write_event(event)
        if injected.kind == "cut":
            self._cut(200)
            return
        if injected.kind == "error_event":
            self._record(200)  # before the client can read the event that ends its stream
            self._write_event(OVERLOADED_EVENT, name="error")
        else:
            for event in reply.closing():
                self._write_event(event)
        self._record(200)
        self._write_chunk(b"")

    def _write_event(self, event: dict[str, Any], name: str | None = None) -> None:
        self._write_chunk(f"event: {name or event['type']}\ndata: {json.dumps(event)}\n\n".encode())

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _cut(self, status: int) -> None:
        """Record the call, then shut the connection down without another byte."""
        self.close_connection = True
        self._record(status)
        with contextlib.suppress(OSError):  # the client may be gone already
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_error(self, err: _ApiError) -> None:
        fake = self.server.fake
        request_id = _request_id(fake)
        error_type = ERROR_TYPES.get(err.status, "api_error")
        body = {
            "type": "error",
            "error": {"type": error_type, "message": err.message},
            "request_id": request_id,
        }
        headers = {"x-should-retry": "true" if err.status in RETRYABLE_STATUSES else "false"}
        if err.status == 429:
            headers.update(_rate_limit_headers(fake.retry_after))
        self._send_json(err.status, body, request_id, headers)

    def _send_json(
        self,
        status: int,
        body: dict[str, Any],
        request_id: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self._hung_up():
            return
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self._record(status)
        self.wfile.write(data)

    def _hung_up(self) -> bool:
        """Whether the client has gone; if so the call is recorded as such and not answered."""
        gone = self._client_gone()
        if gone:
            self.close_connection = True
            self._record(CLIENT_GONE)
        return gone


@dataclass(frozen=True)
class _Reply:
    """The answer to one valid request, as a JSON message or as stream events."""

    id: str
    request_id: str
    model: str
    text: str
    stop_reason: str
    input_tokens: int
    output_tokens: int
    stop_details: dict[str, Any] | None = None

    @classmethod
    def build(cls, fake: FakeClaude, body: dict[str, Any], injected: _Injected) -> _Reply:
        text = fake._answer(body)
        words = re.findall(r"\s*\S+", text)
        max_tokens = body["max_tokens"]
        stop_reason, stop_details = "end_turn", None
        if len(words) > max_tokens:
            text, stop_reason = "".join(words[:max_tokens]), "max_tokens"
        if injected.kind in _STOP_FAULTS:
            text = "".join(_deltas(text)[: injected.after_deltas])
            stop_reason = injected.kind
            stop_details = REFUSAL_DETAILS if injected.kind == "refusal" else None
        number = fake._next_id()
        return cls(
            id=f"msg_fake_{number:06d}",
            request_id=f"req_fake_{number:06d}",
            model=body["model"],
            text=text,
            stop_reason=stop_reason,
            input_tokens=_count_input_words(body),
            output_tokens=max(1, len(text.split())),
            stop_details=stop_details,
        )

    def message(self) -> dict[str, Any]:
        return {
            **self._envelope(),
            "content": [{"type": "text", "text": self.text}],
            "stop_reason": self.stop_reason,
            "stop_details": self.stop_details,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        }

    def deltas(self) -> list[str]:
        """The text cut into deltas of a few words; joined they give back the text exactly."""
        return _deltas(self.text)

    def opening(self) -> Iterator[dict[str, Any]]:
        start_usage = {"input_tokens": self.input_tokens, "output_tokens": 1}
        yield {
            "type": "message_start",
            "message": {
                **self._envelope(),
                "content": [],
                "stop_reason": None,
                "usage": start_usage,
            },
        }
        yield {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        yield {"type": "ping"}

    @staticmethod
    def delta_events(deltas: list[str]) -> Iterator[dict[str, Any]]:
        for text in deltas:
            delta = {"type": "text_delta", "text": text}
            yield {"type": "content_block_delta", "index": 0, "delta": delta}

    def closing(self) -> Iterator[dict[str, Any]]:
        yield {"type": "content_block_stop", "index": 0}
        delta: dict[str, Any] = {"stop_reason": self.stop_reason, "stop_sequence": None}
        if self.stop_details is not None:
            delta["stop_details"] = self.stop_details
        yield {
            "type": "message_delta",
            "delta": delta,
            "usage": {"output_tokens": self.output_tokens},
        }
        yield {"type": "message_stop"}

    def _envelope(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "stop_sequence": None,
        }


def _deltas(text: str) -> list[str]:
    pieces = re.findall(r"\S+\s*|\s+", text)
    return [
        "".join(pieces[start : start + WORDS_PER_DELTA])
        for start in range(0, len(pieces), WORDS_PER_DELTA)
    ]


def _clean(call: Call) -> bool:
    return call.status == 200 and call.fault is None


def _check_kind(kind: str) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")


def _fault_message(status: int) -> str:
    return _FAULT_MESSAGES.get(status) or f"Injected fault: {ERROR_TYPES.get(status, 'api_error')}"


def _request_id(fake: FakeClaude) -> str:
    return f"req_fake_{fake._next_id():06d}"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rate_limit_headers(retry_after: float) -> dict[str, str]:
    """What a 429 sends: when to retry, and the request limit spent until the reset."""
    reset = _rfc3339(datetime.now(UTC) + timedelta(seconds=max(0.0, retry_after)))
    return {
        "retry-after": f"{retry_after:g}",
        "anthropic-ratelimit-requests-limit": str(RATE_LIMIT_REQUESTS),
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": str(RATE_LIMIT_TOKENS),
        "anthropic-ratelimit-tokens-remaining": str(RATE_LIMIT_TOKENS),
        "anthropic-ratelimit-tokens-reset": reset,
    }


def _ordered(models: Collection[str]) -> list[str]:
    """The ids in their given order (sorted when given as an unordered set), without repeats."""
    ids = sorted(models) if isinstance(models, set | frozenset) else list(models)
    return list(dict.fromkeys(ids))


def _display_name(model: str) -> str:
    """E.g. "claude-sonnet-5-5" -> "Claude Sonnet 5.5", "claude-3-7-sonnet-latest" -> "Claude 3.7
    Sonnet"."""
    words = re.sub(r"-(latest|\d{8})$", "", model).split("-")
    parts: list[str] = []
    for word in words:
        if word.isdigit() and parts and parts[-1][-1].isdigit():
            parts[-1] += f".{word}"
        else:
            parts.append(word.capitalize())
    return " ".join(parts)


def _model_object(model: str, lifecycle: str) -> dict[str, Any]:
    snapshot = re.search(r"-(\d{4})(\d{2})(\d{2})$", model)
    created = "{}-{}-{}T00:00:00Z".format(*snapshot.groups()) if snapshot else _EPOCH
    retires = f"{RETIREMENT_DATES[model]}T00:00:00Z" if model in RETIREMENT_DATES else _EPOCH
    line = next((name for name in _MODEL_LINES if name in model.split("-")), None)
    active = lifecycle == "active"
    return {
        "type": "model",
        "id": model,
        "display_name": _display_name(model),
        "created_at": created,
        "lifecycle": lifecycle,
        "line": line,
        "deprecated_at": None if active else _EPOCH,  # the fake does not know when
        "retires_at": None if active else retires,
    }


def _model_info(fake: FakeClaude, model: str) -> dict[str, Any]:
    lifecycle = fake._lifecycle(model)
    if lifecycle is None:
        raise _ApiError(404, f"model: {model}")
    return _model_object(model, lifecycle)


def _model_page(fake: FakeClaude, query: dict[str, list[str]]) -> dict[str, Any]:
    """One page of the catalogue, as `GET /v1/models` answers it."""
    wanted = query.get("lifecycle[]", []) + query.get("lifecycle", [])
    for stage in wanted:
        if stage not in ("active", "deprecated", "retired"):
            raise _ApiError(400, f"lifecycle: unknown lifecycle stage {stage!r}")
    stages = set(wanted) or {"active", "deprecated"}
    limit_text = (query.get("limit") or ["20"])[-1]
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
        raise _ApiError(400, "limit: Input should be an integer between 1 and 1000")
    limit = int(limit_text)
    after, before = (query.get("after_id") or [None])[-1], (query.get("before_id") or [None])[-1]
    if after and before:
        raise _ApiError(400, "after_id: cannot be given together with before_id")
    listed = [(model, stage) for model, stage in fake._catalogue() if stage in stages]
    ids = [model for model, _ in listed]
    for name, cursor in (("after_id", after), ("before_id", before)):
        if cursor and cursor not in ids:
            raise _ApiError(400, f"{name}: {cursor} is not in the list")
    if after:
        rest = listed[ids.index(after) + 1 :]
        page, has_more = rest[:limit], len(rest) > limit
    elif before:
        rest = listed[: ids.index(before)]
        page, has_more = rest[-limit:], len(rest) > limit
    else:
        page, has_more = listed[:limit], len(listed) > limit
    return {
        "data": [_model_object(model, stage) for model, stage in page],
        "has_more": has_more,
        "first_id": page[0][0] if page else None,
        "last_id": page[-1][0] if page else None,
    }


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError as err:
        raise _ApiError(400, f"The request body is not valid JSON: {err}") from err
    if not isinstance(body, dict):
        raise _ApiError(400, "The request body must be a JSON object")
    return body


def _validate(body: dict[str, Any]) -> None:
    """Reject what the real API rejects, with a message that names the field."""
    model = body.get("model")
    if model is None:
        raise _ApiError(400, "model: Field required")
    if not isinstance(model, str) or not model:
        raise _ApiError(400, "model: Input should be a non-empty string")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _ApiError(400, "max_tokens: Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _ApiError(400, "max_tokens: Input should be an integer greater than or equal to 1")
    _validate_messages(body.get("messages"))
    if not isinstance(body.get("stream", False), bool):
        raise _ApiError(400, "stream: Input should be a valid boolean")
    temperature = body.get("temperature", 1)
    number = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    if not number or not 0 <= temperature <= 1:
        raise _ApiError(400, "temperature: Input should be a number between 0 and 1")


def _check_sampling(model: str, body: dict[str, Any]) -> None:
    """The strict-sampling families take only default sampling and adaptive thinking."""
    if not model.startswith(STRICT_SAMPLING):
        return
    if body.get("temperature", 1) != 1:
        raise _ApiError(400, f"temperature: only the default (1) is supported on {model}")
    for name in ("top_p", "top_k"):
        if name in body:
            raise _ApiError(400, f"{name}: is not supported on {model}; remove it")
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        raise _ApiError(
            400,
            f'thinking.type: "enabled" is not supported on {model}; use "adaptive" with '
            "output_config.effort",
        )


def _validate_messages(messages: Any) -> None:
    if messages is None:
        raise _ApiError(400, "messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise _ApiError(400, "messages: at least one message is required")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _ApiError(400, f"messages.{index}.role: Input should be 'user' or 'assistant'")
        if not isinstance(message.get("content"), str | list):
            raise _ApiError(400, f"messages.{index}.content: Field required")
    if messages[0]["role"] != "user":
        raise _ApiError(400, 'messages: first message must use the "user" role')


def _content_text(content: Any) -> str:
    """The text of a message `content` or `system`: a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (block.get("text", "") for block in content if isinstance(block, dict))
        return "\n".join(text for text in texts if text)
    return ""


def _last_user_text(body: dict[str, Any]) -> str:
    users = [
        m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"
    ]
    return _content_text(users[-1].get("content")) if users else ""


def _count_input_words(body: dict[str, Any]) -> int:
    texts = [_content_text(m.get("content")) for m in body["messages"]]
    texts.append(_content_text(body.get("system")))
    return sum(len(text.split()) for text in texts)
