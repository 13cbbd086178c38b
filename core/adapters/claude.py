"""Claude through the anthropic SDK (which reads ANTHROPIC_BASE_URL itself)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anthropic

from core.errors import ModelError

SYSTEM_PROMPT = (
    "You are aico, an AI colleague working for a team through Slack. Do the task you are given "
    "and answer with the result itself, concisely, in Markdown that reads well in Slack."
)


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    usage: dict[str, Any] = field(default_factory=dict)
    ms: float = 0.0


class ClaudeModel:
    def __init__(self, api_key: str, model: str, timeout: float, max_tokens: int) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self._client = anthropic.Anthropic(api_key=api_key, timeout=timeout, max_retries=2)

    def complete(
        self,
        prompt: str,
        history: Sequence[tuple[str, str]] = (),
        on_text: Callable[[list[str]], None] | None = None,
    ) -> Completion:
        """Claude's answer to `prompt`, after the earlier turns of its conversation (`history`:
        (what was asked, what Claude answered), oldest first). With `on_text`, the answer is
        streamed and `on_text` gets its pieces so far as they come (an exception it raises stops
        the stream and goes up as it is)."""
        started = time.perf_counter()
        messages = [
            {"role": role, "content": text}
            for asked, answered in history
            for role, text in (("user", asked), ("assistant", answered))
        ]
        request = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": SYSTEM_PROMPT,
            "messages": [*messages, {"role": "user", "content": prompt}],
        }
        try:
            if on_text is None:
                answer = _Answer.of(self._client.messages.create(**request))
            else:
                answer = self._stream(request, on_text)
        except anthropic.APIStatusError as exc:
            raise _status_error(exc) from exc
        except anthropic.APITimeoutError as exc:
            raise ModelError("Claude did not answer in time", transient=True) from exc
        except anthropic.APIConnectionError as exc:
            raise ModelError("Claude could not be reached", transient=True) from exc
        except anthropic.APIError as exc:  # an error event in the middle of a stream
            raise ModelError(f"Claude's answer broke off: {exc}", transient=True) from exc
        text = answer.text
        if answer.stop_reason == "max_tokens":
            text += "\n\n_(cut off at the answer length limit)_"
        usage = {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens}
        ms = (time.perf_counter() - started) * 1000
        return Completion(text=text, model=answer.model, usage=usage, ms=ms)

    def _stream(self, request: dict[str, Any], on_text: Callable[[list[str]], None]) -> _Answer:
        """The raw event stream, folded here. (The SDK's MessageStream rebuilds a snapshot of the
        whole message on every event: 1.5 ms of a task worker's CPU per task.) `on_text` gets
        the pieces so far and joins them only when it needs the text."""
        answer, pieces = _Answer(model=self.model), []
        with self._client.messages.create(**request, stream=True) as events:
            for event in events:  # leaving early (a cancelled task) hangs up on Claude
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    pieces.append(event.delta.text)
                    on_text(pieces)
                elif event.type == "message_start":
                    answer.model = event.message.model
                    answer.input_tokens = event.message.usage.input_tokens
                elif event.type == "message_delta":
                    answer.stop_reason = event.delta.stop_reason or ""
                    answer.output_tokens = event.usage.output_tokens
        answer.text = "".join(pieces)
        return answer


@dataclass
class _Answer:
    model: str
    text: str = ""
    stop_reason: str = ""
    input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def of(cls, message: Any) -> _Answer:
        text = "".join(block.text for block in message.content if block.type == "text")
        return cls(
            message.model,
            text,
            message.stop_reason or "",
            message.usage.input_tokens,
            message.usage.output_tokens,
        )


def _status_error(exc: anthropic.APIStatusError) -> ModelError:
    status = exc.status_code
    transient = status in (408, 409, 429) or status >= 500
    detail = _error_message(exc)
    return ModelError(f"Claude answered {status}: {detail}", transient=transient, status=status)


def _error_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return str(error.get("message") or exc.message)
