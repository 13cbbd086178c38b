"""The fake Messages API, driven by the real `anthropic` SDK over HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import anthropic
import httpx2
import pytest

from aico.fakes.anthropic import (
    CLIENT_GONE,
    CURRENT_MODELS,
    FAULT_KINDS,
    NOT_ANSWERED,
    RETIRED_MODELS,
    FakeClaude,
)

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
    params.setdefault("model", MODEL)
    messages = [{"role": "user", "content": content}]
    return client.messages.create(messages=messages, **params)


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


# -- models ------------------------------------------------------------------------------------


def raw_connection(fake: FakeClaude) -> http.client.HTTPConnection:
    host, port = fake.url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=5)


def get_raw(fake: FakeClaude, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    connection = raw_connection(fake)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_retrieve_a_current_model(fake: FakeClaude) -> None:
    model = client_for(fake).models.retrieve("claude-sonnet-5-5")

    assert (model.type, model.id, model.display_name) == (
        "model",
        "claude-sonnet-5-5",
        "Claude Sonnet 5.5",
    )
    assert model.lifecycle == "active"
    assert model.created_at.tzinfo is not None
    assert fake.model_lookups == ["claude-sonnet-5-5"]
    assert fake.calls == [], "Models API requests are not Messages calls"


def test_a_snapshot_id_carries_its_release_date(fake: FakeClaude) -> None:
    model = client_for(fake).models.retrieve("claude-haiku-4-5-20251001")

    assert model.created_at.date().isoformat() == "2025-10-01"
    assert model.display_name == "Claude Haiku 4.5"


def test_a_retired_model_stays_in_the_catalogue_but_cannot_be_used(fake: FakeClaude) -> None:
    client = client_for(fake, max_retries=0)

    model = client.models.retrieve("claude-sonnet-4-5")
    with warnings.catch_warnings():  # older SDKs warn that the model is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(anthropic.NotFoundError) as raised:
            ask(client, "still there?", model="claude-sonnet-4-5")

    assert (model.lifecycle, str(model.retires_at.date())) == ("retired", "2026-11-30")
    assert raised.value.body["error"] == {
        "type": "not_found_error",
        "message": "model: claude-sonnet-4-5",
    }
    assert [(call.status, call.fault) for call in fake.calls] == [(404, None)]


def test_an_unknown_model_is_not_found(fake: FakeClaude) -> None:
    client = client_for(fake, max_retries=0)

    with pytest.raises(anthropic.NotFoundError) as looked_up:
        client.models.retrieve("claude-nonesuch-9")
    with pytest.raises(anthropic.NotFoundError) as asked:
        ask(client, "hello", model="claude-nonesuch-9")

    for raised in (looked_up.value, asked.value):
        assert raised.type == "not_found_error"
        assert raised.body["error"]["message"] == "model: claude-nonesuch-9"
        assert raised.body["request_id"] == raised.response.headers["request-id"]


@pytest.mark.parametrize(
    "retired", ["claude-opus-4-1", "claude-3-5-haiku", "claude-sonnet-4-20250514"]
)
def test_every_retired_model_is_refused(fake: FakeClaude, retired: str) -> None:
    with pytest.raises(anthropic.NotFoundError):
        ask(client_for(fake, max_retries=0), "hello", model=retired)


def test_models_and_retired_can_be_changed_while_running(fake: FakeClaude) -> None:
    client = client_for(fake, max_retries=0)
    fake.models = [*fake.models, "claude-opus-4-7"]
    assert ask(client, "hi", model="claude-opus-4-7").model == "claude-opus-4-7"

    fake.retired = [*fake.retired, "claude-opus-4-7"]

    with pytest.raises(anthropic.NotFoundError):
        ask(client, "hi", model="claude-opus-4-7")
    assert client.models.retrieve("claude-opus-4-7").lifecycle == "retired"


@pytest.mark.filterwarnings("ignore:The model 'claude-opus-4-5' is deprecated")
def test_a_served_model_with_a_retirement_date_is_deprecated_but_served(fake: FakeClaude) -> None:
    fake.models = [*fake.models, "claude-opus-4-5"]
    client = client_for(fake, max_retries=0)

    model = client.models.retrieve("claude-opus-4-5")

    assert (model.lifecycle, str(model.retires_at.date())) == ("deprecated", "2027-01-22")
    assert "claude-opus-4-5" in [listed.id for listed in client.models.list(limit=1000)]
    assert ask(client, "still?", model="claude-opus-4-5").content[0].text == "Answer to: still?"


def test_list_pages_through_the_served_models_only(fake: FakeClaude) -> None:
    client = client_for(fake)

    listed = [model.id for model in client.models.list(limit=3)]  # the SDK follows after_id

    assert listed == list(CURRENT_MODELS)
    assert not set(listed) & set(RETIRED_MODELS)
    assert len([call for call in fake.model_calls if call.status == 200]) == 4


def test_list_shows_retired_models_when_asked_for(fake: FakeClaude) -> None:
    page = client_for(fake).models.list(lifecycle=["retired"], limit=1000)

    assert [model.id for model in page.data] == list(RETIRED_MODELS)
    assert {model.lifecycle for model in page.data} == {"retired"}


def test_list_honours_limit_after_id_and_before_id() -> None:
    with FakeClaude(models=["m-1", "m-2", "m-3", "m-4", "m-5"], retired=[]) as fake:
        first = get_raw(fake, "/v1/models?limit=2", VALID_HEADERS)[1]
        after = get_raw(fake, "/v1/models?limit=2&after_id=m-2", VALID_HEADERS)[1]
        last = get_raw(fake, "/v1/models?limit=2&after_id=m-4", VALID_HEADERS)[1]
        before = get_raw(fake, "/v1/models?limit=2&before_id=m-4", VALID_HEADERS)[1]
        status, error = get_raw(fake, "/v1/models?limit=0", VALID_HEADERS)

    def ids(page: dict) -> tuple:
        return [m["id"] for m in page["data"]], page["has_more"], page["first_id"], page["last_id"]

    assert ids(first) == (["m-1", "m-2"], True, "m-1", "m-2")
    assert ids(after) == (["m-3", "m-4"], True, "m-3", "m-4")
    assert ids(last) == (["m-5"], False, "m-5", "m-5")
    assert ids(before) == (["m-2", "m-3"], True, "m-2", "m-3")
    assert (status, error["error"]["type"]) == (400, "invalid_request_error")
    assert error["error"]["message"].startswith("limit:")


@pytest.mark.parametrize(
    ("missing", "status", "error_type"),
    [
        ("x-api-key", 401, "authentication_error"),
        ("anthropic-version", 400, "invalid_request_error"),
    ],
)
def test_the_models_api_checks_the_same_headers(
    fake: FakeClaude, missing: str, status: int, error_type: str
) -> None:
    headers = {name: value for name, value in VALID_HEADERS.items() if name != missing}

    for path in ("/v1/models", "/v1/models/claude-sonnet-5-5"):
        answer_status, error = get_raw(fake, path, headers)
        assert (answer_status, error["error"]["type"]) == (status, error_type)


def test_the_models_api_refuses_a_wrong_key() -> None:
    with FakeClaude(api_key="right-key") as fake, pytest.raises(anthropic.AuthenticationError):
        client_for(fake, max_retries=0).models.retrieve("claude-sonnet-5-5")


# -- sampling on the strict families -----------------------------------------------------------


def sent(params: dict[str, Any]) -> dict[str, Any]:
    """`messages.create` arguments for `params`: SDK 2.x has no temperature / top_p / top_k
    arguments any more, so those go in `extra_body`, as a caller would have to send them."""
    sampling = {name: params[name] for name in ("temperature", "top_p", "top_k") if name in params}
    rest = {name: value for name, value in params.items() if name not in sampling}
    return {**rest, "extra_body": sampling} if sampling else rest


@pytest.mark.parametrize(
    ("model", "params", "field"),
    [
        ("claude-sonnet-5-5", {"temperature": 0.5}, "temperature"),
        ("claude-sonnet-5-5", {"temperature": 0}, "temperature"),
        ("claude-opus-5-5", {"top_p": 0.9}, "top_p"),
        ("claude-fable-5-1", {"top_k": 40}, "top_k"),
        ("claude-sonnet-5-5", {"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ("claude-opus-5", {"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ],
)
def test_the_strict_families_refuse_sampling_and_manual_thinking(
    fake: FakeClaude, model: str, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        ask(client_for(fake, max_retries=0), "hi", model=model, max_tokens=2000, **sent(params))

    assert raised.value.type == "invalid_request_error"
    assert raised.value.body["error"]["message"].startswith(field)
    assert fake.prompts() == []


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("claude-sonnet-5-5", {"temperature": 1}),
        ("claude-sonnet-5-5", {"thinking": {"type": "adaptive"}}),
        ("claude-haiku-4-5", {"temperature": 0.5, "top_p": 0.9, "top_k": 40}),
        ("claude-haiku-4-5", {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
        ("claude-sonnet-4-6", {"temperature": 0.2}),
    ],
)
def test_default_sampling_and_other_models_are_accepted(
    fake: FakeClaude, model: str, params: dict[str, Any]
) -> None:
    message = ask(
        client_for(fake, max_retries=0), "hi", model=model, max_tokens=2000, **sent(params)
    )

    assert (message.model, message.content[0].text) == (model, "Answer to: hi")


# -- errors as the API sends them ---------------------------------------------------------------


def test_a_rate_limit_answer_carries_retry_after_and_the_rate_limit_headers(
    fake: FakeClaude,
) -> None:
    fake.retry_after = 7
    fake.fault_next("429")

    with pytest.raises(anthropic.RateLimitError) as raised:
        ask(client_for(fake, max_retries=0), "too fast")

    headers = raised.value.response.headers
    assert headers["retry-after"] == "7"
    for name in ("requests", "tokens"):
        assert int(headers[f"anthropic-ratelimit-{name}-limit"]) > 0
        assert int(headers[f"anthropic-ratelimit-{name}-remaining"]) >= 0
        reset = datetime.fromisoformat(headers[f"anthropic-ratelimit-{name}-reset"])
        assert reset.tzinfo is not None
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": raised.value.body["error"]["message"]},
        "request_id": headers["request-id"],
    }


def test_the_sdk_waits_the_retry_after_it_is_given(fake: FakeClaude) -> None:
    fake.retry_after = 1  # the SDK's own first backoff is at most 0.5 s
    fake.fault_next("429")

    message = ask(client_for(fake, max_retries=1), "patience")

    limited, answered = fake.calls
    assert message.content[0].text == "Answer to: patience"
    assert (limited.status, answered.status) == (429, 200)
    assert answered.at - limited.at >= 1.0


def test_a_body_over_the_size_limit_gets_413_unparsed(fake: FakeClaude) -> None:
    fake.max_request_bytes = 2_000
    client = client_for(fake, max_retries=2)

    with pytest.raises(anthropic.ContentTooLargeError) as raised:
        ask(client, "x" * 3_000)

    assert (raised.value.status_code, raised.value.type) == (413, "request_too_large")
    (call,) = fake.calls
    assert (call.status, call.body, call.fault) == (413, {}, None)
    assert ask(client, "small").content[0].text == "Answer to: small"


def test_the_size_limit_comes_before_the_key_check() -> None:
    with FakeClaude(api_key="right-key", max_request_bytes=100) as fake:
        status, error = post_raw(fake, {**VALID_BODY, "pad": "x" * 200}, VALID_HEADERS)

    assert (status, error["error"]["type"]) == (413, "request_too_large")


# -- faults ------------------------------------------------------------------------------------


def stream_events(client: anthropic.Anthropic, prompt: str, **params: Any) -> Iterator[Any]:
    messages = [{"role": "user", "content": prompt}]
    with client.messages.create(
        model=MODEL, max_tokens=200, messages=messages, stream=True, **params
    ) as events:
        yield from events


LONG_PROMPT = "please explain the plan for the quarterly report in great detail"


def test_an_error_event_mid_stream_reaches_the_caller_as_an_overloaded_status_error(
    fake: FakeClaude,
) -> None:
    fake.fault_next("error_event", after_deltas=2)
    seen: list[str] = []

    with pytest.raises(anthropic.APIStatusError) as raised:
        for event in stream_events(client_for(fake, max_retries=2), LONG_PROMPT):
            seen.append(event.type)

    error = raised.value
    assert not isinstance(error, anthropic.OverloadedError), "not a 529: the stream had its 200"
    assert (error.status_code, error.type) == (200, "overloaded_error")
    assert error.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert seen == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
    ]
    assert [(call.status, call.fault) for call in fake.calls] == [(200, "error_event")]
    assert (fake.prompts(), fake.answered(LONG_PROMPT), fake.requests(LONG_PROMPT)) == ([], 0, 1)


def test_the_error_event_is_on_the_wire_as_the_api_sends_it(fake: FakeClaude) -> None:
    fake.fault_next("error_event", after_deltas=1)
    connection = raw_connection(fake)
    try:
        connection.request(
            "POST", "/v1/messages", json.dumps({**VALID_BODY, "stream": True}), VALID_HEADERS
        )
        response = connection.getresponse()
        status, wire = response.status, response.read().decode()
    finally:
        connection.close()

    blocks = [block for block in wire.split("\n\n") if block]
    assert status == 200
    assert [block.split("\n")[0] for block in blocks] == [
        "event: message_start",
        "event: content_block_start",
        "event: ping",
        "event: content_block_delta",
        "event: error",
    ]
    _, data = blocks[-1].split("\n")
    assert json.loads(data.removeprefix("data: ")) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_a_cut_stream_surfaces_as_httpx_incomplete_read(fake: FakeClaude) -> None:
    fake.fault_next("cut", after_deltas=1)
    texts: list[str] = []

    with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read") as raised:
        for event in stream_events(client_for(fake, max_retries=2), LONG_PROMPT):
            if event.type == "content_block_delta":
                texts.append(event.delta.text)

    assert not isinstance(raised.value, anthropic.APIError), "the SDK passes httpx's error through"
    assert texts == ["Answer to: please "]
    assert [(call.status, call.fault) for call in fake.calls] == [(200, "cut")]


def test_a_cut_json_request_is_a_connection_error_and_the_sdk_retries_it(fake: FakeClaude) -> None:
    fake.fault_next("cut")
    with pytest.raises(anthropic.APIConnectionError):
        ask(client_for(fake, max_retries=0), "cut me")

    fake.fault_next("cut")
    message = ask(client_for(fake, max_retries=2), "cut me")

    assert message.content[0].text == "Answer to: cut me"
    assert [(call.status, call.fault) for call in fake.calls] == [
        (NOT_ANSWERED, "cut"),
        (NOT_ANSWERED, "cut"),
        (200, None),
    ]
    assert (fake.requests("cut me"), fake.answered("cut me")) == (3, 1)


def test_a_refusal_stream_gives_the_text_so_far_then_stop_reason_refusal(fake: FakeClaude) -> None:
    fake.fault_next("refusal", after_deltas=1)

    events = list(stream_events(client_for(fake), LONG_PROMPT))

    texts = [e.delta.text for e in events if e.type == "content_block_delta"]
    (delta,) = [e for e in events if e.type == "message_delta"]
    assert texts == ["Answer to: please "]
    assert delta.delta.stop_reason == "refusal"
    assert delta.delta.stop_details.type == "refusal"
    assert events[-1].type == "message_stop"
    assert [(call.status, call.fault) for call in fake.calls] == [(200, "refusal")]
    assert fake.prompts() == []


@pytest.mark.parametrize("kind", ["refusal", "max_tokens"])
def test_injected_stops_as_json(fake: FakeClaude, kind: str) -> None:
    fake.fault_next(kind, after_deltas=1)

    message = ask(client_for(fake), LONG_PROMPT)

    assert (message.content[0].text, message.stop_reason) == ("Answer to: please ", kind)
    assert message.usage.output_tokens == 3
    assert (message.stop_details is not None) == (kind == "refusal")


def test_the_error_event_kind_on_a_json_request_is_a_529(fake: FakeClaude) -> None:
    fake.fault_next("error_event")

    with pytest.raises(anthropic.OverloadedError):
        ask(client_for(fake, max_retries=0), "json")

    assert [(call.status, call.fault) for call in fake.calls] == [(529, "error_event")]


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [
        ("429", anthropic.RateLimitError, 429),
        ("500", anthropic.InternalServerError, 500),
        ("529", anthropic.OverloadedError, 529),
        ("413", anthropic.ContentTooLargeError, 413),
        ("error_event", anthropic.APIStatusError, 200),
        ("cut", httpx2.RemoteProtocolError, 200),
    ],
)
def test_every_failing_kind_reaches_a_streaming_caller_and_is_recorded(
    fake: FakeClaude, kind: str, error: type[Exception], status: int
) -> None:
    fake.fault_next(kind)

    with pytest.raises(error):
        list(stream_events(client_for(fake, max_retries=0), LONG_PROMPT))

    (call,) = fake.calls
    assert (call.status, call.fault) == (status, kind)
    assert (fake.answered(LONG_PROMPT), fake.requests(LONG_PROMPT)) == (0, 1)


def test_fail_next_is_recorded_as_a_fault_and_answered_counts_the_retry(fake: FakeClaude) -> None:
    fake.fail_next(1, status=529)

    ask(client_for(fake, max_retries=2), "retry me")

    assert [(call.status, call.fault) for call in fake.calls] == [(529, "529"), (200, None)]
    assert (fake.requests("retry me"), fake.answered("retry me")) == (2, 1)


def test_fault_next_queues_faults_in_order(fake: FakeClaude) -> None:
    fake.fault_next("529")
    fake.fault_next("500", count=2)

    ask(client_for(fake, max_retries=3), "queue")

    assert [call.fault for call in fake.calls] == ["529", "500", "500", None]


def test_unknown_fault_kinds_and_bad_rates_are_refused(fake: FakeClaude) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        fake.fault_next("503")
    with pytest.raises(ValueError, match="unknown fault kind"):
        fake.flaky({"overloaded": 0.1})
    with pytest.raises(ValueError, match="more than 1"):
        fake.flaky({"529": 0.6, "cut": 0.6})
    assert set(FAULT_KINDS) == {
        "429",
        "500",
        "529",
        "413",
        "error_event",
        "cut",
        "refusal",
        "max_tokens",
    }


def post_many(fake: FakeClaude, count: int, tag: str = "q") -> list[int]:
    """Send `count` raw JSON requests, one after the other on one connection; their statuses."""
    connection, statuses = raw_connection(fake), []
    try:
        for number in range(count):
            body = {**VALID_BODY, "messages": [{"role": "user", "content": f"{tag}{number}"}]}
            connection.request("POST", "/v1/messages", json.dumps(body), VALID_HEADERS)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        connection.close()
    return statuses


def flaky_faults(fake: FakeClaude, count: int) -> list[str | None]:
    """The fault each of `count` new raw requests got."""
    post_many(fake, count)
    return [call.fault for call in fake.calls[-count:]]


def test_flaky_draws_each_kind_at_about_its_rate_from_its_seed() -> None:
    rates = {"529": 0.25, "refusal": 0.15}
    with FakeClaude() as fake:
        fake.flaky(rates, seed=7)
        first = flaky_faults(fake, 200)
        fake.flaky(rates, seed=7)
        again = flaky_faults(fake, 200)
        fake.flaky({})
        after = flaky_faults(fake, 20)
        seen = {(call.fault, call.status) for call in fake.calls}

    assert 25 <= first.count("529") <= 80
    assert 12 <= first.count("refusal") <= 55
    assert first.count(None) + first.count("529") + first.count("refusal") == 200
    assert again == first, "the same seed draws the same faults"
    assert after == [None] * 20
    assert seen == {(None, 200), ("529", 529), ("refusal", 200)}
    assert len(fake.prompts()) == first.count(None) * 2 + 20


def test_flaky_draws_one_fault_per_request_across_threads() -> None:
    with FakeClaude() as serial:
        serial.flaky({"529": 0.5}, seed=1)
        expected = flaky_faults(serial, 100).count("529")
    with FakeClaude() as fake:
        fake.flaky({"529": 0.5}, seed=1)
        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(lambda tag: post_many(fake, 25, tag), "abcd"))

    statuses = [status for run in runs for status in run]
    faults = [call.fault for call in fake.calls]
    assert len(faults) == len(statuses) == 100
    assert faults.count("529") == statuses.count(529) == expected, "one draw per request"
