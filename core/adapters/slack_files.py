"""Files attached in Slack, downloaded with the bot token (url_private_download).

Slack serves a file's private URL only to a request with the bot token in `Authorization:
Bearer` (and the files:read scope); without them it answers a redirect to its sign-in page. So:
the token goes only to Slack's own hosts (files.slack.com, or the host of SLACK_API_URL for a
proxy or a fake), never through a redirect (a redirect is a refusal here, not followed: the
stdlib would carry the header to wherever it points), and an HTML page where a file was
expected is that sign-in page. What is read is capped as it is read, whatever the metadata's
size said; a download has a timeout. The token is never in a log line or an error's text.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from core.domain.attachments import Attachment, Unreadable, megabytes

log = logging.getLogger(__name__)

SLACK_FILE_HOSTS = frozenset({"files.slack.com"})
TIMEOUT = 30.0  # seconds for the connection and for each read, and for the whole download
CHUNK = 64 * 1024


class DownloadError(Unreadable):
    """A file that could not be downloaded; the message says why, for the person and the log
    (never with the token in it)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx reaches us as an HTTPError: not followed with the token


@dataclass(frozen=True)
class SlackFiles:
    """Downloads files shared with aico. Without a token every download fails with the reason
    (the task goes on without its files)."""

    token: str
    hosts: frozenset[str] = SLACK_FILE_HOSTS
    timeout: float = TIMEOUT

    @classmethod
    def for_api(cls, token: str, api_url: str, timeout: float = TIMEOUT) -> SlackFiles:
        """The downloader for a workspace reached at `api_url` (SLACK_API_URL): Slack's file
        host, and that URL's host (an Enterprise proxy, a fake)."""
        host = urlsplit(api_url).hostname or ""
        return cls(token, SLACK_FILE_HOSTS | ({host} if host else set()), timeout)

    def __repr__(self) -> str:  # the token stays out of every repr and log
        return f"SlackFiles(hosts={sorted(self.hosts)}, timeout={self.timeout})"

    def download(self, attachment: Attachment, max_bytes: int) -> bytes:
        """The file's bytes, at most `max_bytes` of them; DownloadError says why not."""
        if not self.token:
            raise DownloadError("no Slack bot token here to download it with (SLACK_BOT_TOKEN)")
        url = attachment.url
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or (parts.hostname or "") not in self.hosts:
            raise DownloadError("its address is not one of Slack's")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        opener = urllib.request.build_opener(_NoRedirects)
        try:
            with opener.open(request, timeout=self.timeout) as response:
                if _is_html(response.headers.get("Content-Type", ""), attachment):
                    raise DownloadError(_SIGN_IN)
                return _read_capped(response, max_bytes, time.monotonic() + self.timeout)
        except urllib.error.HTTPError as exc:
            raise DownloadError(_status_reason(exc.code)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"Slack could not be reached for it ({_brief(reason)})") from None


_SIGN_IN = "Slack answered with its sign-in page: the bot token lacks files:read, or is wrong"


def _status_reason(status: int) -> str:
    if 300 <= status < 400:
        return _SIGN_IN  # Slack's answer to a request without a valid token
    if status in (401, 403):
        return f"Slack refused the download ({status})"
    if status == 404:
        return "Slack no longer has it (404)"
    return f"Slack answered {status} to the download"


def _is_html(content_type: str, attachment: Attachment) -> bool:
    """An HTML page for a file that is not HTML: Slack's sign-in page."""
    return content_type.lower().startswith("text/html") and "html" not in attachment.mimetype


def _read_capped(response: Any, max_bytes: int, deadline: float) -> bytes:
    """Read until the end, or fail as soon as more than `max_bytes` came, or at `deadline` (a
    server that sends a byte at a time would keep each read within its timeout)."""
    pieces: list[bytes] = []
    total = 0
    for piece in _chunks(response):
        total += len(piece)
        if total > max_bytes:
            raise DownloadError(f"it is larger than {megabytes(max_bytes)}, the limit for it")
        if time.monotonic() > deadline:
            raise DownloadError("its download took too long")
        pieces.append(piece)
    return b"".join(pieces)


def _chunks(response: Any) -> Iterable[bytes]:
    while piece := response.read(CHUNK):
        yield piece


def _brief(reason: object) -> str:
    text = str(reason)
    return text if len(text) <= 80 else text[:79] + "…"
