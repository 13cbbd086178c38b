"""The Claude adapter against the fake Messages API, through the real anthropic SDK: errors are
classified by what Claude says they are, how Claude stopped is kept, the configured model is
checked before any task is taken, a forced tool call comes back as data, and files go as
content blocks."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import date, timedelta

import anthropic
import jsonschema
import pytest
from anthropic._data import DEPRECATED_MODELS

from aico.fakes.anthropic import MAX_IMAGE_BYTES, FakeClaude
from core.adapters.claude import SYSTEM_PROMPT, ClaudeModel, _end_of_life, _tool_answer
from core.errors import ConfigError, ModelError

KEY = "sk-ant-test"
CURRENT = "claude-sonnet-5-5"


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeClaude]:
    with FakeClaude() as fake:
        yield fake


def model(fake: FakeClaude, name: str = CURRENT, max_tokens: int = 100) -> ClaudeModel:
    return ClaudeModel(KEY, name, timeout=5.0, max_tokens=max_tokens, base_url=fake.url)


def stream(claude: ClaudeModel, prompt: str = "hello there"):
    seen: list[str] = []
    return claude.complete(prompt, (), lambda pieces: seen.append("".join(pieces))), seen


# -- errors, by what they are --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["error_event", "cut"])
def test_claude_failing_in_the_middle_of_its_stream_is_transient(fake, kind):
    fake.fault_next(kind, after_deltas=1)
    with pytest.raises(ModelError) as failed:
        stream(model(fake))
    assert failed.value.transient, str(failed.value)
    assert fake.requests("hello there") == 1, "a broken stream is not retried inside one attempt"


def test_an_overloaded_error_event_after_the_200_says_overloaded(fake):
    fake.fault_next("error_event", after_deltas=2)
    with pytest.raises(ModelError, match="overloaded_error") as failed:
        stream(model(fake))
    assert failed.value.transient


@pytest.mark.parametrize("status", ["429", "529", "500"])
def test_overloaded_rate_limited_or_failing_claude_is_transient_after_the_sdk_retries(fake, status):
    fake.fault_next(status, count=3)  # the first try and the SDK's two retries
    with pytest.raises(ModelError) as failed:
        stream(model(fake))
    assert failed.value.transient
    assert fake.requests("hello there") == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
def test_a_refused_request_is_permanent(fake, status):
    fake.fail_next(1, status=status)
    with pytest.raises(ModelError) as failed:
        stream(model(fake))
    assert not failed.value.transient, str(failed.value)
    assert fake.requests("hello there") == 1


def test_a_transient_failure_once_is_absorbed_by_the_sdk(fake):
    fake.fault_next("529")
    answer, _ = stream(model(fake))
    assert answer.text == "Answer to: hello there" and answer.stop_reason == "end_turn"


# -- how Claude stopped --------------------------------------------------------------------


def test_a_refusal_is_an_answer_that_says_claude_declined(fake):
    fake.fault_next("refusal", after_deltas=1)
    answer, _ = stream(model(fake))
    assert answer.stop_reason == "refusal"
    assert fake.requests("hello there") == 1


def test_an_answer_cut_at_max_tokens_says_so(fake):
    answer, _ = stream(model(fake, max_tokens=2), "one two three four five six")
    assert answer.stop_reason == "max_tokens"
    assert answer.text == "Answer to:" and answer.usage["output_tokens"] == 2


def test_usage_carries_the_input_and_output_tokens(fake):
    answer, seen = stream(model(fake))
    assert answer.usage["input_tokens"] > 0 and answer.usage["output_tokens"] > 0
    assert seen and seen[-1] == answer.text


# -- the model, checked at start -----------------------------------------------------------


def test_the_current_default_model_passes_the_check(fake):
    assert "served" in model(fake).check()
    assert fake.model_lookups == [CURRENT]


@pytest.mark.parametrize("retired", ["claude-sonnet-4-5", "claude-opus-4-1"])
def test_a_retired_model_stops_the_worker_naming_current_models(fake, retired):
    # claude-opus-4-1 is not in the SDK's table of deprecated models: the Models API says it
    with pytest.raises(ConfigError) as stopped:
        model(fake, retired).check(today=date(2026, 12, 1))
    message = str(stopped.value)
    assert f"AICO_MODEL={retired} was retired" in message
    assert "claude-sonnet-5-5" in message and "claude-sonnet-4-5," not in message


def test_with_claude_unreachable_the_sdks_table_still_stops_a_model_past_its_end_of_life():
    # Any model the installed SDK lists as deprecated (the table drops models once retired)
    deprecated = next(m for m in DEPRECATED_MODELS if _end_of_life(m) is not None)
    end = _end_of_life(deprecated)
    with FakeClaude() as gone:
        url = gone.url
    claude = ClaudeModel(KEY, deprecated, timeout=1.0, max_tokens=10, base_url=url)
    with pytest.raises(ConfigError, match=f"reached its end of life on {end}"):
        claude.check(today=end + timedelta(days=1))
    assert claude.check(today=end - timedelta(days=30)) == f"deprecated until {end}"


def test_an_unknown_model_stops_the_worker(fake):
    with pytest.raises(ConfigError, match="claude-nonesuch-9"):
        model(fake, "claude-nonesuch-9").check()


def test_a_deprecated_model_starts_with_its_end_of_life_date(fake, caplog):
    fake.models = [*fake.models, "claude-opus-4-5"]
    found = model(fake, "claude-opus-4-5").check(today=date(2026, 12, 1))
    assert found == "deprecated until 2027-01-22"
    assert any("2027-01-22" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_a_refused_key_stops_the_worker(fake):
    fake.api_key = "sk-ant-the-real-one"
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        model(fake).check()


def test_claude_unreachable_at_start_does_not_stop_the_worker():
    with FakeClaude() as gone:
        url = gone.url
    claude = ClaudeModel(KEY, CURRENT, timeout=1.0, max_tokens=10, base_url=url)
    assert claude.check() == "not checked"


def test_requests_carry_nothing_current_models_reject(fake):
    stream(model(fake))
    (call,) = fake.calls
    rejected = {"temperature", "top_p", "top_k", "thinking"}
    assert not rejected & set(call.body), call.body


# -- tool use: structured answers ----------------------------------------------------------

PLAN_TOOL = {
    "name": "make_plan",
    "description": "The plan for a project: its steps in order",
    "input_schema": {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"title": {"type": "string"}},
                    "required": ["title"],
                },
            }
        },
        "required": ["steps"],
    },
}
A_PLAN = {"steps": [{"title": "write the tests"}, {"title": "ship"}]}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def png_block(data: bytes = PNG) -> dict:
    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(data).decode()}
    return {"type": "image", "source": source}


def test_a_forced_tool_call_returns_its_scripted_input_as_data(fake):
    fake.tool_answers["make_plan"] = A_PLAN
    answer = model(fake).use_tool("plan the release", PLAN_TOOL)
    assert (answer.name, answer.input, answer.stop_reason) == ("make_plan", A_PLAN, "tool_use")
    assert answer.model == CURRENT and answer.usage["output_tokens"] > 0 and answer.ms > 0
    (call,) = fake.calls
    assert call.tools == ["make_plan"]
    assert call.tool_choice == {"type": "tool", "name": "make_plan"}
    assert call.body["system"] == SYSTEM_PROMPT and not call.body.get("stream")


def test_an_unscripted_tool_call_still_fits_the_schema(fake):
    answer = model(fake).use_tool("plan the release", PLAN_TOOL, system="You plan projects.")
    jsonschema.validate(answer.input, PLAN_TOOL["input_schema"])
    assert fake.calls[0].body["system"] == "You plan projects."


def test_a_wrong_call_sent_back_with_a_tool_result_round_trips(fake):
    fake.tool_answers["make_plan"] = [{"steps": []}, A_PLAN]
    claude = model(fake)
    first = claude.use_tool("plan the release", PLAN_TOOL)
    history = [
        {"role": "user", "content": "plan the release"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_try1", "name": first.name, "input": first.input}
            ],
        },
    ]
    retry = [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_try1",
            "content": "steps is empty",
            "is_error": True,
        },
        {"type": "text", "text": "Give at least one step."},
    ]
    second = claude.use_tool(retry, PLAN_TOOL, history=history)
    assert second.input == A_PLAN
    assert fake.prompts() == ["plan the release", "steps is empty\nGive at least one step."]


def test_a_tool_call_sent_back_without_its_result_is_a_permanent_error(fake):
    history = [
        {"role": "user", "content": "plan the release"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_try1", "name": "make_plan", "input": {}}],
        },
    ]
    with pytest.raises(ModelError, match="without `tool_result` blocks") as failed:
        model(fake).use_tool("try again", PLAN_TOOL, history=history)
    assert not failed.value.transient and failed.value.status == 400
    assert [c.status for c in fake.calls] == [400], "a refused request is not retried"


def test_an_overloaded_claude_on_a_tool_call_is_transient(fake):
    fake.fault_next("529", count=3)
    with pytest.raises(ModelError) as failed:
        model(fake).use_tool("plan the release", PLAN_TOOL)
    assert failed.value.transient and failed.value.status == 529


def test_a_tool_input_cut_at_max_tokens_is_an_error_that_says_so(fake):
    fake.tool_answers["make_plan"] = A_PLAN
    with pytest.raises(ModelError, match="cut at max_tokens") as failed:
        model(fake, max_tokens=3).use_tool("plan the release", PLAN_TOOL)
    assert not failed.value.transient


def test_a_refused_tool_call_is_permanent(fake):
    fake.fault_next("refusal", after_deltas=1)
    with pytest.raises(ModelError, match="declined to call make_plan") as failed:
        model(fake).use_tool("plan the release", PLAN_TOOL)
    assert not failed.value.transient


def test_an_answer_without_the_tool_call_is_an_error_that_says_so():
    # A forced tool_choice always gets a call from the API (and the fake); a reply in prose,
    # or calling another tool, is what this guards against.
    message = _message_without_tool(CURRENT)
    with pytest.raises(ModelError, match="no call of make_plan") as failed:
        _tool_answer(message, "make_plan", 1.0)
    assert not failed.value.transient


def _message_without_tool(model_id: str) -> anthropic.types.Message:
    return anthropic.types.Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model_id,
            "content": [{"type": "text", "text": "Here is a plan: ..."}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 5},
        }
    )


# -- files as content blocks ---------------------------------------------------------------


def test_content_blocks_with_an_image_go_as_the_user_message(fake):
    answer = model(fake).complete([png_block(), {"type": "text", "text": "what is this"}])
    assert answer.text == "Answer to: what is this"
    assert fake.calls[0].body["messages"][-1]["content"][0]["type"] == "image"


def test_an_image_too_big_is_a_permanent_error(fake):
    too_big = PNG + b"\x00" * (MAX_IMAGE_BYTES * 3 // 4)
    with pytest.raises(ModelError, match="image exceeds 5 MB maximum") as failed:
        stream(model(fake), [png_block(too_big), {"type": "text", "text": "what is this"}])
    assert not failed.value.transient and failed.value.status == 400


def test_a_streamed_answer_keeps_the_caches_token_counts():
    from core.adapters.claude import _Answer, _fold

    answer, pieces = _Answer(model=CURRENT), []
    usage = {
        "input_tokens": 5,
        "output_tokens": 1,
        "cache_read_input_tokens": 7,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 3},
    }
    start = {"type": "message_start", "message": {"model": "claude-x", "usage": usage}}
    for event in (
        start,
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 4},
        },
        {"type": "message_stop"},
    ):
        _fold(answer, pieces, "", event, lambda _: None)

    assert (answer.model, answer.stop_reason, answer.complete) == ("claude-x", "end_turn", True)
    assert answer.usage == {
        "input_tokens": 5,
        "output_tokens": 4,
        "cache_read_input_tokens": 7,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 3},
    }
