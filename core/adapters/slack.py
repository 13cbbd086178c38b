"""slack_sdk at the edge: one WebClient per process, Slack errors translated into SlackError.

Posts are paced per channel (Slack allows about one message a second per channel, with short
bursts): a token bucket per channel holds a post back instead of letting Slack answer 429.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from core.errors import SlackError

log = logging.getLogger(__name__)


def web_client(token: str, base_url: str, timeout: int = 15) -> WebClient:
    """A WebClient that waits out 429s. Connection errors are not retried here: a retried
    chat.postMessage can post twice, so the caller decides."""
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=timeout,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=5)],
    )


class ChannelPacer:
    """A token bucket per channel: `rate` posts a second, `burst` at once. 0 turns it off."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic, sleep=time.sleep) -> None:
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, at)

    def wait(self, channel: str) -> float:
        """Take a token for `channel`, sleeping until there is one; returns the seconds slept."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(channel, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate) - 1.0
            self._buckets[channel] = (tokens, now)
        delay = -tokens / self.rate if tokens < 0 else 0.0
        if delay:
            self._sleep(delay)
        return delay


class SlackNotifier:
    """The handful of Slack calls aico makes, with Slack's errors as SlackError."""

    def __init__(self, client: WebClient, pacer: ChannelPacer | None = None) -> None:
        self.client = client
        self.pacer = pacer or ChannelPacer(0, 1)

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]],
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Post a message; `metadata` (Slack message metadata) lets `find_reply` find it."""
        self.pacer.wait(channel)
        response = self._call(
            self.client.chat_postMessage,
            channel=channel,
            text=text,
            blocks=blocks,
            thread_ts=thread_ts,
            metadata=metadata,
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(response["ts"])

    def find_message(self, channel: str, event_type: str, key: str, thread_ts: str = "") -> str:
        """The ts of our message (in the thread, or among the channel's latest) whose metadata is
        (`event_type`, task_id=`key`), or "". Asked after a post whose outcome is unknown, so
        that nothing is posted twice."""
        for message in self._thread(channel, thread_ts) if thread_ts else self._latest(channel):
            meta = message.get("metadata") or {}
            payload = meta.get("event_payload") or {}
            if meta.get("event_type") == event_type and payload.get("task_id") == key:
                return str(message["ts"])
        return ""

    def has_file(self, channel: str, thread_ts: str, filename: str) -> bool:
        """Whether a file called `filename` was already shared in the thread."""
        return any(
            f.get("name") == filename
            for message in self._thread(channel, thread_ts)
            for f in message.get("files") or []
        )

    def _thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        response = self._call(
            self.client.conversations_replies,
            channel=channel,
            ts=thread_ts,
            include_all_metadata=True,
            limit=200,
        )
        return list(response.get("messages") or [])

    def _latest(self, channel: str) -> list[dict[str, Any]]:
        response = self._call(
            self.client.conversations_history,
            channel=channel,
            include_all_metadata=True,
            limit=100,
        )
        return list(response.get("messages") or [])

    def ephemeral(self, channel: str, user: str, text: str, thread_ts: str = "") -> None:
        """A message only `user` sees, in the channel (or in a thread of it)."""
        self._call(
            self.client.chat_postEphemeral,
            channel=channel,
            user=user,
            text=text,
            thread_ts=thread_ts or None,
        )

    def set_status(self, channel: str, thread_ts: str, status: str) -> None:
        """The "is working on it…" line under a thread (`assistant.threads.setStatus`); "" clears
        it. Progress only: a failure is logged, never raised."""
        try:
            self._call(
                self.client.assistant_threads_setStatus,
                channel_id=channel,
                thread_ts=thread_ts,
                status=status,
            )
        except SlackError as exc:
            log.info("thread status not shown: %s", exc)

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        self._call(self.client.chat_update, channel=channel, ts=ts, text=text, blocks=blocks)

    def upload(
        self, channel: str, thread_ts: str, content: str, filename: str, comment: str
    ) -> None:
        """Post `content` as a file in the thread; `comment` becomes its message text."""
        self.pacer.wait(channel)
        self._call(
            self.client.files_upload_v2,
            channel=channel,
            thread_ts=thread_ts,
            content=content,
            filename=filename,
            title=filename,
            initial_comment=comment,
        )

    def delete(self, channel: str, ts: str) -> None:
        """Delete one of aico's own messages (`chat.delete`)."""
        self._call(self.client.chat_delete, channel=channel, ts=ts)

    def check(self) -> None:
        """SlackError unless Slack takes the bot token now (`auth.test`)."""
        self._call(self.client.auth_test)

    def respond(self, response_url: str, text: str) -> None:
        """An ephemeral note to the person who ran the command (works 5 times in 30 min)."""
        try:
            WebhookClient(response_url, timeout=10).send(text=text, response_type="ephemeral")
        except (OSError, SlackRequestError) as exc:
            log.warning("could not answer through response_url: %s", exc)

    @staticmethod
    def _call(method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except SlackApiError as exc:
            code = str(exc.response.get("error", "unknown_error"))
            transient = exc.response.status_code >= 500 or code in _TRANSIENT
            message = f"Slack refused {method.__name__}: {code}"
            raise SlackError(code, message, transient=transient) from exc
        except (OSError, SlackRequestError) as exc:
            message = f"Slack unreachable: {exc}"
            raise SlackError("connection_error", message, transient=True) from exc


# Slack's errors that say "not now" rather than "never".
_TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
