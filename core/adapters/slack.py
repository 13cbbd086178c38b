"""slack_sdk at the edge: WebClients over one pool of kept-alive connections per process
(core/adapters/slack_http.py), Slack errors translated into SlackError.

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

from core.adapters.http_pool import IDLE_TIMEOUT
from core.adapters.slack_http import PooledWebClient
from core.errors import SlackError
from core.slack.metadata import is_about

log = logging.getLogger(__name__)


def web_client(
    token: str, base_url: str, timeout: int = 15, idle_timeout: float = IDLE_TIMEOUT
) -> WebClient:
    """A WebClient that waits out 429s, its calls on kept-alive connections (unused for at most
    `idle_timeout` seconds). Connection errors are not retried here: a retried chat.postMessage
    can post twice, so the caller decides."""
    return PooledWebClient(
        token=token,
        base_url=base_url,
        timeout=timeout,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=5)],
        idle_timeout=idle_timeout,
        logger=_quiet_logger(),
    )


def _quiet_logger() -> logging.Logger:
    """slack_sdk's logger with a level of its own, never below INFO. slack_sdk formats the
    whole request for its debug line whenever its logger's *own* level is at most DEBUG, and an
    unset level (0) is: that cost every call about 6% of its CPU, for a line never written."""
    logger = logging.getLogger("slack_sdk.web.base_client")
    logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))
    return logger


def _once(client: WebClient) -> WebClient:
    """`client` with no retry handler at all: no 429 waited out, nothing sent twice."""
    token, url, timeout = client.token, client.base_url, client.timeout
    if isinstance(client, PooledWebClient):
        idle = client.idle_timeout
        return PooledWebClient(token, url, timeout, retry_handlers=[], idle_timeout=idle)
    return WebClient(token, url, timeout, retry_handlers=[])


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
    """The handful of Slack calls aico makes, with Slack's errors as SlackError.

    The agent platform's calls (streams, sessions) go through a second WebClient that waits out
    nothing: a 429 there is the caller's to route around at once (post instead of streaming),
    never a wait of Retry-After seconds with an answer held back.
    """

    def __init__(self, client: WebClient, pacer: ChannelPacer | None = None) -> None:
        self.client = client
        self.pacer = pacer or ChannelPacer(0, 1)
        self.once = _once(client)
        self._me: dict[str, str] = {}  # auth.test's team_id, user_id, bot_id, once asked

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

    def find_message(
        self,
        channel: str,
        event_type: str,
        key: str,
        thread_ts: str = "",
        generation: int | None = None,
    ) -> str:
        """The ts of our message (in the thread, or among the channel's latest) whose metadata is
        (`event_type`, task_id=`key`), and of that `generation` of the task when one is given
        (a message without one is of generation 0), or "". Asked after a post whose outcome is
        unknown, so that nothing is posted twice."""
        for message in self._thread(channel, thread_ts) if thread_ts else self._latest(channel):
            if is_about(message, event_type, key, generation):
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

    def update(
        self,
        channel: str,
        ts: str,
        text: str,
        blocks: list[dict[str, Any]],
        metadata: dict[str, Any] | None = None,
    ) -> None:
        extra = {"metadata": metadata} if metadata else {}
        self._call(
            self.client.chat_update, channel=channel, ts=ts, text=text, blocks=blocks, **extra
        )

    # -- the agent platform: streams and sessions -------------------------------------------

    def start_stream(self, channel: str, thread_ts: str, text: str, recipient: str = "") -> str:
        """A streamed reply in the thread, beginning with `text` (`chat.startStream`); in a
        channel Slack wants the user and team it is for. Its ts."""
        me = self._identity()
        response = self._call(
            self.once.chat_startStream,
            channel=channel,
            thread_ts=thread_ts,
            markdown_text=text or None,
            recipient_team_id=me.get("team_id") or None,
            recipient_user_id=recipient or None,
        )
        return str(response["ts"])

    def append_stream(self, channel: str, ts: str, text: str) -> None:
        self._call(self.once.chat_appendStream, channel=channel, ts=ts, markdown_text=text)

    def stop_stream(
        self,
        channel: str,
        ts: str,
        text: str = "",
        blocks: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
        session_status: str = "",
    ) -> None:
        """End the stream: `text` is its last piece, `blocks` show under it, `metadata` makes it
        findable by `find_message`; `session_status` ("" is Slack's default, active)."""
        self._call(
            self.once.chat_stopStream,
            channel=channel,
            ts=ts,
            markdown_text=text or None,
            blocks=blocks or None,
            metadata=metadata or None,
            session_status=session_status or None,
        )

    def find_stream(self, channel: str, thread_ts: str, head: str) -> str:
        """The ts of aico's latest reply in the thread that carries no metadata and whose text
        begins with `head` (a stream whose start's answer was lost), or ""."""
        me = self._identity()
        found = ""
        for message in self._thread(channel, thread_ts):
            ours = message.get("bot_id") == me.get("bot_id") or message.get("user") == me.get(
                "user_id"
            )
            plain = not message.get("metadata") and not message.get("files")
            is_root = message.get("ts") == thread_ts
            if ours and plain and not is_root and str(message.get("text", "")).startswith(head):
                found = str(message["ts"])
        return found

    def set_session(self, channel: str, thread_ts: str, status: str, title: str = "") -> None:
        """The thread's agent session (`agents.sessions.setStatus`): `status` is active,
        processing, suspended or closed; `title` names a session being created."""
        self._call(
            self.once.agents_sessions_setStatus,
            channel_id=channel,
            thread_ts=thread_ts,
            status=status,
            title=title or None,
        )

    def _identity(self) -> dict[str, str]:
        if not self._me:
            answer = self._call(self.client.auth_test)
            self._me = {k: str(answer.get(k) or "") for k in ("team_id", "user_id", "bot_id")}
        return self._me

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
