"""Build and sign HTTP requests the way Slack sends them to an app's Request URL."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

FORM_CT = "application/x-www-form-urlencoded"
JSON_CT = "application/json"
# X-Slack-Retry-Reason values (docs.slack.dev, Events API, "Retries"): Slack retries an event
# whose delivery failed up to 3 times, "nearly immediately", after 1 minute, after 5 minutes.
RETRY_REASONS = (
    "http_timeout",
    "too_many_redirects",
    "connection_failed",
    "ssl_error",
    "http_error",
    "unknown_error",
)
MAX_EVENT_RETRIES = 3


def sign(secret: str, body: bytes | str, timestamp: int | None = None) -> dict[str, str]:
    """``X-Slack-Request-Timestamp`` and ``X-Slack-Signature`` for ``body``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + digest.hexdigest()}


def new_trigger_id() -> str:
    return f"{secrets.randbelow(10**12)}.{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"


def slash_command_fields(
    text: str,
    *,
    command: str = "/aico",
    user_id: str = "U0USER1",
    user_name: str = "ada",
    channel_id: str = "C0CHAN1",
    channel_name: str = "general",
    team_id: str = "T0AICO",
    team_domain: str = "aico-test",
    api_app_id: str = "A0AICO",
    response_url: str | None = None,
    trigger_id: str | None = None,
    token: str = "verification-token",
    is_enterprise_install: bool = False,
) -> dict[str, str]:
    """Every field a real slash command carries, as the strings Slack sends."""
    return {
        "token": token,
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "true" if is_enterprise_install else "false",
        "response_url": response_url or f"https://hooks.slack.com/commands/{team_id}/1/x",
        "trigger_id": trigger_id or new_trigger_id(),
    }


def slash_command_body(text: str, **fields: Any) -> bytes:
    """The urlencoded body of a slash command (keyword args as in slash_command_fields)."""
    return urlencode(slash_command_fields(text, **fields)).encode()


def block_actions_body(payload: dict[str, Any]) -> bytes:
    """``payload=<json>`` form body, as Slack posts interactions."""
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()


def new_event_id() -> str:
    return "Ev0" + secrets.token_hex(5).upper()


