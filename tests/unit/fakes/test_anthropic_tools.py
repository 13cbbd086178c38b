"""Tool use and content blocks in the fake Messages API, driven by the real `anthropic` SDK: the
API's checks (tools, tool_choice, images, documents, the pairing of tool calls and results),
and answers that call a tool, as JSON and streamed, faults included."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import jsonschema
import pytest

from aico.fakes.anthropic import MAX_IMAGE_BYTES, FakeClaude

MODEL = "claude-fake-1"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
TOOL_ID = re.compile(r"toolu_[A-Za-z0-9]{24}")
PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "goal": {"type": "string", "maxLength": 200},
        "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}, "minItems": 1},
        "size": {"enum": ["small", "large"]},
        "hours": {"type": "integer", "minimum": 2, "maximum": 40},
        "notes": {"type": "string"},
    },
    "required": ["goal", "steps", "size", "hours"],
    "$defs": {
        "step": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "minLength": 1},
                "after": {"type": "array", "items": {"type": "integer"}},
                "risky": {"type": "boolean"},
            },
            "required": ["title", "after", "risky"],
        }
    },
}
PLAN = {"name": "make_plan", "description": "The plan", "input_schema": PLAN_SCHEMA}
EDIT = {
    "name": "edit_files",
    "input_schema": {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
}
FORCE_PLAN = {"type": "tool", "name": "make_plan"}


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeClaude]:
    with FakeClaude() as fake:
        yield fake


@pytest.fixture
def client(fake: FakeClaude) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test-key", base_url=fake.url, max_retries=2)


def send(client: anthropic.Anthropic, messages: Any, **params: Any) -> Any:
    params.setdefault("max_tokens", 200)
    if isinstance(messages, str | list) and not _is_messages(messages):
        messages = [{"role": "user", "content": messages}]
    return client.messages.create(model=MODEL, messages=messages, **params)


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and "role" in value[0]


def refused(client: anthropic.Anthropic, messages: Any, **params: Any) -> str:
    with pytest.raises(anthropic.BadRequestError) as failed:
        send(client, messages, **params)
    return str(failed.value.body["error"]["message"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image(data: bytes = PNG, media_type: str = "image/png") -> dict[str, Any]:
    source = {"type": "base64", "media_type": media_type, "data": b64(data)}
    return {"type": "image", "source": source}


def pdf(pages: int) -> dict[str, Any]:
    data = b"%PDF-1.7\n" + b"".join(
        b"%d 0 obj << /Type /Page >> endobj\n" % n for n in range(pages)
    )
    source = {"type": "base64", "media_type": "application/pdf", "data": b64(data)}
    return {"type": "document", "source": source}


def tool_use(id_: str = "toolu_1", name: str = "make_plan") -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": {"goal": "x"}}


def tool_result(id_: str = "toolu_1", content: Any = "missing steps") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": id_, "content": content, "is_error": True}


def round_trip(answer: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "plan the release"},
        {"role": "assistant", "content": [tool_use()]},
        {"role": "user", "content": answer},
    ]


# -- tools and tool_choice, checked as the API checks them -----------------------------------


@pytest.mark.parametrize(
    ("tools", "field"),
    [
        ({"name": "x"}, "tools: Input should be a valid list"),
        ([{"name": "has space", "input_schema": {"type": "object"}}], "tools.0.custom.name"),
        ([{"name": "n" * 65, "input_schema": {"type": "object"}}], "tools.0.custom.name"),
        ([{"name": "plan"}], "tools.0.custom.input_schema: Field required"),
        ([{"name": "plan", "input_schema": {"type": "array"}}], "input_schema.type"),
        ([{"name": "plan", "parameters": {"type": "object"}}], "tools.0.custom.parameters"),
        ([{"name": "plan", "input_schema": {"type": "object"}, "description": 3}], "description"),
        ([PLAN, EDIT, PLAN], "tools: Tool names must be unique."),
        ([{"type": "web_search_20250305", "name": "web_search"}], "tools.0.type"),
    ],
)
def test_a_malformed_tool_is_refused_naming_the_field(client, tools, field):
    assert field in refused(client, "hi", tools=tools)


@pytest.mark.parametrize(
    ("choice", "field"),
    [
        ({"type": "required"}, "Input tag 'required'"),
        ({"type": "tool"}, "tool_choice.tool.name: Field required"),
        ({"type": "tool", "name": "no_such_tool"}, "tool_choice.tool.name"),
        ({"type": "auto", "name": "make_plan"}, "tool_choice.auto.name: Extra inputs"),
        ({"type": "any", "disable_parallel_tool_use": "yes"}, "disable_parallel_tool_use"),
        ({"type": "none", "disable_parallel_tool_use": True}, "tool_choice.none"),
    ],
)
def test_a_malformed_tool_choice_is_refused_naming_the_field(client, choice, field):
    assert field in refused(client, "hi", tools=[PLAN], tool_choice=choice)


def test_tool_choice_without_tools_is_refused(client):
    assert "tool_choice" in refused(client, "hi", tool_choice={"type": "auto"})


def test_forcing_a_tool_with_thinking_on_is_refused(client):
    message = refused(
        client, "hi", tools=[PLAN], tool_choice=FORCE_PLAN, thinking={"type": "adaptive"}
    )
    assert "forces tool use" in message


def test_a_well_formed_tool_request_is_accepted(client):
    reply = send(
        client,
        "plan it",
        tools=[PLAN, EDIT],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert reply.stop_reason == "tool_use"


# -- content blocks ----------------------------------------------------------------------------


def test_text_blocks_are_the_prompt_the_answer_quotes(client, fake):
    reply = send(client, [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}])
    assert reply.content[0].text == "Answer to: first\nsecond"
    assert fake.answered("first\nsecond") == 1


def test_an_image_and_a_pdf_with_text_are_accepted(client):
    content = [image(), pdf(3), {"type": "text", "text": "what is in them"}]
    assert send(client, content).content[0].text == "Answer to: what is in them"


def test_an_image_by_url_and_a_text_document_are_accepted(client):
    url_image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    text_source = {"type": "text", "media_type": "text/plain", "data": "notes"}
    document = {"type": "document", "source": text_source, "title": "notes.txt"}
    assert send(client, [url_image, document, {"type": "text", "text": "read"}]).content


def test_an_image_over_5_mb_of_base64_is_refused_as_the_api_says_it(client):
    data = PNG + b"\x00" * (MAX_IMAGE_BYTES * 3 // 4)  # base64 is 4/3 of the bytes
    message = refused(client, [image(data), {"type": "text", "text": "look"}])
    assert message.startswith("messages.0.content.0.image.source.base64: image exceeds 5 MB")
    assert "> 5242880 bytes" in message


def test_an_image_just_under_the_limit_is_accepted(client):
    data = PNG + b"\x00" * (MAX_IMAGE_BYTES * 3 // 4 - len(PNG) - 3)
    assert len(b64(data)) <= MAX_IMAGE_BYTES
    assert send(client, [image(data), {"type": "text", "text": "look"}]).content


@pytest.mark.parametrize(
    ("block", "field"),
    [
        (image(media_type="image/bmp"), "image.source.base64.media_type"),
        (image(media_type="image/jpeg"), "Image does not match the provided media type"),
        (
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "!"}},
            "image.source.base64.data: invalid base64",
        ),
        ({"type": "image", "source": {"type": "file", "file_id": "f"}}, "image.source"),
        ({"type": "image", "source": {"type": "url", "url": "ftp://x"}}, "source.url.url"),
        (pdf(101), "A maximum of 100 PDF pages may be provided."),
        (
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": b64(PNG)},
            },
            "The PDF specified was not valid.",
        ),
        ({"type": "text", "text": ""}, "text content blocks must be non-empty"),
        ({"type": "audio", "data": "x"}, "Input tag 'audio'"),
        (tool_use(), "`tool_use` blocks are not allowed in user messages"),
    ],
)
def test_a_bad_content_block_is_refused_naming_the_field(client, block, field):
    assert field in refused(client, [block], tools=[PLAN])


def test_pdf_pages_are_counted_over_the_whole_request(client):
    assert "100 PDF pages" in refused(client, [pdf(60), pdf(41), {"type": "text", "text": "x"}])


def test_an_empty_content_list_is_refused(client):
    assert "non-empty content" in refused(client, [])


def test_a_tool_result_in_an_assistant_message_is_refused(client):
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [tool_result()]},
    ]
    assert "not allowed in assistant messages" in refused(client, messages, tools=[PLAN])


# -- the pairing of tool calls and their results -------------------------------------------


def test_a_tool_call_answered_by_its_result_is_accepted(client, fake):
    messages = round_trip([tool_result(), {"type": "text", "text": "add the steps"}])
    reply = send(client, messages, tools=[PLAN], tool_choice=FORCE_PLAN)
    assert reply.stop_reason == "tool_use"
    assert fake.prompts() == ["missing steps\nadd the steps"]


def test_a_tool_call_without_its_result_is_refused_as_the_api_says_it(client):
    message = refused(client, round_trip([{"type": "text", "text": "again"}]), tools=[PLAN])
    assert message == (
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: "
        "toolu_1. Each `tool_use` block must have a corresponding `tool_result` block in the "
        "next message."
    )


def test_a_result_after_text_is_not_immediately_after(client):
    message = refused(
        client, round_trip([{"type": "text", "text": "so"}, tool_result()]), tools=[PLAN]
    )
    assert "without `tool_result` blocks immediately after: toolu_1" in message


def test_a_tool_call_as_the_last_message_is_refused(client):
    messages = round_trip([])[:2]
    assert "immediately after" in refused(client, messages, tools=[PLAN])


def test_a_result_for_an_unknown_call_is_refused_as_the_api_says_it(client):
    messages = round_trip([tool_result(), tool_result("toolu_2")])
    message = refused(client, messages, tools=[PLAN])
    assert message.startswith(
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_2."
    )


def test_a_result_in_the_first_message_answers_nothing(client):
    assert "unexpected `tool_use_id`" in refused(client, [tool_result()], tools=[PLAN])


def test_tool_blocks_need_tools_in_the_request(client):
    assert "must define tools" in refused(client, round_trip([tool_result()]))


def test_two_calls_need_both_results(client):
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [tool_use("toolu_a"), tool_use("toolu_b", "edit_files")]},
        {"role": "user", "content": [tool_result("toolu_a")]},
    ]
    assert "immediately after: toolu_b." in refused(client, messages, tools=[PLAN, EDIT])
    messages[2]["content"].append(tool_result("toolu_b", [{"type": "text", "text": "done"}]))
    assert send(client, messages, tools=[PLAN, EDIT]).content


# -- answers that call a tool --------------------------------------------------------------


def test_a_forced_tool_gets_a_tool_use_with_the_scripted_input(client, fake):
    fake.tool_answers["make_plan"] = {"goal": "ship", "steps": [], "size": "small", "hours": 3}
    reply = send(client, "plan the release", tools=[PLAN, EDIT], tool_choice=FORCE_PLAN)
    (block,) = reply.content
    assert (block.type, block.name, reply.stop_reason) == ("tool_use", "make_plan", "tool_use")
    assert TOOL_ID.fullmatch(block.id)
    assert block.input == {"goal": "ship", "steps": [], "size": "small", "hours": 3}
    (call,) = fake.calls
    assert call.tools == ["make_plan", "edit_files"] and call.tool_choice == FORCE_PLAN
    assert call.tool_use == {"id": block.id, "name": "make_plan", "input": block.input}
    assert fake.tool_inputs("make_plan") == [block.input]


def test_unscripted_the_input_is_valid_for_the_schema_and_quotes_the_prompt(client):
    reply = send(client, "plan the release", tools=[PLAN], tool_choice=FORCE_PLAN)
    tool_input = reply.content[0].input
    jsonschema.validate(tool_input, PLAN_SCHEMA)
    assert tool_input["goal"] == "Answer to: plan the release"
    assert tool_input["size"] == "small" and tool_input["hours"] == 2
    assert tool_input["steps"] == [
        {"title": "Answer to: plan the release", "after": [1], "risky": True}
    ]
    assert "notes" not in tool_input, "only the required properties"


def test_a_scripted_list_gives_one_input_per_call_and_repeats_its_last(client, fake):
    fake.tool_answers["edit_files"] = [{"path": "a.py"}, {"path": "b.py"}]
    paths = [
        send(client, f"edit {n}", tools=[EDIT], tool_choice={"type": "any"})
        .content[0]
        .input["path"]
        for n in range(3)
    ]
    assert paths == ["a.py", "b.py", "b.py"]


def test_a_scripted_function_sees_the_request(client, fake):
    fake.tool_answers["edit_files"] = lambda body: {"path": body["messages"][-1]["content"]}
    reply = send(
        client, "src/app.py", tools=[EDIT], tool_choice={"type": "tool", "name": "edit_files"}
    )
    assert reply.content[0].input == {"path": "src/app.py"}


def test_a_script_that_gives_no_object_is_a_500_that_says_so(fake):
    fake.tool_answers["edit_files"] = ["not an object"]  # type: ignore[list-item]
    client = anthropic.Anthropic(api_key="k", base_url=fake.url, max_retries=0)
    with pytest.raises(anthropic.InternalServerError, match="tool_answers"):
        send(client, "x", tools=[EDIT], tool_choice={"type": "any"})


def test_auto_calls_a_scripted_tool_and_otherwise_answers_in_text(client, fake):
    assert send(client, "hi", tools=[PLAN, EDIT]).content[0].text == "Answer to: hi"
    fake.tool_answers["edit_files"] = {"path": "x"}
    reply = send(client, "hi", tools=[PLAN, EDIT], tool_choice={"type": "auto"})
    assert reply.content[0].name == "edit_files"


def test_any_calls_the_first_tool_unless_one_is_scripted(client, fake):
    assert send(client, "hi", tools=[PLAN, EDIT], tool_choice={"type": "any"}).content[0].name == (
        "make_plan"
    )
    fake.tool_answers["edit_files"] = {"path": "x"}
    assert send(client, "hi", tools=[PLAN, EDIT], tool_choice={"type": "any"}).content[0].name == (
        "edit_files"
    )


def test_none_answers_in_text_even_with_a_script(client, fake):
    fake.tool_answers["make_plan"] = {"goal": "x"}
    reply = send(client, "hi", tools=[PLAN], tool_choice={"type": "none"})
    assert reply.content[0].type == "text" and reply.stop_reason == "end_turn"


def test_tokens_count_the_words_of_the_input_json(client, fake):
    fake.tool_answers["edit_files"] = {"path": "one two three"}
    reply = send(client, "hi", tools=[EDIT], tool_choice={"type": "any"})
    assert reply.usage.output_tokens == len(json.dumps({"path": "one two three"}).split())
    assert reply.usage.input_tokens == 1 + len(json.dumps([EDIT]).split())


def test_a_streamed_tool_call_sends_its_input_as_json_pieces(client, fake):
    fake.tool_answers["make_plan"] = {"goal": "ship it in time", "steps": ["a", "b", "c"]}
    params = {"tools": [PLAN], "tool_choice": FORCE_PLAN, "max_tokens": 100}
    messages = [{"role": "user", "content": "plan"}]
    with client.messages.create(model=MODEL, messages=messages, stream=True, **params) as events:
        seen = list(events)
    start = next(e for e in seen if e.type == "content_block_start")
    assert start.content_block.type == "tool_use" and start.content_block.input == {}
    pieces = [e.delta.partial_json for e in seen if e.type == "content_block_delta"]
    deltas = [e.delta.type for e in seen if e.type == "content_block_delta"]
    assert len(pieces) > 1 and set(deltas) == {"input_json_delta"}
    assert json.loads("".join(pieces)) == fake.tool_answers["make_plan"]
    assert next(e for e in seen if e.type == "message_delta").delta.stop_reason == "tool_use"
    with client.messages.stream(model=MODEL, messages=messages, **params) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == fake.tool_answers["make_plan"]


# -- faults on tool answers ----------------------------------------------------------------


def test_an_input_longer_than_max_tokens_is_cut(client, fake):
    fake.tool_answers["edit_files"] = {"path": "a b c d e f g h"}
    reply = send(client, "x", tools=[EDIT], tool_choice={"type": "any"}, max_tokens=3)
    assert reply.stop_reason == "max_tokens" and reply.content[0].input == {}
    with client.messages.stream(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        tools=[EDIT],
        tool_choice={"type": "any"},
        max_tokens=3,
    ) as stream:
        pieces = [e.delta.partial_json for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "".join(pieces) == '{"path": "a b'
    assert final.stop_reason == "max_tokens"


@pytest.mark.parametrize("kind", ["max_tokens", "refusal"])
def test_a_stop_fault_cuts_the_input(client, fake, kind):
    fake.fault_next(kind, after_deltas=1)
    reply = send(client, "plan it", tools=[PLAN], tool_choice=FORCE_PLAN)
    assert reply.stop_reason == kind and reply.content[0].input == {}


def test_an_overloaded_tool_call_is_retried_and_keeps_its_scripted_input(client, fake):
    fake.tool_answers["edit_files"] = [{"path": "first"}, {"path": "second"}]
    fake.fault_next("529", count=2)
    reply = send(client, "x", tools=[EDIT], tool_choice={"type": "any"})
    assert reply.content[0].input == {"path": "first"}
    assert [c.status for c in fake.calls] == [529, 529, 200]


@pytest.mark.parametrize("kind", ["error_event", "cut"])
def test_a_broken_tool_stream_does_not_use_up_its_scripted_input(client, fake, kind):
    fake.tool_answers["edit_files"] = [{"path": "first"}, {"path": "second"}]
    fake.fault_next(kind, after_deltas=1)
    messages = [{"role": "user", "content": "x"}]
    broken = (anthropic.APIStatusError, httpx2.TransportError)  # the error event; the cut
    with (
        pytest.raises(broken),
        client.messages.stream(
            model=MODEL, messages=messages, tools=[EDIT], tool_choice={"type": "any"}, max_tokens=50
        ) as stream,
    ):
        stream.get_final_message()
    reply = send(client, "x", tools=[EDIT], tool_choice={"type": "any"})
    assert reply.content[0].input == {"path": "first"}
    assert fake.tool_inputs("edit_files") == [{"path": "first"}]
