"""slack_sdk's WebClient over kept-alive connections: one pool per process.

slack_sdk's sync client goes through urllib, which opens a connection (DNS, TCP, TLS) for every
call, sends `Connection: close`, and builds an opener for it. Here the same WebClient -- its
request building, its retry handlers, its errors -- sends each request on a kept-alive HTTP/1.1
connection from a pool, one thread on a connection at a time. Only the last step changes:
`_perform_urllib_http_request_internal` (every Web API call) and `_upload_file`
(files_upload_v2's upload URL, on another host, pooled too).

The connections are http.client's, the very classes urllib drives, so what comes back is what
urllib gives: the status, the headers (an `http.client.HTTPMessage`) and the body; a non-2xx
answer raised as urllib's HTTPError (so the 429 handler reads Retry-After and SlackApiError is
built as before); a failure to connect or send raised as URLError of the socket or ssl error, a
broken answer as http.client's or the socket's own error (RemoteDisconnected, TimeoutError,
IncompleteRead...), exactly where urllib raises them. One difference: a 3xx is an HTTPError, not
followed (Slack's Web API does not redirect; urllib would have followed a 301/302/303 as a GET).

TLS: the client's `ssl` context as it is (the host name checked when the context says so), or
the default context urllib would make, made once per process instead of per call. Timeouts:
`timeout` for connecting and for each read, as urllib applies it. Proxies: with a proxy (the
`proxy` argument, or HTTPS_PROXY / https_proxy / HTTP_PROXY / http_proxy, which slack_sdk reads)
or any proxy urllib itself would use (`urllib.request.getproxies()`), the client takes
slack_sdk's own urllib path, unchanged: nothing is pooled then.

Why not urllib3's pool: measured against FakeSlack, a kept-alive http.client request costs about
70 us of CPU, the same through urllib3's HTTPConnectionPool about 155 us, urllib's new connection
about 215 us: urllib3's layers cost nearly what the connection did. Its rule for stale
connections is the one kept here (a pooled socket that is readable is dropped), and its answers
would have had to be translated back into urllib's errors; here they are urllib's own.

A POST is never sent twice: nothing here retries. A reused connection is safe because (1) one
the server ended with `Connection: close` is not kept; (2) one whose socket is readable when
taken from the pool -- the server closed it, or sent something unasked -- is closed and a new
connection opened: nothing was written on it; (3) one unused for longer than `IDLE_TIMEOUT` is
closed instead of reused, before servers close theirs (the shortest common default is 5 s). A
server that closes a connection just as a request goes out on it makes that call fail as a
connection error, outcome unknown, as any connection error was before: the caller decides (aico
looks for the message before posting again).
"""

from __future__ import annotations

import functools
import http.client
import io
import logging
import ssl
import sys
import urllib.request
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.web.file_upload_v2_result import FileUploadV2Result

from core.adapters.http_pool import IDLE_TIMEOUT, default_context, pool_for

log = logging.getLogger(__name__)

# What urllib sends to an upload URL (files_upload_v2 posts the bytes with no headers of its own).
_UPLOAD_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "User-Agent": "Python-urllib/{}.{}".format(*sys.version_info[:2]),
}


class PooledWebClient(WebClient):
    """A WebClient whose calls reuse kept-alive connections (see the module's docstring).
    `idle_timeout`: seconds an unused connection is kept for reuse."""

    def __init__(self, *args: Any, idle_timeout: float = IDLE_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_timeout = idle_timeout
        # urllib would also go through a proxy of the environment or of the system's settings
        proxies = urllib.request.getproxies()
        self._urllib_proxied = "http" in proxies or "https" in proxies

    def _perform_urllib_http_request_internal(
        self, url: str, req: urllib.request.Request
    ) -> dict[str, Any]:
        if not self._pooled(url, self.proxy) or not isinstance(req.data, bytes | None):
            return super()._perform_urllib_http_request_internal(url, req)
        headers = {name.title(): str(value) for name, value in req.header_items()}
        if req.data is not None and "Content-Type" not in headers:
            headers["Content-Type"] = "application/x-www-form-urlencoded"  # as urllib adds
        response, data = post(url, req.data, headers, self.timeout, self.ssl, self.idle_timeout)
        body: str | bytes = data
        content_type = response.msg.get("Content-Type", "")
        if _media_type(content_type) != "application/gzip":  # admin.analytics.getFile: bytes
            body = data.decode(_charset(content_type))
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug(
                "Received the following response - status: %s, headers: %s, body: %s",
                response.status,
                dict(response.msg),
                body if isinstance(body, str) else "(binary)",
            )
        return {"status": response.status, "headers": response.msg, "body": body}

    def _upload_file(
        self,
        *,
        url: str,
        data: bytes,
        logger: logging.Logger,
        timeout: int,
        proxy: str | None,
        ssl: ssl.SSLContext | None,
    ) -> FileUploadV2Result:
        if not self._pooled(url, proxy):
            return super()._upload_file(
                url=url, data=data, logger=logger, timeout=timeout, proxy=proxy, ssl=ssl
            )
        response, answer = post(url, data, dict(_UPLOAD_HEADERS), timeout, ssl, self.idle_timeout)
        body = answer.decode(_charset(response.msg.get("Content-Type", "")))
        return FileUploadV2Result(status=response.status, body=body)

    def _pooled(self, url: str, proxy: str | None) -> bool:
        direct = proxy is None and not self._urllib_proxied
        return direct and url[:8].lower().startswith(("http://", "https://"))


def post(
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    timeout: float,
    context: ssl.SSLContext | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
) -> tuple[http.client.HTTPResponse, bytes]:
    """POST `body` to `url` on a pooled connection: the answer and its body if it is a 2xx,
    else urllib's HTTPError of it. Errors as urllib raises them (see the module's docstring)."""
    scheme, host, port, target = _split(url)
    if scheme == "https":
        context = context or default_context()
    pool = pool_for(scheme, host, port, context if scheme == "https" else None, idle_timeout)
    conn = pool.take(timeout)
    try:
        try:
            conn.request("POST", target, body, headers)  # connects first if it must
        except OSError as err:  # as urllib: not connected, or the request not sent
            raise URLError(err) from err
        response = conn.getresponse()
        data = response.read()
    except BaseException:
        conn.close()
        raise
    if response.will_close:  # the server said Connection: close (http.client let go of it)
        conn.close()
    else:
        pool.give_back(conn)
    if not 200 <= response.status < 300:
        raise HTTPError(url, response.status, response.reason, response.msg, io.BytesIO(data))
    return response, data


@functools.lru_cache(maxsize=256)
def _split(url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port, the request target) of `url`."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not parts.hostname:
        raise URLError("no host given")
    return parts.scheme.lower(), parts.hostname, parts.port, target


def _media_type(content_type: str) -> str:
    """The type/subtype of a Content-Type, lower case ("text/plain" without one), as
    `email.message.Message.get_content_type` gives it, without its cost."""
    media = content_type.partition(";")[0].strip().lower()
    return media if media.count("/") == 1 else "text/plain"


def _charset(content_type: str) -> str:
    """The charset parameter of a Content-Type, lower case (utf-8 without one), as
    `email.message.Message.get_content_charset() or "utf-8"` gives it, without its cost."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"').lower()
    return "utf-8"