def event_callback(
    event: dict[str, Any],
    *,
    team_id: str = "T0AICO",
    api_app_id: str = "A0AICO",
    bot_user_id: str = "U0AICOBOT",
    event_id: str | None = None,
    event_time: int | None = None,
) -> dict[str, Any]:
    """The Events API envelope Slack posts (or sends in an ``events_api`` envelope) around
    ``event``: ``event_callback`` with an ``event_id`` of its own (what a retry keeps) and
    ``event_time``, as in payloads/app_mention_in_thread.json."""
    return {
        "token": "verification-token",
        "team_id": team_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or new_event_id(),
        "event_time": int(time.time()) if event_time is None else event_time,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def user_message_event(
    channel: str,
    text: str,
    ts: str,
    *,
    user: str = "U0USER1",
    team: str = "T0AICO",
    kind: str = "message",
    channel_type: str | None = "channel",
    thread_ts: str | None = None,
    parent_user_id: str | None = None,
    files: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A person's message as an Events API ``event``: ``kind`` "message" (with its
    ``channel_type``: channel, group or im) or "app_mention" (which has none). A reply names
    its ``thread_ts`` and ``parent_user_id``; a message with files is subtype ``file_share``
    with ``files`` and ``upload`` (payloads/message_in_thread.json, and Slack's message event
    reference)."""
    event: dict[str, Any] = {
        "type": kind,
        "user": user,
        "text": text,
        "ts": ts,
        "team": team,
        "client_msg_id": secrets.token_hex(16),
        "channel": channel,
        "event_ts": ts,
    }
    if kind == "message" and channel_type:
        event["channel_type"] = channel_type
    if thread_ts and thread_ts != ts:
        event |= {"thread_ts": thread_ts, "parent_user_id": parent_user_id}
    if files:
        event |= {"files": files, "upload": False, "display_as_bot": False}
        if kind == "message":
            event["subtype"] = "file_share"
    return event


def app_home_opened_event(
    user: str, channel: str, tab: str = "messages", event_ts: str | None = None
) -> dict[str, Any]:
    """``app_home_opened`` (docs.slack.dev: user, channel -- the app's DM with the user --, tab
    ``home`` or ``messages``, event_ts; a Home tab's event also carries its ``view``)."""
    if tab not in ("home", "messages"):
        raise ValueError(f"Slack opens the home or messages tab, not {tab!r}")
    ts = event_ts or f"{time.time():.6f}"
    return {"type": "app_home_opened", "user": user, "channel": channel, "tab": tab, "event_ts": ts}


def agent_session_stopped_event(
    channel: str,
    thread_ts: str,
    user: str,
    streaming_message_ts: list[str] | None = None,
    event_ts: str | None = None,
) -> dict[str, Any]:
    """``agent_session_stopped`` (docs.slack.dev/reference/events/agent_session_stopped): who
    pressed stop, where, and the app's streams Slack stopped for it (an empty list when none
    was open)."""
    return {
        "type": "agent_session_stopped",
        "user": user,
        "channel": channel,
        "thread_ts": thread_ts,
        "streaming_message_ts": list(streaming_message_ts or []),
        "event_ts": event_ts or f"{time.time():.6f}",
    }


def feedback_element(message: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(block_id, element) of the first feedback_buttons element in a message's
    context_actions blocks, or None."""
    for i, block in enumerate(message.get("blocks") or []):
        if block.get("type") != "context_actions":
            continue
        for element in block.get("elements") or []:
            if element.get("type") == "feedback_buttons":
                return str(block.get("block_id") or f"ctx{i}"), element
    return None


def feedback_action_payload(
    message: dict[str, Any],
    channel: str,
    *,
    user: str = "U0USER1",
    positive: bool = True,
    team_id: str = "T0AICO",
    api_app_id: str = "A0AICO",
    response_url: str | None = None,
) -> dict[str, Any]:
    """The block_actions payload of a click on a message's feedback buttons: one action of
    type ``feedback_buttons`` with the pressed button's ``value`` and ``text`` (bolt-js's
    FeedbackButtonsAction type; the envelope as payloads/block_actions.json)."""
    found = feedback_element(message)
    if found is None:
        raise ValueError("the message has no feedback buttons to click")
    block_id, element = found
    button = element["positive_button" if positive else "negative_button"]
    action = {
        "type": "feedback_buttons",
        "action_id": element.get("action_id") or "feedback",
        "block_id": block_id,
        "value": button["value"],
        "text": button["text"],
        "action_ts": f"{time.time():.6f}",
    }
    return {
        "type": "block_actions",
        "user": {"id": user, "team_id": team_id},
        "api_app_id": api_app_id,
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel,
            "is_ephemeral": False,
            **({"thread_ts": message["thread_ts"]} if message.get("thread_ts") else {}),
        },
        "trigger_id": new_trigger_id(),
        "team": {"id": team_id},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url or f"https://hooks.slack.com/actions/{team_id}/1/x",
        "actions": [action],
    }


def retry_headers(attempt: int, reason: str = "http_timeout") -> dict[str, str]:
    """The headers of Slack's ``attempt``-th redelivery of an event (1 to 3)."""
    if not 1 <= attempt <= MAX_EVENT_RETRIES or reason not in RETRY_REASONS:
        raise ValueError(f"Slack sends retries 1-3 with a reason of {RETRY_REASONS}")
    return {"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": reason}


class SlackSender:
    """Posts signed requests to an app over one keep-alive HTTP/1.1 connection."""

    def __init__(self, url: str, secret: str, timeout: float = 30.0):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.secret, self.timeout = secret, timeout
        self._conn: http.client.HTTPConnection | None = None

    def post(
        self,
        body: bytes,
        content_type: str = FORM_CT,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, float]:
        """Sign and POST ``body``; returns (status, body text, elapsed seconds)."""
        all_headers = {"Content-Type": content_type, **sign(self.secret, body, timestamp)}
        all_headers.update(headers or {})
        started = time.perf_counter()
        try:
            status, text = self._exchange(body, all_headers)
        except TimeoutError:
            self.close()
            raise
        except (http.client.HTTPException, OSError):
            self.close()  # stale keep-alive connection: one retry on a fresh one
            status, text = self._exchange(body, all_headers)
        return status, text, time.perf_counter() - started

    def command(self, text: str, **fields: Any) -> tuple[int, str, float]:
        return self.post(slash_command_body(text, **fields))

    def action(self, payload: dict[str, Any]) -> tuple[int, str, float]:
        return self.post(block_actions_body(payload))

    def event(
        self, body: dict[str, Any], retry: int = 0, reason: str = "http_timeout"
    ) -> tuple[int, str, float]:
        """POST an Events API body; ``retry`` > 0 sends it as Slack's redelivery number
        ``retry`` (the same body, with X-Slack-Retry-Num and X-Slack-Retry-Reason)."""
        headers = retry_headers(retry, reason) if retry else None
        return self.post(json.dumps(body).encode(), JSON_CT, headers=headers)

    def _exchange(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._conn.request("POST", self.path, body=body, headers=headers)
        response = self._conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        if response.will_close:
            self.close()
        return response.status, text

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> SlackSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
