"""slack_sdk at the edge: one WebClient per process, Slack errors translated into SlackError."""

from __future__ import annotations

import logging
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


class SlackNotifier:
    """The handful of Slack calls aico makes, with Slack's errors as SlackError."""

    def __init__(self, client: WebClient) -> None:
        self.client = client

    def post(
        self, channel: str, text: str, blocks: list[dict[str, Any]], thread_ts: str | None = None
    ) -> str:
        response = self._call(
            self.client.chat_postMessage,
            channel=channel,
            text=text,
            blocks=blocks,
            thread_ts=thread_ts,
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(response["ts"])

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        self._call(self.client.chat_update, channel=channel, ts=ts, text=text, blocks=blocks)

    def upload(
        self, channel: str, thread_ts: str, content: str, filename: str, comment: str
    ) -> None:
        """Post `content` as a file in the thread; `comment` becomes its message text."""
        self._call(
            self.client.files_upload_v2,
            channel=channel,
            thread_ts=thread_ts,
            content=content,
            filename=filename,
            title=filename,
            initial_comment=comment,
        )

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
            raise SlackError(code, f"Slack refused {method.__name__}: {code}") from exc
        except (OSError, SlackRequestError) as exc:
            raise SlackError("connection_error", f"Slack unreachable: {exc}") from exc
