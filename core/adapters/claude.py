"""Claude through the anthropic SDK (which reads ANTHROPIC_BASE_URL itself).

Requests carry only what every current model accepts: model, max_tokens, system, messages and
stream. (The Sonnet 5 family answers 400 to a non-default temperature, top_p or top_k and to
manual extended thinking; aico sends none of them.)

Errors are classified by what Claude says they are (`error.type`), not by HTTP status: an
`overloaded_error` can arrive as an SSE event after a 200, and reaches us as an APIStatusError
whose status is 200. A stream that ends without `message_stop`, or whose connection breaks, is an
answer that broke off: transient, like an overloaded or rate-limited Claude.

Structured output (code changes, plans) comes through tool use: `use_tool` makes Claude call the
one tool it is given (`tool_choice` names it), and the tool's input is the answer, as data that
its `input_schema` shaped, never parsed out of prose. An answer without that call, or one whose
input was cut at `max_tokens`, or a refusal, is a permanent ModelError: the same request would
get the same answer.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar, get_args

import anthropic
import httpx2

from core.adapters import claude_http
from core.adapters.claude_http import BODY, Body, PooledTransport
from core.errors import ConfigError, ModelError, Withheld
from core.ports import Completion, ToolAnswer

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are aico, an AI colleague working for a team through Slack. Do the task you are given "
    "and answer with the result itself, concisely, in Markdown that reads well in Slack."
)
# Claude's error types (docs: "Errors"). Anything else is judged by its HTTP status.
TRANSIENT = frozenset({"overloaded_error", "rate_limit_error", "api_error", "timeout_error"})
PERMANENT = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "billing_error",
    }
)
MODEL_CHECK_TIMEOUT = 10.0

T = TypeVar("T")
# What a user message's content may be: text, or content blocks (text, images, documents, tool
# results) as the Messages API takes them.
Content = str | list[dict[str, Any]]


class ClaudeModel:
    def __init__(
        self,
        api_key: str,
        model: str,
        timeout: float,
        max_tokens: int,
        base_url: str | None = None,  # None: the SDK's, or ANTHROPIC_BASE_URL
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens
        # The SDK's requests go on aico's kept-alive connections (claude_http.py), unless a
        # proxy is configured: then its own client takes them.
        self._pooled = claude_http.usable()
        http_client = (
            httpx2.Client(transport=PooledTransport(), timeout=timeout, follow_redirects=True)
            if self._pooled
            else None
        )
        self._client = anthropic.Anthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=2,
            http_client=http_client,
        )

    def check(self, today: date | None = None) -> str:
        """Whether the configured model can be used, before any task is taken: ConfigError
        (naming current models) for a retired or unknown model or a refused key; a warning for a
        deprecated one. The Models API's `lifecycle` decides when Claude can be reached; the
        SDK's table of deprecated models when it cannot. Returns what was found, for the log."""
        client = self._client.with_options(timeout=MODEL_CHECK_TIMEOUT, max_retries=1)
        try:
            info: Any = client.models.retrieve(self.model)
        except anthropic.NotFoundError as exc:
            raise ConfigError(self._refusal("is not a model Claude knows")) from exc
        except anthropic.AuthenticationError as exc:
            raise ConfigError(f"Claude refused ANTHROPIC_API_KEY: {_error_message(exc)}") from exc
        except anthropic.APIError as exc:  # unreachable, or failing: the SDK's table decides
            log.warning("could not check model %s with the Models API: %s", self.model, exc)
            info = None
        lifecycle = getattr(info, "lifecycle", None)
        if info is not None and lifecycle == "retired":
            raise ConfigError(self._refusal(f"was retired{_on(info.retires_at)}"))
        end_of_life = _end_of_life(self.model) if info is None else None
        if end_of_life is not None and end_of_life <= (today or datetime.now(UTC).date()):
            raise ConfigError(self._refusal(f"reached its end of life on {end_of_life}"))
        if lifecycle == "deprecated" or end_of_life is not None:
            retires = getattr(info, "retires_at", None)
            until = retires.date() if retires is not None else _end_of_life(self.model)
            log.warning(
                "model %s is deprecated%s; set AICO_MODEL to a current model (%s)",
                self.model,
                f": it reaches its end of life on {until}" if until else "",
                ", ".join(self._current()),
            )
            return f"deprecated until {until}" if until else "deprecated"
        return f"served as {info.id}" if info is not None else "not checked"

    def _refusal(self, why: str) -> str:
        return (
            f"AICO_MODEL={self.model} {why}: set it to a current model, "
            f"for example {', '.join(self._current())}"
        )

    def _current(self, shown: int = 4) -> list[str]:
        """Current models: the Models API's newest active ones, else the SDK's known ids that
        are not deprecated."""
        try:
            client = self._client.with_options(timeout=MODEL_CHECK_TIMEOUT, max_retries=0)
            listed = client.models.list(limit=20).data
            ids = [m.id for m in listed if getattr(m, "lifecycle", "active") == "active"]
        except anthropic.APIError:
            ids = [m for m in get_args(get_args(anthropic.types.Model)[0]) if isinstance(m, str)]
        return [m for m in ids if _end_of_life(m) is None and m != self.model][:shown]

    def complete(
        self,
        prompt: Content,
        history: Sequence[tuple[str, str]] = (),
        on_text: Callable[[list[str]], None] | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> Completion:
        """Claude's answer to `prompt` (text, or content blocks for files: images, documents,
        text), after the earlier turns of its conversation (`history`: (what was asked, what
        Claude answered), oldest first). With `on_text`, the answer is streamed and `on_text`
        gets its pieces so far as they come (an exception it raises stops the stream and goes up
        as it is). With `ready`, the request is built, then sent only once `ready()` returns
        True: False raises Withheld, and Claude is not asked."""
        started = time.perf_counter()
        messages = [
            {"role": role, "content": text}
            for asked, answered in history
            for role, text in (("user", asked), ("assistant", answered))
        ]
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": SYSTEM_PROMPT,
            "messages": [*messages, {"role": "user", "content": prompt}],
        }
        if ready is not None and not self._pooled and not ready():
            raise Withheld("held back: its attempt was not claimed")  # the SDK's own transport
        with claude_http.gated(ready if self._pooled else None):
            if on_text is None:
                answer = self._call(lambda: _Answer.of(self._client.messages.create(**request)))
            else:
                answer = self._call(lambda: self._stream(request, on_text))
        ms = (time.perf_counter() - started) * 1000
        return Completion(answer.text, answer.model, answer.usage, ms, answer.stop_reason)

    def use_tool(
        self,
        prompt: Content,
        tool: dict[str, Any],
        history: Sequence[dict[str, Any]] = (),
        system: str = "",
    ) -> ToolAnswer:
        """Claude made to call `tool` (a tool definition: `name`, `description`,
        `input_schema`) about `prompt`, after `history` (earlier messages as the API takes
        them, e.g. Claude's `tool_use` and then, in `prompt`, a `tool_result` saying what was
        wrong with it); `system` replaces aico's system prompt. One request, not streamed. The
        input comes back as Claude sent it: whether it fits the schema is the caller's to
        check."""
        started = time.perf_counter()
        name = str(tool.get("name", ""))
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": system or SYSTEM_PROMPT,
            "messages": [*history, {"role": "user", "content": prompt}],
            "tools": [tool],
            "tool_choice": {"type": "tool", "name": name},
        }
        message: Any = self._call(lambda: self._client.messages.create(**request))
        ms = (time.perf_counter() - started) * 1000
        return _tool_answer(message, name, ms)

    def _call(self, send: Callable[[], T]) -> T:
        """`send()`, with the SDK's errors translated into ModelErrors by what they are."""
        try:
            return send()
        except anthropic.APIStatusError as exc:  # an error event mid-stream included
            raise _status_error(exc) from exc
        except anthropic.APITimeoutError as exc:
            raise ModelError("Claude did not answer in time", transient=True) from exc
        except anthropic.APIConnectionError as exc:
            raise ModelError("Claude could not be reached", transient=True) from exc
        except httpx2.TransportError as exc:  # the connection broke in the middle of the stream
            raise ModelError(f"Claude's answer broke off: {exc}", transient=True) from exc

    def _stream(self, request: dict[str, Any], on_text: Callable[[list[str]], None]) -> _Answer:
        """The raw server-sent events, read and folded here: the SDK still sends the request
        (its retries of a refused start included), but its stream classes build and validate a
        model object for every event (and MessageStream a snapshot of the whole message, 1.5 ms
        of a task worker's CPU per task). `on_text` gets the pieces so far and joins them only
        when it needs the text."""
        answer, pieces = _Answer(model=self.model), list[str]()
        stream = self._client.messages.with_streaming_response.create(**request, stream=True)
        with stream as response:  # leaving early (a cancelled task) hangs up on Claude
            kind, data = "", []
            try:
                for line in _lines(response.http_response):
                    if line.startswith("data:"):
                        data.append(line[6:] if line[5:6] == " " else line[5:])
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif not line and data:
                        _fold(answer, pieces, kind, _event("\n".join(data)), on_text)
                        kind, data = "", []
                if data:  # the last event without its blank line
                    _fold(answer, pieces, kind, _event("\n".join(data)), on_text)
            except _ErrorEvent as error:
                body = error.event
                raise anthropic.APIStatusError(
                    _error_message_of(body), response=response.http_response, body=body
                ) from None
        if not answer.complete:
            raise ModelError("Claude's answer broke off before its end", transient=True)
        answer.text = "".join(pieces)
        return answer


