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
no `anthropic-version` -> 400; a bad `model` / `max_tokens` / `messages` (and their content
blocks) / `tools` / `tool_choice` / `stream` / `temperature` -> 400 naming the field (see
"Content blocks" and "Tools" below); a `model` that is in `retired` or not in `models` -> 404
`not_found_error` with the message `"model: <id>"`, as the API answers; on the strict-sampling
families (`STRICT_SAMPLING`: every id starting with claude-sonnet-5, claude-opus-5,
claude-haiku-5, claude-fable-5 or claude-mythos-5) a `temperature` other than 1, any `top_p`,
any `top_k`, or `thinking: {"type": "enabled"}` -> 400 naming the field. Other models accept
them. `models` (default `CURRENT_MODELS`) and `retired` (default `RETIRED_MODELS`) may be
replaced while running.

Content blocks. A message's `content` is a string or a non-empty list of blocks (only a final
assistant message may be empty), each checked as the API checks it, 400 naming the field
(`messages.<i>.content.<j>.<type>...`) otherwise: `text` (a non-empty string); `image` (user;
`source` base64 with `media_type` image/jpeg, png, gif or webp, `data` valid base64 whose
bytes start as that type does, and at most `MAX_IMAGE_BYTES` (5 MiB) of base64 text, which is
what the API measures: "image exceeds 5 MB maximum: N bytes > 5242880 bytes"; or `source` url);
`document` (user; base64 `application/pdf` whose bytes start with %PDF-, text `text/plain`,
url, or content; at most `MAX_PDF_PAGES` (100) pages in the request, pages counted as
`/Type /Page` objects; the 32 MB of a request is `max_request_bytes`); `tool_use` (assistant;
`id` matching `TOOL_USE_ID_PATTERN`, `name`, `input` an object); `tool_result` (user;
`tool_use_id`, `content` a string or text / image / document blocks, `is_error` a boolean);
`thinking` and `redacted_thinking` (assistant). Another type, or a block in the wrong role's
message, is a 400. The API's pairing rule holds: every `tool_use` of an assistant message must
be answered by `tool_result` blocks at the start of the next message ("`tool_use` ids were
found without `tool_result` blocks immediately after: ..."), and a `tool_result` must answer a
`tool_use` of the message just before it ("unexpected `tool_use_id` found in `tool_result`
blocks: ..."); a request holding either kind of block must define `tools`. "Answer to: ..."
quotes the last user message's text blocks and its tool results' text, joined by newlines.

Tools. `tools` is a list of custom tools: `name` matching `TOOL_NAME_PATTERN`
(^[a-zA-Z0-9_-]{1,64}$), optional `description`, `input_schema` an object schema (`"type":
"object"`), no keys the API does not know (e.g. OpenAI's `parameters`), names unique ("tools:
Tool names must be unique."). `tool_choice` is {"type": "auto" | "any" | "tool" | "none"},
`name` required for and only for "tool" and naming one of the tools, optional
`disable_parallel_tool_use` (a boolean; not on "none"); a `tool_choice` without tools, or one
that forces a tool ("any", "tool") while `thinking` is enabled or adaptive, is a 400. The
answer calls a tool when `tool_choice` is "tool" (that one), "any" (the first scripted tool,
else the first tool) or "auto" / absent with a scripted tool (the first): one `tool_use` block
{"type", "id": "toolu_<24 letters and digits>", "name", "input"} with `stop_reason:
"tool_use"`; streamed, `content_block_start` carries the block with `input: {}`, then
`content_block_delta`s of `input_json_delta` carry the input's JSON in `partial_json` pieces
of a few words. Otherwise the answer is text, as above. The input is scripted by the test in
`tool_answers`, keyed by tool name: a dict (every call), a list of dicts (one per answered call,
the last one repeating; a stream that breaks off with "error_event" or "cut" does not use its
item up, so the retry gets it) or `f(request_body) -> dict`; a script that raises or gives no
object makes the request a 500 that says so. Scripted inputs are sent as they are, valid for the
schema or not, so a test can make Claude wrong. Unscripted, the input is the smallest one the
fake finds valid for `input_schema`: required properties only, one item per array, an enum's
first value, a number's minimum (or 1), `true`, and for strings "Answer to: <last user text>"
(the `responder`'s text and the `label` when set), local `$ref`s followed, `anyOf` / `oneOf`
by their first choice. The output tokens of a tool call are the words of its input's JSON; an
input longer than `max_tokens` words is cut there with `stop_reason: "max_tokens"` (a JSON
answer then shows `input: {}`, a stream the pieces before the cut), and the "refusal" and
"max_tokens" faults cut it after `after_deltas` pieces the same way. Input tokens also count
the words of the tool inputs in the messages and of the `tools` as JSON. Every `Call` keeps the
`tools` offered, the `tool_choice` and the `tool_use` answered (its input whole);
`tool_inputs(name)` lists the inputs of the complete, clean calls of a tool.

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

Faults, taken by a request that passed the checks above, first from `fault_when` (a function
of the request's body that names a fault kind or a status, or None), then from `fail_next`, then
from `fault_next`, then from `fail_for`, then drawn by `flaky`; `hang_next` holds a request without
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

import base64
import binascii
import contextlib
import itertools
import json
import random
import re
import select
import socket
import ssl
import string
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
# Tool use, as the Messages API checks it (docs: "Tool use", "Vision", "PDF support").
TOOL_NAME_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
TOOL_USE_ID_PATTERN = "^[a-zA-Z0-9_-]+$"
TOOL_CHOICE_TYPES = ("auto", "any", "tool", "none")
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # of an image's base64 text, which is what the API measures
MAX_PDF_PAGES = 100  # in one request, all documents together
_TOOL_KEYS = frozenset(
    {
        "type",
        "name",
        "description",
        "input_schema",
        "cache_control",
        "strict",
        "input_examples",
        "defer_loading",
        "allowed_callers",
        "eager_input_streaming",
    }
)
_BLOCK_ROLES = {
    "text": ("user", "assistant"),
    "image": ("user",),
    "document": ("user",),
    "tool_use": ("assistant",),
    "tool_result": ("user",),
    "thinking": ("assistant",),
    "redacted_thinking": ("assistant",),
}
_TOOL_RESULT_BLOCKS = ("text", "image", "document")
_FORCING_CHOICES = ("any", "tool")
_ID_ALPHABET = string.ascii_letters + string.digits
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")

Responder = Callable[[dict[str, Any]], str]
# What `tool_answers` maps a tool's name to: the input, a list of inputs, or a function of the body.
ToolScript = Callable[[dict[str, Any]], dict[str, Any]] | dict[str, Any] | list[dict[str, Any]]


@dataclass(frozen=True)
class Call:
    """One request as the fake saw it; `at` is `time.monotonic()` on arrival.

    `status` is the HTTP status answered, `CLIENT_GONE` (499) when the client had gone before
    the answer, or `NOT_ANSWERED` (0) when a "cut" fault closed a JSON request's connection
    before any answer. `fault` is the fault injected into it (a `FAULT_KINDS` kind, or the
    status of `fail_next` / `fail_for` as a string), None when none was. `path` is the
    request's path (Models API requests are in `FakeClaude.model_calls`). `tool_use` is the
    `tool_use` block answered (`id`, `name`, `input`, the input whole even when `max_tokens` or a
    fault cut what the client got), None for a text answer; `tools` and `tool_choice` are what
    the request offered.
    """

    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    status: int
    fault: str | None = None
    path: str = "/v1/messages"
    tool_use: dict[str, Any] | None = None

    @property
    def tools(self) -> list[str]:
        """The names of the tools the request offered, in order."""
        tools = self.body.get("tools")
        return (
            [t.get("name") for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
        )

    @property
    def tool_choice(self) -> dict[str, Any] | None:
        choice = self.body.get("tool_choice")
        return choice if isinstance(choice, dict) else None


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
    `retry_after`, `max_request_bytes`, `tool_answers` (see the module docstring) and
    `idle_timeout` may be changed while running. Connections are kept alive (HTTP/1.1); with
    `idle_timeout` one that waits longer for its next request is closed without a word.
    `connections` counts those accepted, `idle_closes` those closed for idling. `tls` (a
    server-side `ssl.SSLContext`) serves https instead.
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
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.latency = latency
        self.responder = responder
        # A fault chosen by the request itself: body -> a fault kind or an HTTP status as text
        # ("400", "529", "refusal", …), or None for no fault. Taken before the other faults.
        self.fault_when: Callable[[dict[str, Any]], str | None] | None = None
        self.label = label
        self.api_key = api_key
        self.models = models
        self.retired = retired
        self.retry_after = retry_after
        self.max_request_bytes = max_request_bytes
        # Seconds a kept-alive connection may wait for its next request before the fake closes
        # it without a word (None: never), as servers do.
        self.idle_timeout: float | None = None
        self.tool_answers: dict[str, ToolScript] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._calls: list[Call] = []
        self._model_calls: list[Call] = []
        self._faults = _Faults()
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._tool_ids = random.Random()
        self._server = _Server((host, port), _Handler, self)
        self._server.tls = tls
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{'https' if self._server.tls else 'http'}://{host}:{port}"

    @property
    def connections(self) -> int:
        """How many connections the fake has accepted since it started."""
        return self._server.opened

    @property
    def idle_closes(self) -> int:
        """How many of them it closed because they idled past `idle_timeout`."""
        return self._server.idle_closed

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

    def tool_inputs(self, name: str) -> list[dict[str, Any]]:
        """The inputs of the calls of tool `name` answered completely and cleanly, in order."""
        return [
            call.tool_use["input"]
            for call in self.calls
            if _clean(call) and call.tool_use is not None and call.tool_use["name"] == name
        ]

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

    def _chosen_tool(self, body: dict[str, Any]) -> str | None:
        """The tool the answer calls, None for a text answer: the one `tool_choice` names; for
        "any" the first scripted tool, else the first tool; for "auto" (the default) the first
        scripted tool, else none."""
        names = [tool["name"] for tool in body.get("tools") or []]
        choice = body.get("tool_choice") or {"type": "auto"}
        if not names or choice["type"] == "none":
            return None
        if choice["type"] == "tool":
            return str(choice["name"])
        scripted = [name for name in names if name in self.tool_answers]
        if choice["type"] == "any":
            return (scripted or names)[0]
        return scripted[0] if scripted else None

    def _tool_input(self, body: dict[str, Any], name: str, consume: bool) -> dict[str, Any]:
        """The input of the call of `name`: scripted by `tool_answers` (a list gives its first
        item, removed when `consume` unless it is the last), else the smallest input valid for
        the tool's `input_schema`. A script that fails or gives no JSON object is a 500."""
        script = self.tool_answers.get(name)
        if script is None or (isinstance(script, list) and not script):
            tool = next(tool for tool in body["tools"] if tool["name"] == name)
            schema = tool["input_schema"]
            return _minimal(schema, self._answer(body), schema)
        try:
            if callable(script):
                value: Any = script(body)
            elif isinstance(script, list):
                with self._changed:
                    value = script.pop(0) if consume and len(script) > 1 else script[0]
            else:
                value = script
            value = json.loads(json.dumps(value))  # a copy, and proof that it is JSON
        except Exception as err:  # the test's own script failed: say so in the answer
            raise _ApiError(500, f"tool_answers[{name!r}] failed: {err!r}") from err
        if not isinstance(value, dict):
            raise _ApiError(
                500, f"tool_answers[{name!r}] gave {type(value).__name__}, not an object"
            )
        return value

    def _tool_use_id(self) -> str:
        with self._changed:
            return "toolu_" + "".join(self._tool_ids.choices(_ID_ALPHABET, k=24))

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

    def _take_fault(self, body: dict[str, Any] | None = None) -> _Injected:
        """The fault and hang time the current request gets."""
        if self.fault_when is not None and body is not None:
            chosen = self.fault_when(body)
            if chosen is not None:
                return _Injected(chosen)
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
        self.opened = self.idle_closed = 0
        self.tls: ssl.SSLContext | None = None  # serves https with it
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
            self.opened += 1
        super().process_request(request, client_address)

    def closed_idle(self) -> None:
        with self._connections_lock:
            self.idle_closed += 1

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

    def setup(self) -> None:
        if self.server.tls is not None:  # the handshake, in this connection's own thread
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def handle(self) -> None:
        """Serve the connection's requests; a client that reset it between two requests (e.g.
        after it stopped reading a broken stream) just ends it."""
        with contextlib.suppress(ConnectionError):
            super().handle()

    def handle_one_request(self) -> None:
        """Wait for the next request's first byte for at most the fake's `idle_timeout`
        seconds (None: for ever), as a server closes a kept-alive connection that idles."""
        idle = self.server.fake.idle_timeout
        if idle is not None:
            self.connection.settimeout(idle)
            try:
                self.rfile.peek(1)
            except TimeoutError:
                self.close_connection = True
                with contextlib.suppress(OSError):  # the FIN goes out before it is counted
                    self.connection.shutdown(socket.SHUT_RDWR)
                self.server.closed_idle()
                return
            finally:
                self.connection.settimeout(None)
        super().handle_one_request()

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
        self._tool_use: dict[str, Any] | None = None
        self._recorded = False

    def _record(self, status: int) -> None:
        """Record this call once, with the status it got; it is no longer in flight."""
        if self._recorded:
            return
        self._recorded = True
        headers = {name.lower(): value for name, value in self.headers.items()}
        path = self.path.split("?")[0]
        call = Call(self._body, headers, self._arrived, status, self._fault, path, self._tool_use)
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
        injected = fake._take_fault(body)
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
        self._tool_use = reply.tool_use
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
    """The answer to one valid request, as a JSON message or as stream events: a text block, or
    a `tool_use` block whose input is sent as JSON (`text` is what is sent of either)."""

    id: str
    request_id: str
    model: str
    text: str
    stop_reason: str
    input_tokens: int
    output_tokens: int
    stop_details: dict[str, Any] | None = None
    tool_use: dict[str, Any] | None = None

    @classmethod
    def build(cls, fake: FakeClaude, body: dict[str, Any], injected: _Injected) -> _Reply:
        tool_use, text, stop_reason = None, "", "end_turn"
        tool = fake._chosen_tool(body)
        if tool is None:
            text = fake._answer(body)
        else:  # a broken stream is no answer: a scripted list keeps its item for the retry
            tool_input = fake._tool_input(body, tool, consume=injected.kind not in _STREAM_FAULTS)
            tool_use = {"id": fake._tool_use_id(), "name": tool, "input": tool_input}
            text, stop_reason = json.dumps(tool_input), "tool_use"
        words = re.findall(r"\s*\S+", text)
        max_tokens = body["max_tokens"]
        stop_details = None
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
            tool_use=tool_use,
        )

    def message(self) -> dict[str, Any]:
        return {
            **self._envelope(),
            "content": [self._block(whole=True)],
            "stop_reason": self.stop_reason,
            "stop_details": self.stop_details,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        }

    def deltas(self) -> list[str]:
        """The text (or the input's JSON) cut into deltas of a few words; joined they give back
        the text exactly."""
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
        yield {"type": "content_block_start", "index": 0, "content_block": self._block(whole=False)}
        yield {"type": "ping"}

    def delta_events(self, deltas: list[str]) -> Iterator[dict[str, Any]]:
        for text in deltas:
            if self.tool_use is None:
                delta = {"type": "text_delta", "text": text}
            else:
                delta = {"type": "input_json_delta", "partial_json": text}
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

    def _block(self, whole: bool) -> dict[str, Any]:
        """The content block: whole in a JSON answer, empty where a stream starts it. A tool's
        input cut short (max_tokens, refusal) is no JSON object: a JSON answer shows {}."""
        if self.tool_use is None:
            return {"type": "text", "text": self.text if whole else ""}
        complete = whole and self.stop_reason == "tool_use"
        return {
            "type": "tool_use",
            "id": self.tool_use["id"],
            "name": self.tool_use["name"],
            "input": self.tool_use["input"] if complete else {},
        }

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
    names = _validate_tools(body.get("tools"))
    _validate_tool_choice(body.get("tool_choice"), names, body.get("thinking"))
    _validate_content(body["messages"], has_tools=bool(names))
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


def _validate_tools(tools: Any) -> list[str]:
    """The names of the request's tools, each checked as the API checks a custom tool."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _ApiError(400, "tools: Input should be a valid list")
    names = [_validate_tool(tool, f"tools.{index}") for index, tool in enumerate(tools)]
    if len(set(names)) != len(names):
        raise _ApiError(400, "tools: Tool names must be unique.")
    return names


def _validate_tool(tool: Any, where: str) -> str:
    if not isinstance(tool, dict):
        raise _ApiError(400, f"{where}: Input should be a valid dictionary or object")
    kind = tool.get("type", "custom")
    if kind not in (None, "custom"):  # server tools (web search, bash, ...) run at Anthropic
        raise _ApiError(400, f"{where}.type: FakeClaude knows only custom tools, not {kind!r}")
    where += ".custom"
    extra = sorted(set(tool) - _TOOL_KEYS)
    if extra:
        raise _ApiError(400, f"{where}.{extra[0]}: Extra inputs are not permitted")
    name = tool.get("name")
    if name is None:
        raise _ApiError(400, f"{where}.name: Field required")
    if not isinstance(name, str) or not re.fullmatch(TOOL_NAME_PATTERN[1:-1], name):
        raise _ApiError(400, f"{where}.name: String should match pattern '{TOOL_NAME_PATTERN}'")
    if not isinstance(tool.get("description", ""), str):
        raise _ApiError(400, f"{where}.description: Input should be a valid string")
    schema = tool.get("input_schema")
    if schema is None:
        raise _ApiError(400, f"{where}.input_schema: Field required")
    if not isinstance(schema, dict):
        raise _ApiError(400, f"{where}.input_schema: Input should be a valid dictionary")
    if schema.get("type") != "object":
        raise _ApiError(400, f"{where}.input_schema.type: Input should be 'object'")
    return name


def _validate_tool_choice(choice: Any, names: list[str], thinking: Any) -> None:
    if choice is None:
        return
    if not names:
        raise _ApiError(400, "tool_choice: tool_choice may only be specified while providing tools")
    if not isinstance(choice, dict):
        raise _ApiError(400, "tool_choice: Input should be a valid dictionary or object")
    kind = choice.get("type")
    if kind not in TOOL_CHOICE_TYPES:
        raise _ApiError(
            400,
            f"tool_choice: Input tag {kind!r} found using 'type' does not match "
            "any of the expected tags: 'auto', 'any', 'tool', 'none'",
        )
    allowed = {"type"} | ({"name"} if kind == "tool" else set())
    allowed |= set() if kind == "none" else {"disable_parallel_tool_use"}
    extra = sorted(set(choice) - allowed)
    if extra:
        raise _ApiError(400, f"tool_choice.{kind}.{extra[0]}: Extra inputs are not permitted")
    if kind == "tool" and "name" not in choice:
        raise _ApiError(400, "tool_choice.tool.name: Field required")
    if kind == "tool" and choice["name"] not in names:
        raise _ApiError(400, f"tool_choice.tool.name: no tool named {choice['name']!r} in tools")
    if not isinstance(choice.get("disable_parallel_tool_use", False), bool):
        raise _ApiError(
            400, f"tool_choice.{kind}.disable_parallel_tool_use: Input should be a valid boolean"
        )
    thinks = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    if thinks and kind in _FORCING_CHOICES:
        raise _ApiError(400, "Thinking may not be enabled when tool_choice forces tool use.")


@dataclass
class _Seen:
    """What the content check found across the whole request."""

    pdf_pages: int = 0
    tool_blocks: bool = False


def _validate_content(messages: list[dict[str, Any]], has_tools: bool) -> None:
    """Every content block checked as the API checks it, then the pairing of tool calls with
    their results."""
    seen = _Seen()
    last = len(messages) - 1
    for index, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, str):
            continue
        if not content and not (index == last and message["role"] == "assistant"):
            raise _ApiError(
                400,
                f"messages.{index}: all messages must have non-empty content except for the "
                "optional final assistant message",
            )
        for number, block in enumerate(content):
            _validate_block(block, f"messages.{index}.content.{number}", message["role"], seen)
    if seen.pdf_pages > MAX_PDF_PAGES:
        raise _ApiError(400, f"A maximum of {MAX_PDF_PAGES} PDF pages may be provided.")
    if seen.tool_blocks and not has_tools:
        raise _ApiError(
            400, "Requests which include `tool_use` or `tool_result` blocks must define tools."
        )
    _check_tool_pairing(messages)


def _validate_block(block: Any, where: str, role: str, seen: _Seen) -> None:
    if not isinstance(block, dict):
        raise _ApiError(400, f"{where}: Input should be a valid dictionary or object")
    kind = block.get("type")
    if kind not in _BLOCK_ROLES:
        expected = ", ".join(f"'{name}'" for name in _BLOCK_ROLES)
        raise _ApiError(
            400,
            f"{where}: Input tag {kind!r} found using 'type' does not match any of the "
            f"expected tags: {expected}",
        )
    if role not in _BLOCK_ROLES[kind]:
        raise _ApiError(400, f"{where}.{kind}: `{kind}` blocks are not allowed in {role} messages")
    seen.tool_blocks |= kind in ("tool_use", "tool_result")
    _BLOCK_CHECKS[kind](block, f"{where}.{kind}", seen)


def _check_text(block: dict[str, Any], where: str, seen: _Seen) -> None:
    text = block.get("text")
    if not isinstance(text, str):
        raise _ApiError(400, f"{where}.text: Input should be a valid string")
    if not text:
        raise _ApiError(400, "messages: text content blocks must be non-empty")


def _check_image(block: dict[str, Any], where: str, seen: _Seen) -> None:
    source = _source(block, where, ("base64", "url"))
    where = f"{where}.source.{source['type']}"
    if source["type"] == "url":
        _check_url(source, where)
        return
    media_type = source.get("media_type")
    if media_type not in IMAGE_MEDIA_TYPES:
        raise _ApiError(
            400,
            f"{where}.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or "
            "'image/webp'",
        )
    data = source.get("data")
    if isinstance(data, str) and len(data) > MAX_IMAGE_BYTES:
        raise _ApiError(
            400,
            f"{where}: image exceeds 5 MB maximum: {len(data)} bytes > {MAX_IMAGE_BYTES} bytes",
        )
    if not _looks_like(media_type, _decoded(data, f"{where}.data")):
        raise _ApiError(
            400, f"{where}.data: Image does not match the provided media type {media_type}"
        )


def _check_document(block: dict[str, Any], where: str, seen: _Seen) -> None:
    source = _source(block, where, ("base64", "text", "url", "content"))
    kind = source["type"]
    where = f"{where}.source.{kind}"
    if kind == "url":
        _check_url(source, where)
    elif kind == "content":
        content = source.get("content")
        if isinstance(content, list):
            for number, inner in enumerate(content):
                _validate_block(inner, f"{where}.content.{number}", "user", seen)
        elif not isinstance(content, str):
            raise _ApiError(400, f"{where}.content: Input should be a valid string or list")
    elif kind == "text":
        if source.get("media_type") != "text/plain":
            raise _ApiError(400, f"{where}.media_type: Input should be 'text/plain'")
        if not isinstance(source.get("data"), str):
            raise _ApiError(400, f"{where}.data: Input should be a valid string")
    else:
        if source.get("media_type") != "application/pdf":
            raise _ApiError(400, f"{where}.media_type: Input should be 'application/pdf'")
        pdf = _decoded(source.get("data"), f"{where}.data")
        if not pdf.startswith(b"%PDF-"):
            raise _ApiError(400, f"{where}.data: The PDF specified was not valid.")
        seen.pdf_pages += max(1, len(_PDF_PAGE.findall(pdf)))


def _check_tool_use(block: dict[str, Any], where: str, seen: _Seen) -> None:
    _check_tool_use_id(block.get("id"), f"{where}.id")
    if not isinstance(block.get("name"), str) or not block["name"]:
        raise _ApiError(400, f"{where}.name: Input should be a non-empty string")
    if not isinstance(block.get("input"), dict):
        raise _ApiError(400, f"{where}.input: Input should be a valid dictionary")


def _check_tool_result(block: dict[str, Any], where: str, seen: _Seen) -> None:
    _check_tool_use_id(block.get("tool_use_id"), f"{where}.tool_use_id")
    content = block.get("content", "")
    if isinstance(content, list):
        for number, inner in enumerate(content):
            inner_where = f"{where}.content.{number}"
            if isinstance(inner, dict) and inner.get("type") not in _TOOL_RESULT_BLOCKS:
                raise _ApiError(
                    400, f"{inner_where}: a tool_result holds only text, image or document blocks"
                )
            _validate_block(inner, inner_where, "user", seen)
    elif not isinstance(content, str):
        raise _ApiError(400, f"{where}.content: Input should be a valid string or list")
    if not isinstance(block.get("is_error", False), bool):
        raise _ApiError(400, f"{where}.is_error: Input should be a valid boolean")


def _check_thinking(block: dict[str, Any], where: str, seen: _Seen) -> None:
    for key in ("thinking", "signature"):
        if not isinstance(block.get(key), str):
            raise _ApiError(400, f"{where}.{key}: Input should be a valid string")


def _check_redacted_thinking(block: dict[str, Any], where: str, seen: _Seen) -> None:
    if not isinstance(block.get("data"), str):
        raise _ApiError(400, f"{where}.data: Input should be a valid string")


_BLOCK_CHECKS: dict[str, Callable[[dict[str, Any], str, _Seen], None]] = {
    "text": _check_text,
    "image": _check_image,
    "document": _check_document,
    "tool_use": _check_tool_use,
    "tool_result": _check_tool_result,
    "thinking": _check_thinking,
    "redacted_thinking": _check_redacted_thinking,
}


def _source(block: dict[str, Any], where: str, kinds: tuple[str, ...]) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _ApiError(400, f"{where}.source: Field required")
    if source.get("type") not in kinds:
        expected = ", ".join(f"'{kind}'" for kind in kinds)
        raise _ApiError(
            400,
            f"{where}.source: Input tag {source.get('type')!r} found using 'type' does not "
            f"match any of the expected tags: {expected}",
        )
    return source


def _check_url(source: dict[str, Any], where: str) -> None:
    url = source.get("url")
    if not isinstance(url, str) or not re.match(r"https?://[^\s/]+", url):
        raise _ApiError(400, f"{where}.url: Input should be a valid URL")


def _check_tool_use_id(value: Any, where: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(TOOL_USE_ID_PATTERN[1:-1], value):
        raise _ApiError(400, f"{where}: String should match pattern '{TOOL_USE_ID_PATTERN}'")


def _decoded(data: Any, where: str) -> bytes:
    if not isinstance(data, str):
        raise _ApiError(400, f"{where}: Input should be a valid string")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise _ApiError(400, f"{where}: invalid base64 data") from err


def _looks_like(media_type: str, data: bytes) -> bool:
    """Whether the bytes start as an image of that type does (its magic number)."""
    if media_type == "image/webp":
        return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    magic = {
        "image/jpeg": (b"\xff\xd8\xff",),
        "image/png": (b"\x89PNG\r\n\x1a\n",),
        "image/gif": (b"GIF87a", b"GIF89a"),
    }
    return data.startswith(magic[media_type])


def _check_tool_pairing(messages: list[dict[str, Any]]) -> None:
    """The API's rule: each `tool_use` of an assistant message is answered by a `tool_result`
    at the start of the next message, and each `tool_result` answers a `tool_use` of the
    message just before it."""
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            following = messages[index + 1] if index + 1 < len(messages) else None
            answered = _leading_results(following) if following is not None else set()
            missing = [id_ for id_ in _tool_use_ids(message) if id_ not in answered]
            if missing:
                raise _ApiError(
                    400,
                    f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have "
                    "a corresponding `tool_result` block in the next message.",
                )
            continue
        previous = messages[index - 1] if index > 0 else None
        known = set(_tool_use_ids(previous)) if previous is not None else set()
        for number, block in enumerate(_blocks(message)):
            if block.get("type") == "tool_result" and block["tool_use_id"] not in known:
                raise _ApiError(
                    400,
                    f"messages.{index}.content.{number}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {block['tool_use_id']}. Each `tool_result` block "
                    "must have a corresponding `tool_use` block in the previous message.",
                )


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return (
        [block for block in content if isinstance(block, dict)] if isinstance(content, list) else []
    )


def _tool_use_ids(message: dict[str, Any]) -> list[str]:
    if message.get("role") != "assistant":
        return []
    return [block["id"] for block in _blocks(message) if block.get("type") == "tool_use"]


def _leading_results(message: dict[str, Any]) -> set[str]:
    """The ids answered by the `tool_result` blocks a user message starts with."""
    if message.get("role") != "user":
        return set()
    ids = set()
    for block in _blocks(message):
        if block.get("type") != "tool_result":
            break
        ids.add(block["tool_use_id"])
    return ids


def _minimal(schema: Any, text: str, root: dict[str, Any], depth: int = 0) -> Any:
    """The smallest value valid for a JSON schema, as far as the fake reads schemas: required
    properties only, one item per array, an enum's first value, a number's minimum (or 1),
    and `text` for strings; local `$ref`s are followed, `anyOf` / `oneOf` take their first."""
    if not isinstance(schema, dict) or depth > 32:
        return text
    if isinstance(schema.get("$ref"), str):
        return _minimal(_resolve(root, schema["$ref"]), text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _minimal(schema[key][0], text, root, depth + 1)
    if schema.get("allOf"):
        return _minimal(_merged(schema, root), text, root, depth + 1)
    kind = schema.get("type") or _implied_type(schema)
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            name: _minimal(properties.get(name, {}), text, root, depth + 1)
            for name in schema.get("required") or []
        }
    if kind == "array":
        count = max(1, schema.get("minItems", 0))
        if schema.get("maxItems") == 0:
            count = 0
        return [_minimal(schema.get("items", {}), text, root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _minimal_number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    value = text[: schema["maxLength"]] if "maxLength" in schema else text
    return value + "x" * max(0, schema.get("minLength", 0) - len(value))


def _implied_type(schema: dict[str, Any]) -> str:
    if "properties" in schema or "required" in schema:
        return "object"
    return "array" if "items" in schema else "string"


def _minimal_number(schema: dict[str, Any], integer: bool) -> int | float:
    value: int | float = 1
    if "minimum" in schema:
        value = schema["minimum"]
    elif "exclusiveMinimum" in schema:
        value = schema["exclusiveMinimum"] + 1
    if "maximum" in schema and value > schema["maximum"]:
        value = schema["maximum"]
    return int(value) if integer and value == int(value) else value


def _merged(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """An `allOf` as one object schema: the parts' properties and required names together."""
    merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    for part in [schema, *schema["allOf"]]:
        if isinstance(part, dict) and isinstance(part.get("$ref"), str):
            part = _resolve(root, part["$ref"])
        if not isinstance(part, dict):
            continue
        merged["properties"].update(part.get("properties") or {})
        merged["required"] += [n for n in part.get("required") or [] if n not in merged["required"]]
    return merged


def _resolve(root: dict[str, Any], ref: str) -> Any:
    """A local JSON pointer (`#/$defs/step`); anything else resolves to {} (a string)."""
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        key = part.replace("~1", "/").replace("~0", "~")
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _content_text(content: Any) -> str:
    """The text of a message `content` or `system`: a string, or the text of its text blocks
    and of its `tool_result` blocks' content."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (_block_text(block) for block in content if isinstance(block, dict))
        return "\n".join(text for text in texts if text)
    return ""


def _block_text(block: dict[str, Any]) -> str:
    if block.get("type") == "tool_result":
        return _content_text(block.get("content"))
    text = block.get("text")
    return text if isinstance(text, str) else ""


def _last_user_text(body: dict[str, Any]) -> str:
    users = [
        m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"
    ]
    return _content_text(users[-1].get("content")) if users else ""


def _count_input_words(body: dict[str, Any]) -> int:
    """Words of the messages' text, of the tool inputs in them, of `system` and of the tools'
    definitions (as JSON): the fake's tokens."""
    texts = [_content_text(m.get("content")) for m in body["messages"]]
    texts += [
        json.dumps(block["input"])
        for message in body["messages"]
        for block in _blocks(message)
        if block.get("type") == "tool_use"
    ]
    texts.append(_content_text(body.get("system")))
    if body.get("tools"):
        texts.append(json.dumps(body["tools"]))
    return sum(len(text.split()) for text in texts)
