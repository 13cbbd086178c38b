"""aico's WebClient (core/adapters/slack_http.py) against FakeSlack: calls on kept-alive
connections, each request sent once, and every answer and failure as slack_sdk's own client gives
it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.error import URLError

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from aico.fakes.slack import FakeSlack
from core.adapters.http_pool import POOL_SIZE
from core.adapters.slack import SlackNotifier, web_client
from core.adapters.slack_http import PooledWebClient, _charset, _media_type
from tests.unit.fakes.tls import self_signed

TOKEN = "xoxb-pool"
CHANNEL = "C0POOL"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(bot_token=TOKEN, file_share_delay=0) as fake:
        yield fake


def texts(fake: FakeSlack) -> list[str]:
    return [m["text"] for m in fake.messages(CHANNEL)]


# --------------------------------------------------------------------------- kept alive


def test_calls_reuse_one_connection(fake: FakeSlack) -> None:
    client = web_client(TOKEN, fake.api_url)
    for n in range(20):
        client.chat_postMessage(channel=CHANNEL, text=f"post {n}")

    assert fake.connections == 1
    assert texts(fake) == [f"post {n}" for n in range(20)]


def test_the_notifiers_clients_share_the_connection(fake: FakeSlack) -> None:
    notifier = SlackNotifier(web_client(TOKEN, fake.api_url))
    parent = notifier.post(CHANNEL, "Task t1", [])
    stream = notifier.start_stream(CHANNEL, parent, "Working", recipient="U0ASKER")
    notifier.stop_stream(CHANNEL, stream, " done")

    assert fake.connections == 1
    assert fake.stream(CHANNEL, stream).text == "Working done"


def test_a_call_after_the_server_closed_the_idle_connection_posts_once(fake: FakeSlack) -> None:
    # Given a connection the server closed after it idled
    fake.idle_timeout = 0.1
    client = web_client(TOKEN, fake.api_url)
    client.chat_postMessage(channel=CHANNEL, text="before")
    fake.wait_for(lambda: fake.idle_closes == 1)

    # When the next call comes
    answer = client.chat_postMessage(channel=CHANNEL, text="after")

    # Then it goes out on a new connection, once
    assert answer["ok"] and answer["message"]["text"] == "after"
    assert texts(fake) == ["before", "after"]
    assert len(fake.calls_to("chat.postMessage")) == 2
    assert fake.connections == 2


def test_a_connection_unused_longer_than_the_idle_timeout_is_not_reused(fake: FakeSlack) -> None:
    client = web_client(TOKEN, fake.api_url, idle_timeout=0)  # every connection too old at once
    for n in range(3):
        client.chat_postMessage(channel=CHANNEL, text=f"post {n}")

    assert fake.connections == 3
    assert fake.idle_closes == 0, "the client closed them, before the server had to"
    assert texts(fake) == ["post 0", "post 1", "post 2"]


def test_a_server_that_closes_after_some_requests_gets_each_post_once(fake: FakeSlack) -> None:
    fake.max_requests = 3
    client = web_client(TOKEN, fake.api_url)
    for n in range(10):
        client.chat_postMessage(channel=CHANNEL, text=f"post {n}")

    assert texts(fake) == [f"post {n}" for n in range(10)]
    assert fake.connections == 4  # 3 + 3 + 3 + 1


def test_a_lost_answer_on_a_reused_connection_is_not_sent_again(fake: FakeSlack) -> None:
    client = web_client(TOKEN, fake.api_url)
    client.chat_postMessage(channel=CHANNEL, text="first")
    fake.lose_answer_next("chat.postMessage")

    with pytest.raises(OSError):
        client.chat_postMessage(channel=CHANNEL, text="maybe posted")

    assert texts(fake) == ["first", "maybe posted"]
    assert len(fake.calls_to("chat.postMessage")) == 2
    assert client.chat_postMessage(channel=CHANNEL, text="next")["ok"], "a new connection"


def test_a_429_is_waited_out_and_posted_once(fake: FakeSlack) -> None:
    client = web_client(TOKEN, fake.api_url)
    fake.fail_next("chat.postMessage", status=429, retry_after=0)

    answer = client.chat_postMessage(channel=CHANNEL, text="after the wait")

    assert answer["ok"]
    assert len(fake.calls_to("chat.postMessage")) == 2
    assert texts(fake) == ["after the wait"]
    assert fake.connections == 1, "a 429 leaves the connection open"


def test_a_file_upload_goes_to_its_upload_url(fake: FakeSlack) -> None:
    notifier = SlackNotifier(web_client(TOKEN, fake.api_url))
    parent = notifier.post(CHANNEL, "Task t1", [])

    notifier.upload(CHANNEL, parent, "print('hi')\n", "answer.py", "the whole answer")

    (reply,) = fake.replies(CHANNEL, parent)
    (shared,) = reply["files"]
    assert reply["text"] == "the whole answer" and shared["name"] == "answer.py"
    assert fake.file_content(shared["id"]) == b"print('hi')\n"
    assert fake.connections == 1, "the upload URL is on the same host here: same pool"


@pytest.mark.parametrize("count", [8, 24], ids=["threads", "more threads than the pool keeps"])
def test_many_threads_at_once_each_get_their_own_answers(fake: FakeSlack, count: int) -> None:
    client = web_client(TOKEN, fake.api_url)
    wrong: list[str] = []

    def post_many(thread: int) -> None:
        for n in range(20):
            text = f"thread {thread} post {n}"
            answer = client.chat_postMessage(channel=CHANNEL, text=text)
            if answer["message"]["text"] != text:
                wrong.append(f"{text}: got {answer['message']['text']}")

    threads = [threading.Thread(target=post_many, args=(t,)) for t in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert wrong == []
    expected = [f"thread {t} post {n}" for t in range(count) for n in range(20)]
    assert sorted(texts(fake)) == sorted(expected)
    if count <= POOL_SIZE:
        assert fake.connections <= count, "one connection per thread at most"


def test_a_forked_child_opens_its_own_connection(fake: FakeSlack) -> None:
    client = web_client(TOKEN, fake.api_url)
    client.chat_postMessage(channel=CHANNEL, text="parent")

    child = os.fork()
    if child == 0:  # the child: the parent's connection is not its to write on
        try:
            client.chat_postMessage(channel=CHANNEL, text="child")
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    client.chat_postMessage(channel=CHANNEL, text="parent again")

    assert texts(fake) == ["parent", "child", "parent again"]
    assert fake.connections == 2


CONTENT_TYPES = [
    "application/json; charset=utf-8",
    'text/html; Charset="ISO-8859-1"',
    "application/gzip",
    "",
    "text/plain",
    "nonsense",
    "Application/JSON ; charset = Latin-1 ; q=1",
]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_content_types_are_read_as_the_email_package_reads_them(content_type: str) -> None:
    message = Message()
    if content_type:
        message["Content-Type"] = content_type
    assert _media_type(content_type) == message.get_content_type()
    assert _charset(content_type) == (message.get_content_charset() or "utf-8")


# --------------------------------------------------------------------------- TLS


def test_https_calls_reuse_one_connection(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    with FakeSlack(bot_token=TOKEN, tls=cert.server()) as fake:
        client = PooledWebClient(token=TOKEN, base_url=fake.api_url, ssl=cert.client())
        for n in range(5):
            client.chat_postMessage(channel=CHANNEL, text=f"post {n}")

        assert fake.connections == 1
        assert len(texts(fake)) == 5


def test_a_certificate_nobody_trusts_is_refused_as_before(tmp_path: Path) -> None:
    with FakeSlack(bot_token=TOKEN, tls=self_signed(tmp_path).server()) as fake:
        outcomes = [
            outcome(lambda c=client: c.auth_test())
            for client in (WebClient(TOKEN, fake.api_url), PooledWebClient(TOKEN, fake.api_url))
        ]
    assert outcomes[0] == outcomes[1] == ("URLError", "SSLCertVerificationError")


@pytest.mark.parametrize("check_hostname", [True, False])
def test_the_host_name_is_checked_when_the_context_says_so(
    tmp_path: Path, check_hostname: bool
) -> None:
    cert = self_signed(tmp_path)  # for 127.0.0.1, asked for as localhost
    with FakeSlack(bot_token=TOKEN, tls=cert.server()) as fake:
        context = cert.client()
        context.check_hostname = check_hostname
        url = f"https://localhost:{fake.port}/api/"
        outcomes = [
            outcome(lambda cls=cls: cls(TOKEN, url, ssl=context, retry_handlers=[]).auth_test())
            for cls in (WebClient, PooledWebClient)
        ]
    expected = ("URLError", "SSLCertVerificationError") if check_hostname else ("ok", 200, True)
    assert outcomes[0] == outcomes[1] == expected


# --------------------------------------------------------------------------- as before


def outcome(call: Callable[[], Any]) -> tuple:
    """What a caller sees of a call: the answer, or the error and what it carries."""
    try:
        answer = call()
        return ("ok", answer.status_code, answer["ok"])
    except SlackApiError as exc:
        headers = {k.lower(): v for k, v in exc.response.headers.items()}
        retry_after = headers.get("retry-after")
        return ("SlackApiError", exc.response.status_code, exc.response["error"], retry_after)
    except URLError as exc:
        return ("URLError", type(exc.reason).__name__)
    except Exception as exc:
        return (type(exc).__name__,)


def _fail(status: int, error: str | None = None, retry_after: int | None = None) -> Callable:
    def arrange(fake: FakeSlack) -> None:
        fake.fail_next("chat.postMessage", status=status, error=error, retry_after=retry_after)

    return arrange


SCENARIOS: dict[str, Callable[[FakeSlack], None]] = {
    "posted": lambda fake: None,
    "refused by Slack": _fail(200, "channel_not_found"),
    "server error": _fail(500),
    "rate limited": _fail(429, retry_after=7),
    "answer lost": lambda fake: fake.lose_answer_next("chat.postMessage"),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_answers_and_failures_come_out_as_from_slack_sdks_own_client(
    fake: FakeSlack, scenario: str
) -> None:
    seen = []
    for client in (WebClient(TOKEN, fake.api_url), PooledWebClient(TOKEN, fake.api_url)):
        client.retry_handlers = []  # a 429 reaches the caller
        client.auth_test()  # the pooled client's call then goes out on a reused connection
        SCENARIOS[scenario](fake)
        seen.append(outcome(lambda c=client: c.chat_postMessage(channel=CHANNEL, text="x")))

    assert seen[0] == seen[1]
    assert texts(fake) == (["x", "x"] if scenario in ("posted", "answer lost") else [])


def test_an_unreachable_slack_and_a_slow_one_fail_as_before(fake: FakeSlack) -> None:
    closed = FakeSlack().start()
    unreachable = closed.api_url
    closed.stop()
    fake.latency = 1.5
    seen = []
    for cls in (WebClient, PooledWebClient):
        refused = outcome(lambda cls=cls: cls(TOKEN, unreachable).auth_test())
        slow = outcome(lambda cls=cls: cls(TOKEN, fake.api_url, timeout=1).auth_test())
        seen.append((refused, slow))

    assert seen[0] == seen[1] == (("URLError", "ConnectionRefusedError"), ("TimeoutError",))


def test_the_429_handler_reads_retry_after_as_before(fake: FakeSlack) -> None:
    client = PooledWebClient(TOKEN, fake.api_url)
    client.retry_handlers = [RateLimitErrorRetryHandler(max_retry_count=1)]
    fake.fail_next("chat.postMessage", count=2, status=429, retry_after=0)

    with pytest.raises(SlackApiError) as limited:
        client.chat_postMessage(channel=CHANNEL, text="never")

    assert limited.value.response.status_code == 429
    assert len(fake.calls_to("chat.postMessage")) == 2, "one wait, then the 429 is the answer"


# --------------------------------------------------------------------------- proxies


class _Proxy(BaseHTTPRequestHandler):
    """An HTTP proxy that answers every request itself, noting the URL asked for."""

    protocol_version = "HTTP/1.1"
    server: Any

    def do_POST(self) -> None:
        self.server.seen.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"ok": true, "user_id": "U0PROXIED"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_with_a_proxy_calls_go_through_it_as_before(
    fake: FakeSlack, proxy: Any, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{proxy.server_address[1]}"
    if how == "environment":
        monkeypatch.setenv("HTTPS_PROXY", url)
        client = web_client(TOKEN, fake.api_url)
    else:
        client = PooledWebClient(TOKEN, fake.api_url, proxy=url)

    assert client.auth_test()["user_id"] == "U0PROXIED"
    assert proxy.seen == [f"{fake.api_url}auth.test"]
    assert fake.calls == [] and fake.connections == 0