def _fold(
    answer: _Answer,
    pieces: list[str],
    kind: str,
    event: dict[str, Any],
    on_text: Callable[[list[str]], None],
) -> None:
    """One event of the stream into the answer (an `error` event raises, as the SDK's stream
    would: an APIStatusError with the 200 the stream began with)."""
    kind = str(event.get("type") or kind)
    if kind == "content_block_delta":
        delta = event.get("delta") or {}
        if delta.get("type") == "text_delta":
            pieces.append(str(delta.get("text", "")))
            on_text(pieces)
    elif kind == "message_start":
        message = event.get("message") or {}
        answer.model = str(message.get("model") or answer.model)
        answer.usage = _usage(_Usage(message.get("usage") or {}))
    elif kind == "message_delta":
        answer.stop_reason = str((event.get("delta") or {}).get("stop_reason") or "")
        output = (event.get("usage") or {}).get("output_tokens")
        if output is not None:
            answer.usage["output_tokens"] = output
    elif kind == "message_stop":
        answer.complete = True
    elif kind == "error":
        raise _ErrorEvent(event)


def _event(data: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise ModelError(f"Claude's answer could not be read: {exc}", transient=True) from exc
    if not isinstance(event, dict):
        raise ModelError("Claude's answer could not be read: an event is no object", transient=True)
    return event


class _ErrorEvent(Exception):
    """An `error` event in a stream that began with a 200 (e.g. overloaded_error)."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(event)
        self.event = event


def _error_message_of(event: dict[str, Any]) -> str:
    error = event.get("error")
    found = error.get("message") if isinstance(error, dict) else None
    return str(found or "an error event in Claude's stream")


class _Usage:
    """A usage object of the raw stream, read like the SDK's (attributes; None when absent)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw = raw

    def __getattr__(self, name: str) -> Any:
        value = self._raw.get(name)
        return _Usage(value) if isinstance(value, dict) else value


@dataclass
class _Answer:
    model: str
    text: str = ""
    stop_reason: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    complete: bool = False

    @classmethod
    def of(cls, message: Any) -> _Answer:
        text = "".join(block.text for block in message.content if block.type == "text")
        return cls(message.model, text, message.stop_reason or "", _usage(message.usage), True)


def _tool_answer(message: Any, name: str, ms: float) -> ToolAnswer:
    """The input of Claude's call of `name`; a ModelError when there is no whole call to use."""
    stop_reason = message.stop_reason or ""
    if stop_reason == "refusal":
        category = getattr(getattr(message, "stop_details", None), "category", None)
        why = f" ({category})" if category else ""
        raise ModelError(f"Claude declined to call {name}{why}", transient=False)
    if stop_reason == "max_tokens":
        raise ModelError(
            f"Claude's call of {name} was cut at max_tokens: its input is incomplete, and the "
            "same request would be cut again",
            transient=False,
        )
    call = next(
        (b for b in message.content if b.type == "tool_use" and b.name == name),
        None,
    )
    if call is None or not isinstance(call.input, dict):
        raise ModelError(
            f"Claude's answer has no call of {name} (it stopped with {stop_reason or 'no reason'}):"
            " no tool input to use",
            transient=False,
        )
    return ToolAnswer(name, dict(call.input), message.model, _usage(message.usage), ms, stop_reason)


def _usage(usage: Any) -> dict[str, Any]:
    """The token counts a receipt and a price need, the cache's included when there are any."""
    counts: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
    }
    for name in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        if value := getattr(usage, name, None):
            counts[name] = value
    split = getattr(usage, "cache_creation", None)
    if split is not None and getattr(split, "ephemeral_1h_input_tokens", None):
        counts["cache_creation"] = {
            "ephemeral_5m_input_tokens": split.ephemeral_5m_input_tokens,
            "ephemeral_1h_input_tokens": split.ephemeral_1h_input_tokens,
        }
    return counts


