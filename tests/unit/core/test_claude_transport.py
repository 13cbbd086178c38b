"""The Claude adapter's requests on kept-alive connections (core/adapters/claude_http.py),
against the fake Messages API through the real anthropic SDK: connections are reused, one the
server closed or a stream broke on is not, timeouts and a server gone are the SDK's errors as
before, and a proxy in the environment is still used."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from aico.fakes.anthropic import FakeClaude
from core.adapters.claude import ClaudeModel
from core.errors import ModelError, Withheld
from tests.unit.fakes.tls import self_signed

KEY = "sk-ant-test"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARS, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeClaude]:
    with FakeClaude() as fake:
        yield fake


def model(fake: FakeClaude, timeout: float = 5.0) -> ClaudeModel:
    return ClaudeModel(KEY, "claude-sonnet-5-5", timeout=timeout, max_tokens=100, base_url=fake.url)


def ask(claude: ClaudeModel, prompt: str) -> str:
    return claude.complete(prompt, (), lambda pieces: None).text


def test_calls_one_after_another_go_on_one_connection(fake):
    claude = model(fake)

    answers = [ask(claude, f"question {n}") for n in range(5)]

    assert answers == [f"Answer to: question {n}" for n in range(5)]
    assert fake.connections == 1


def test_a_connection_the_server_closed_while_it_idled_is_not_reused(fake):
    # Given a connection the fake closed after it idled
    fake.idle_timeout = 0.1
    claude = model(fake)
    assert ask(claude, "before") == "Answer to: before"
    fake.wait_for(lambda f: f.idle_closes == 1)

    # When the next call comes, it goes on a new connection, and is answered once
    assert ask(claude, "after") == "Answer to: after"
    assert fake.requests("after") == 1
    assert fake.connections == 2


def test_the_connection_a_stream_broke_on_is_not_reused(fake):
    # Given a stream cut in the middle (the SDK does not retry an answer that began)
    claude = model(fake)
    fake.fault_next("cut")
    with pytest.raises(ModelError) as failed:
        ask(claude, "cut me")
    assert failed.value.transient

    # Then the next call is answered whole, on a connection of its own
    assert ask(claude, "whole") == "Answer to: whole"
    assert fake.connections == 2


def test_claude_answering_too_slowly_is_a_timeout_after_the_sdks_retries(fake):
    fake.hang_next(count=3, seconds=1.0)

    with pytest.raises(ModelError) as failed:
        ask(model(fake, timeout=0.3), "too slow")

    assert failed.value.transient and "in time" in str(failed.value)
    # the first try and the SDK's 2 retries (each recorded once the fake stops holding it)
    fake.wait_for(lambda f: f.requests("too slow") == 3, timeout=10.0)


def test_claude_gone_is_unreachable_after_the_sdks_retries():
    with socket.socket() as listener:  # a port nothing listens on any more
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    claude = ClaudeModel(KEY, "claude-sonnet-5-5", 5.0, 100, base_url=f"http://127.0.0.1:{port}")

    with pytest.raises(ModelError) as failed:
        ask(claude, "anyone?")

    assert failed.value.transient and "could not be reached" in str(failed.value)


@pytest.mark.parametrize("proxied", [False, True], ids=["pooled", "sdk-transport"])
def test_a_request_its_caller_holds_back_never_reaches_claude(fake, monkeypatch, proxied):
    # Given a caller whose attempt was not claimed (on aico's transport, and on the SDK's own)
    if proxied:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    asked: list[bool] = []

    def ready() -> bool:
        asked.append(True)
        return False

    # When it asks Claude, then Claude is not asked, and the caller is told so
    with pytest.raises(Withheld):
        model(fake).complete("held back", (), lambda pieces: None, ready)
    assert asked == [True], "asked once: the SDK did not retry it"
    assert fake.requests("held back") == 0


def test_a_request_leaves_once_its_caller_is_ready_and_its_retries_ask_again(fake):
    # Given Claude overloaded for the first request, and a caller ready after a moment
    fake.fail_next(count=1, status=529)
    claude, asked = model(fake), []

    def ready() -> bool:
        asked.append(fake.requests("retried"))  # what Claude had seen when it was asked
        return True

    # When it asks Claude, then the answer comes after the SDK's retry, each request asked for
    answer = claude.complete("retried", (), lambda pieces: None, ready)
    assert answer.text == "Answer to: retried"
    assert asked == [0, 1]


def test_a_proxy_in_the_environment_is_what_requests_go_through(fake, monkeypatch):
    # Given a proxy that refuses every connection, configured as httpx reads it
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")

    # Then Claude is not reached directly: the call fails at the proxy
    with pytest.raises(ModelError) as failed:
        ask(model(fake), "through the proxy")
    assert "could not be reached" in str(failed.value)
    assert fake.requests("through the proxy") == 0


def test_https_calls_trust_what_httpx_trusts_and_reuse_one_connection(tmp_path, monkeypatch):
    # Given Claude over https with a certificate trusted as httpx is told to (SSL_CERT_FILE)
    cert = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert.cert))
    with FakeClaude(tls=cert.server()) as fake:
        claude = model(fake)

        answers = [ask(claude, f"secure {n}") for n in range(3)]

        assert answers == [f"Answer to: secure {n}" for n in range(3)]
        assert fake.url.startswith("https://") and fake.connections == 1


def test_a_certificate_nobody_trusts_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with FakeClaude(tls=self_signed(tmp_path).server()) as fake:
        with pytest.raises(ModelError) as failed:
            ask(model(fake), "who are you?")

        assert failed.value.transient and "could not be reached" in str(failed.value)
        assert fake.requests("who are you?") == 0


def test_a_streamed_answer_is_read_from_the_connection_not_through_httpxs_decoders(
    fake, monkeypatch: pytest.MonkeyPatch
):
    # httpx's line decoders cost a task worker about 7% of its CPU: on aico's own transport
    # (and an uncompressed answer) the lines come from http.client's readline instead
    import httpx2

    def decoded(*_args: object) -> Iterator[str]:
        raise AssertionError("the stream went through httpx's decoders")

    monkeypatch.setattr(httpx2.Response, "iter_lines", decoded)
    claude = model(fake)

    assert ask(claude, "fast") == "Answer to: fast"
    assert fake.connections == 1
