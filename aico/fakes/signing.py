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

    def event(self, body: dict[str, Any]) -> tuple[int, str, float]:
        return self.post(json.dumps(body).encode(), JSON_CT)

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
