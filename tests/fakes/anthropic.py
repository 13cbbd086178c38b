"""A fake Anthropic Messages API on 127.0.0.1 that the real `anthropic` SDK talks to.

    with FakeClaude(label="[offline model]") as fake:
        client = anthropic.Anthropic(api_key="test", base_url=fake.url)

`POST /v1/messages` is validated like the real API (401 without a key, given in `x-api-key` or,
as the 2.x SDK sends it, in `Authorization: Bearer`; 400 without `anthropic-version` or with a bad
`model` / `max_tokens` / `messages`) and answered with `"Answer to: <last user message>"`, so a
test can prove that an answer belongs to its prompt, as JSON or, with `"stream": true`, as
server-sent events (`message_start`, `content_block_start`, `ping`, `content_block_delta` x N,
`content_block_stop`, `message_delta`, `message_stop`) sent with chunked transfer encoding.
Token counts are word counts. A call is recorded just before the last byte of its answer is sent,
so once a client has its answer, `calls` has it too.

Latency: a JSON answer waits `latency` seconds; a stream waits `latency / 2` before its headers
and spreads the other half over the gaps between its text deltas.

Faults: `fail_next` / `fail_for` answer with an API error body (429 also sends `retry-after: 0`;
the SDK treats 0 as "no hint" and uses its own backoff, about 0.5 s for the first retry);
`hang_next` holds a request without answering, to trip client timeouts. Waits end early on `stop()`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
WORDS_PER_DELTA = 3
CLIENT_GONE = 499  # the status recorded when the client hung up before its answer
_SHUTDOWN_POLL = 0.05  # seconds; how quickly `stop()` returns

Responder = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Call:
    """One request as the fake saw it; `at` is `time.monotonic()` on arrival.

    `status` is the HTTP status answered, or 499 when the client had gone before the answer.
    """

    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    status: int


class _ApiError(Exception):
    """An error answer: its HTTP status and the API's error message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Faults:
    fail_count: int = 0
    fail_status: int = 529
    fail_until: float = 0.0
    fail_for_status: int = 529
    hang_count: int = 0
    hang_seconds: float = 0.0


class FakeClaude:
    """A threaded HTTP/1.1 fake of the Messages API; see the module docstring.

    `responder(request_body) -> str` replaces the default answer; `label`, when set, prefixes
    every answer (the default one or the responder's) to show which fake answered. With
    `api_key`, any other `x-api-key` gets a 401. `latency` may be changed while running.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        responder: Responder | None = None,
        label: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self.latency = latency
        self.responder = responder
        self.label = label
        self.api_key = api_key
        self.in_flight = 0
        self.max_in_flight = 0
        self._calls: list[Call] = []
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
        with self._changed:
            return list(self._calls)

    def prompts(self) -> list[str]:
        """The last user message of every call that was answered with 200, in order."""
        return [_last_user_text(call.body) for call in self.calls if call.status == 200]

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

    def _next_id(self) -> int:
        return next(self._ids)

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the fake stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _take_fault(self) -> tuple[int | None, float]:
        """The error status and hang time the current request gets (None / 0.0 for none)."""
        faults = self._faults
        with self._changed:
            hang = 0.0
            if faults.hang_count > 0:
                faults.hang_count -= 1
                hang = faults.hang_seconds
            if faults.fail_count > 0:
                faults.fail_count -= 1
                return faults.fail_status, hang
            if time.monotonic() < faults.fail_until:
                return faults.fail_for_status, hang
            return None, hang

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

    def do_POST(self) -> None:
        self._arrived = time.monotonic()
        self._body: dict[str, Any] = {}
        self._recorded = False
        self.server.fake._request_started()
        unanswered = 500  # recorded if the fake itself fails before answering
        try:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(self.server.fake, raw)
        except _ApiError as err:
            self._send_error(err)
        except OSError:  # the client hung up while we were answering
            self.close_connection = True
            unanswered = CLIENT_GONE
        finally:
            self._record(unanswered)

    def _record(self, status: int) -> None:
        """Record this call once, with the status it got; it is no longer in flight."""
        if not self._recorded:
            self._recorded = True
            headers = {name.lower(): value for name, value in self.headers.items()}
            self.server.fake._request_finished(Call(self._body, headers, self._arrived, status))

    def _client_gone(self) -> bool:
        """Whether the client closed its end, e.g. after its own timeout."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)

    def _answer(self, fake: FakeClaude, raw: bytes) -> None:
        if self.path.split("?")[0] != "/v1/messages":
            raise _ApiError(404, f"Not found: POST {self.path}")
        self._check_headers(fake)
        self._body = body = _parse_json(raw)
        fault, hang = fake._take_fault()
        fake._sleep(hang)
        if fault is not None:
            raise _ApiError(fault, f"Injected fault: {ERROR_TYPES.get(fault, 'api_error')}")
        _validate(body)
        reply = _Reply.build(fake, body)
        if body.get("stream"):
            self._stream(fake, reply)
        else:
            fake._sleep(fake.latency)
            self._send_json(200, reply.message(), reply.request_id)

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

    def _stream(self, fake: FakeClaude, reply: _Reply) -> None:
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
        gap, pause = fake.latency / 2 / max(1, len(deltas) - 1), 0.0
        for event in reply.events(deltas):
            if event["type"] == "content_block_delta":
                fake._sleep(pause)
                pause = gap
            self._write_chunk(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        self._record(200)
        self._write_chunk(b"")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _send_error(self, err: _ApiError) -> None:
        error_type = ERROR_TYPES.get(err.status, "api_error")
        body = {"type": "error", "error": {"type": error_type, "message": err.message}}
        headers = {"x-should-retry": "true" if err.status in (429, 500, 529) else "false"}
        if err.status == 429:
            headers["retry-after"] = "0"
        request_id = f"req_fake_{self.server.fake._next_id():06d}"
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

    @classmethod
    def build(cls, fake: FakeClaude, body: dict[str, Any]) -> _Reply:
        text = fake._answer(body)
        words = re.findall(r"\s*\S+", text)
        max_tokens = body["max_tokens"]
        truncated = len(words) > max_tokens
        number = fake._next_id()
        return cls(
            id=f"msg_fake_{number:06d}",
            request_id=f"req_fake_{number:06d}",
            model=body["model"],
            text="".join(words[:max_tokens]) if truncated else text,
            stop_reason="max_tokens" if truncated else "end_turn",
            input_tokens=_count_input_words(body),
            output_tokens=max(1, min(len(words), max_tokens)),
        )

    def message(self) -> dict[str, Any]:
        return {
            **self._envelope(),
            "content": [{"type": "text", "text": self.text}],
            "stop_reason": self.stop_reason,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        }

    def deltas(self) -> list[str]:
        """The text cut into deltas of a few words; joined they give back the text exactly."""
        pieces = re.findall(r"\S+\s*|\s+", self.text)
        return [
            "".join(pieces[start : start + WORDS_PER_DELTA])
            for start in range(0, len(pieces), WORDS_PER_DELTA)
        ]

    def events(self, deltas: list[str]) -> Iterator[dict[str, Any]]:
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
        for text in deltas:
            delta = {"type": "text_delta", "text": text}
            yield {"type": "content_block_delta", "index": 0, "delta": delta}
        yield {"type": "content_block_stop", "index": 0}
        yield {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
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