def _status_error(exc: anthropic.APIStatusError) -> ModelError:
    kind = _error_type(exc)
    status = exc.status_code
    if kind in TRANSIENT:
        transient = True
    elif kind in PERMANENT:
        transient = False
    else:  # an unknown type: by status (a 200 is an error event mid-stream: try again)
        transient = status in (200, 408, 409, 429) or status >= 500
    what = f" ({kind})" if kind else ""
    said = (
        f"Claude's answer broke off{what}"  # an error event after the 200
        if status == 200
        else f"Claude answered {status}{what}"
    )
    return ModelError(f"{said}: {_error_message(exc)}", transient=transient, status=status)


def _error_type(exc: anthropic.APIStatusError) -> str:
    return str(getattr(exc, "type", None) or _error_body(exc).get("type") or "")


def _error_message(exc: anthropic.APIStatusError) -> str:
    return str(_error_body(exc).get("message") or exc.message)


def _error_body(exc: anthropic.APIStatusError) -> dict[str, Any]:
    """The `error` object of the API's error body, or {}."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def _on(moment: datetime | None) -> str:
    return f" on {moment.date()}" if moment is not None else ""


def _end_of_life(model: str) -> date | None:
    """The end-of-life date of a deprecated model, from the SDK's own table; None if it is not
    deprecated (or the SDK has no such table)."""
    try:
        from anthropic._data import DEPRECATED_MODELS
    except ImportError:
        return None
    text = DEPRECATED_MODELS.get(model)
    if not text:
        return None
    try:  # "November 30th, 2026"
        return datetime.strptime(re.sub(r"(\d)(st|nd|rd|th)", r"\1", text), "%B %d, %Y").date()
    except ValueError:
        log.warning("model %s: unreadable end-of-life date %r", model, text)
        return None


def _lines(response: httpx2.Response) -> Iterator[str]:
    """The stream's lines: straight from the connection when it came on aico's transport and
    is not compressed, else through httpx's decoders."""
    body = response.extensions.get(BODY)  # response.stream is the client's wrapper of it
    plain = response.headers.get("content-encoding", "identity") == "identity"
    if isinstance(body, Body) and plain:
        return body.lines()
    return response.iter_lines()
