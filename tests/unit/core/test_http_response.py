"""The pooled connections' answer (core/adapters/http_pool.py: Response) reads a head as
http.client's own reader does: the same status, fields, framing and body, and the same errors."""

from __future__ import annotations

import http.client
import socket
from typing import Any

import pytest

from core.adapters.http_pool import Response

SLACK = (
    b"HTTP/1.1 200 OK\r\nDate: Wed, 02 Dec 2026 19:00:00 GMT\r\nServer: Apache\r\n"
    b"Content-Type: application/json; charset=utf-8\r\nContent-Length: 11\r\n"
    b"x-slack-req-id: 8a1b\r\nx-oauth-scopes: chat:write,files:write\r\n"
    b"Vary: Accept-Encoding\r\nVary: Origin\r\n\r\n"
    b'{"ok":true}'
)
ANSWERS = {
    "a Slack answer": SLACK,
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
        b"5\r\nevent\r\n3\r\n: x\r\n0\r\n\r\n"
    ),
    "Connection: close": (
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nConnection: close\r\n"
        b"Content-Length: 2\r\n\r\nno"
    ),
    "no length: read to the end": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it",
    "HTTP/1.0 kept alive": (
        b"HTTP/1.0 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"
    ),
    "HTTP/1.0 closed": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.0 Connection: keep-alive": (
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok"
    ),
    "a 100 Continue first": (
        b"HTTP/1.1 100 Continue\r\nX-Skipped: yes\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    ),
    "204, no body": b"HTTP/1.1 204 No Content\r\n\r\n",
    "a folded field and spaces": (
        b"HTTP/1.1 200 OK\r\nX-Long: first\r\n  second\r\n\tthird\r\nX-Empty:\r\n"
        b"X-Spaces:   padded  \r\nContent-Length: 0\r\n\r\n"
    ),
    "bare LF line ends": b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: b\n\nok",
    "a negative length": b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\nto the end",
    "a length that is no number": b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\nto the end",
    "a reason with spaces": (
        b"HTTP/1.1 503 Service Temporarily Unavailable\r\nContent-Length: 0\r\n\r\n"
    ),
    "no reason": b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    "latin-1 in a value": b"HTTP/1.1 200 OK\r\nX-Name: Jos\xe9\r\nContent-Length: 0\r\n\r\n",
}
BROKEN = {
    "nothing at all": b"",
    "no status code": b"HTTP/1.1\r\n\r\n",
    "not HTTP": b"SSH-2.0-OpenSSH_9.2\r\n",
    "a status out of range": b"HTTP/1.1 42 Odd\r\n\r\n",
    "a status that is no number": b"HTTP/1.1 2OO OK\r\n\r\n",
    "a status in other digits": "HTTP/1.1 ²00 OK\r\n\r\n".encode("latin-1"),
    "an unknown version": b"HTTP/2.0 200 OK\r\n\r\n",
    "a status line too long": b"HTTP/1.1 200 " + b"x" * 70000 + b"\r\n\r\n",
    "a field too long": b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 70000 + b"\r\n\r\n",
    "too many fields": b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n",
}


def _read(cls: type[http.client.HTTPResponse], raw: bytes, method: str = "POST") -> Any:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(raw)
        theirs.shutdown(socket.SHUT_WR)
        answer = cls(ours, method=method)
        try:
            answer.begin()
        except Exception as exc:  # the error is the outcome compared
            return type(exc), str(exc)[:200]
        head = (
            answer.status,
            answer.reason,
            answer.version,
            answer.headers.items(),
            answer.headers.get_all("vary"),
            answer.chunked,
            answer.length,
            answer.will_close,
        )
        return head, answer.read()


@pytest.mark.parametrize("raw", ANSWERS.values(), ids=ANSWERS.keys())
def test_an_answer_reads_as_http_clients_own_reader_reads_it(raw: bytes) -> None:
    assert _read(Response, raw) == _read(http.client.HTTPResponse, raw)


@pytest.mark.parametrize("raw", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_head_raises_what_http_client_raises(raw: bytes) -> None:
    assert _read(Response, raw) == _read(http.client.HTTPResponse, raw)


def test_an_answer_to_head_has_no_body() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
    assert _read(Response, raw, "HEAD") == _read(http.client.HTTPResponse, raw, "HEAD")


def test_a_field_line_without_a_colon_is_refused() -> None:
    # http.client's parser takes such a line for the start of the body and drops every field
    # after it; a server that sends it is broken, and the call fails as a broken answer
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nnonsense\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )

    outcome = _read(Response, raw)

    assert outcome[0] is http.client.HTTPException
