"""The fake Messages API, driven by the real `anthropic` SDK over HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import pytest

from tests.fakes.anthropic import CLIENT_GONE, FakeClaude

MODEL = "claude-fake-1"
PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
VALID_HEADERS = {
    "x-api-key": "test-key",
    "anthropic-version": "2023-06-01",
    "content-type": "application/json",
}
VALID_BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeClaude]:
    with FakeClaude() as fake:
        yield fake


def client_for(fake: FakeClaude, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test-key", base_url=fake.url, **options)


def ask(client: anthropic.Anthropic, content: Any, **params: Any) -> anthropic.types.Message:
    params.setdefault("max_tokens", 100)
    messages = [{"role": "user", "content": content}]
    return client.messages.create(model=MODEL, messages=messages, **params)


def post_raw(fake: FakeClaude, body: Any, headers: dict[str, str]) -> tuple[int, dict]:
    host, port = fake.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("POST", "/v1/messages", json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_create_answers_that_prompt_with_usage(fake: FakeClaude) -> None:
    message = ask(client_for(fake), "What is two plus two?")

    assert message.content[0].text == "Answer to: What is two plus two?"
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 7)
    assert fake.prompts() == ["What is two plus two?"]
    assert fake.calls[0].headers["authorization"] == "Bearer test-key"


def test_label_system_and_content_blocks(fake: FakeClaude) -> None:
    fake.label = "[offline model]"
    blocks = [{"type": "text", "text": "first part"}, {"type": "text", "text": "second part"}]

    message = ask(client_for(fake), blocks, system="Be brief.")

    assert message.content[0].text == "[offline model] Answer to: first part\nsecond part"
    assert message.usage.input_tokens == 6


def test_a_responder_overrides_the_answer(fake: FakeClaude) -> None:
    fake.responder = lambda body: f"{body['model']} says hi"

    assert ask(client_for(fake), "anything").content[0].text == f"{MODEL} says hi"


def test_max_tokens_truncates_the_answer(fake: FakeClaude) -> None:
    message = ask(client_for(fake), "tell me a long story", max_tokens=3)

    assert message.content[0].text == "Answer to: tell"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_streaming_gives_the_same_text_in_several_deltas(fake: FakeClaude) -> None:
    prompt = "please explain the plan for the quarterly report in detail"
    messages = [{"role": "user", "content": prompt}]

    with client_for(fake).messages.stream(model=MODEL, max_tokens=100, messages=messages) as stream:
        chunks = list(stream.text_stream)
        final = stream.get_final_message()

    assert "".join(chunks) == f"Answer to: {prompt}"
    assert len(chunks) > 1
    assert final.content[0].text == f"Answer to: {prompt}"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 12
    assert fake.calls[0].body["stream"] is True


def test_overloaded_once_is_retried_by_the_sdk(fake: FakeClaude) -> None:
    fake.fail_next(1, status=529)

    message = ask(client_for(fake, max_retries=2), "retry me")

    assert message.content[0].text == "Answer to: retry me"
    assert [call.status for call in fake.calls] == [529, 200]


def test_bad_request_is_not_retried(fake: FakeClaude) -> None:
    fake.fail_next(1, status=400)

    with pytest.raises(anthropic.BadRequestError) as raised:
        ask(client_for(fake, max_retries=2), "bad")

    assert len(fake.calls) == 1
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert raised.value.request_id.startswith("req_fake_")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ],
)
def test_injected_faults_map_to_sdk_errors(
    fake: FakeClaude, status: int, error: type[Exception]
) -> None:
    fake.fail_next(1, status=status)

    with pytest.raises(error):
        ask(client_for(fake, max_retries=0), "fault")


def test_fail_for_fails_everything_for_a_while(fake: FakeClaude) -> None:
    client = client_for(fake, max_retries=0)
    fake.fail_for(60, status=500)
    for _ in range(3):
        with pytest.raises(anthropic.InternalServerError):
            ask(client, "down")

    fake.fail_for(0)

    assert ask(client, "up").content[0].text == "Answer to: up"


def test_a_hang_longer_than_the_client_timeout_times_out(fake: FakeClaude) -> None:
    fake.hang_next(1, seconds=0.6)

    with pytest.raises(anthropic.APITimeoutError):
        ask(client_for(fake, max_retries=0, timeout=0.2), "hello?")
    assert ask(client_for(fake), "again").content[0].text == "Answer to: again"

    fake.wait_for(lambda f: len(f.calls) == 2)
    assert [call.status for call in fake.calls] == [200, CLIENT_GONE]
    assert fake.prompts() == ["again"]


def test_requests_are_served_concurrently() -> None:
    prompts = [f"question {number}" for number in range(8)]
    with FakeClaude(latency=0.2) as fake:
        client = client_for(fake)
        barrier = threading.Barrier(len(prompts))

        def ask_together(prompt: str) -> str:
            barrier.wait()
            return ask(client, prompt).content[0].text

        with ThreadPoolExecutor(len(prompts)) as pool:
            answers = list(pool.map(ask_together, prompts))

    assert answers == [f"Answer to: {prompt}" for prompt in prompts]
    assert fake.max_in_flight == 8


def test_wrong_api_key_is_refused() -> None:
    with FakeClaude(api_key="right-key") as fake, pytest.raises(anthropic.AuthenticationError):
        ask(client_for(fake, max_retries=0), "let me in")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": None}, "model"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": None}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ],
)
def test_bad_requests_get_400_naming_the_field(
    fake: FakeClaude, change: dict[str, Any], field: str
) -> None:
    body = {key: value for key, value in {**VALID_BODY, **change}.items() if value is not None}

    status, error = post_raw(fake, body, VALID_HEADERS)

    assert status == 400
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith(f"{field}:")


@pytest.mark.parametrize(
    ("missing", "status", "error_type"),
    [
        ("x-api-key", 401, "authentication_error"),
        ("anthropic-version", 400, "invalid_request_error"),
    ],
)
def test_required_headers(fake: FakeClaude, missing: str, status: int, error_type: str) -> None:
    headers = {name: value for name, value in VALID_HEADERS.items() if name != missing}

    answer_status, error = post_raw(fake, VALID_BODY, headers)

    assert (answer_status, error["error"]["type"]) == (status, error_type)
    assert missing in error["error"]["message"]


def test_wait_for_reports_a_timeout(fake: FakeClaude) -> None:
    with pytest.raises(TimeoutError, match="0 calls"):
        fake.wait_for(lambda f: len(f.calls) > 0, timeout=0.05)
