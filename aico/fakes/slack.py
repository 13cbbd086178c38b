"""A fake Slack Web API server.

The real ``slack_sdk.WebClient`` (and Bolt, ``WebhookClient``, ``files_upload_v2``...) talk to
:class:`FakeSlack` over real HTTP on 127.0.0.1. Nothing in slack_sdk is mocked.

Routes served:

* ``POST|GET /api/<method>``   - the Web API (form or JSON bodies, bearer or ``token`` param)
* ``POST /upload/<file_id>``   - upload URLs handed out by ``files.getUploadURLExternal``
* ``POST /response/<hook_id>`` - ``response_url``s made by :meth:`FakeSlack.new_response_url`
* ``GET /files-pri/<team>-<file_id>/[download/]<name>`` - ``url_private(_download)`` of files:
  the content for the bot token only, else a 302 to the sign-in page ``GET /?redir=...`` (HTML)

Where the fake is stricter than a plain echo server, it follows Slack; each rule names its source:
message metadata only on request, the blocks' total text, threads rooted at their parent, files
shared some time after files.completeUploadExternal, rate limits (when turned on), response_urls
that expire, ``views.publish``'s rules for a Home (:func:`view_problem`), the app's own posts and
deletions sent back to it as ``message`` events
(:attr:`FakeSlack.on_event`). Time for those rules is the fake's own clock
(:meth:`FakeSlack.now`), which a test moves on with :meth:`FakeSlack.advance` instead of waiting.

Slack's agent platform (see the constants below for each figure's source):

* Streams: ``chat.startStream`` (channel and thread_ts required: a stream is a reply; in a
  channel, not a DM, recipient_team_id and recipient_user_id too, else
  missing_recipient_team_id / missing_recipient_user_id), ``chat.appendStream`` (markdown_text
  or markdown_text chunks, as slack_sdk's ``chat_stream`` helper sends them; none: no_text) and
  ``chat.stopStream`` (optional text, ``blocks``, ``metadata`` kept like a post's, and
  ``session_status``, default active, applied to the thread's session). The message is in the
  thread from the start, its text the markdown so far and ``"streaming": true`` (the fake's
  marker) while open; then a plain message. A call naming no message: message_not_found;
  someone else's: message_not_owned_by_app; a message with no open stream:
  message_not_in_streaming_state -- also once Slack ended it: ``stream_max_age`` seconds after
  the start (default 300), or, with ``stream_overflow="end"``, an append past
  ``stream_max_chars`` (default 12,000; by default such an append is msg_too_long and the stream
  stays open, as measured on Slack). markdown_text over 12,000 characters: msg_too_long; a bad
  chunk: invalid_chunks. chat.update refuses a message still streaming (cant_update_message)
  and finishes one Slack ended. Tier 2 for start and stop, Tier 4 for append (when rate
  limits are on). ``streaming_enabled=False``: all three answer :attr:`FakeSlack.streaming_error`
  (unknown_method). Appends and stops reach ``on_change`` as ``streamed``; the start is
  ``posted`` and comes back as the app's own ``message`` event. :meth:`FakeSlack.streams`.
* Agent sessions: ``agents.sessions.setStatus`` (active, processing, suspended, closed; else
  invalid_status; thread_ts_required; a reply's ts: invalid_thread_ts; not in the channel:
  not_authorized; title up to 200 characters, kept from the creating call) and
  ``agents.sessions.rename``; each thread's session and status history in
  :meth:`FakeSlack.session`. ``sessions_enabled=False``: feature_disabled.
  ``assistant.threads.setStatus`` is unchanged. :meth:`FakeSlack.press_stop` is the native stop
  button: only while processing and when the app subscribes ``agent_session_stopped`` (in
  :attr:`FakeSlack.bot_events`); it stops the thread's streams (appends: stopped_by_user;
  stopStream still works) and sends ``agent_session_stopped``; the status stays processing.
* Events to the app: :meth:`FakeSlack.user_posts` (a person's message: ``message`` where the
  app hears that channel kind, plus ``app_mention`` when it mentions the app outside DMs; with
  ``files`` a ``file_share``), :meth:`FakeSlack.open_home` (``app_home_opened``, tab messages
  or home), :meth:`FakeSlack.press_stop`; each an ``event_callback`` with its own event_id,
  given to ``on_event`` and returned so an HTTP-mode test can post it with
  :class:`~aico.fakes.signing.SlackSender` (``event(body, retry=n)`` adds Slack's retry headers).
  :meth:`FakeSlack.feedback_click` builds the block_actions payload of a feedback button.
* Blocks: ``context_actions`` (1 to 5 ``feedback_buttons`` / ``icon_button`` elements, buttons
  with plain_text of at most 75 characters and a value of at most 2,000), ``task_card`` and
  ``plan`` are checked; a malformed one is invalid_blocks.
* Files from users: :meth:`FakeSlack.add_file`; ``files.info`` answers it; a scope in
  :attr:`FakeSlack.missing_scopes` (files:read) makes files.info missing_scope and downloads
  fail as without a token.
* Connections: kept alive (HTTP/1.1) like a real server's, and closed like one: without a word
  after ``idle_timeout`` seconds waiting for a request (default :data:`IDLE_TIMEOUT`), with
  ``Connection: close`` on the last answer of ``max_requests`` (off by default); counted in
  :attr:`FakeSlack.connections` and :attr:`FakeSlack.idle_closes`. ``tls`` serves https.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import mimetypes
import secrets
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote

from aico.fakes import signing

MAX_TEXT = 40_000
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3_000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2_000
MAX_HEADER_TEXT = 150
# All the text in a message's blocks together. Slack documents 12,000 characters as the
# cumulative limit of markdown blocks in one payload (docs.slack.dev, Block Kit, markdown block),
# and a Slack engineer gave the same figure for all blocks, "with a buffer for block containers"
# (github.com/slackapi/bolt-js/issues/2509: msg_blocks_too_long measured at ~13,200 characters;
# bolt-js#2867: rejected at 11,341 counted characters). The fake counts every "text" string in
# the blocks and answers msg_blocks_too_long above 12,000, the documented figure.
MAX_BLOCKS_TEXT = 12_000
# "respond to a user's command up to 5 times within 30 minutes" (Slack's slash command docs,
# "Delayed responses and multiple responses"). Slack does not document what an expired hook
# answers; the fake answers 404 expired_url, the shape of its 404 used_url.
RESPONSE_URL_USES = 5
RESPONSE_URL_TTL = 30 * 60
# files.completeUploadExternal "asynchronously completes the sharing of uploaded files ...
# the API response does not yet have complete shares" (a Slack SDK maintainer in
# github.com/slackapi/bolt-js/issues/2115; see also node-slack-sdk#2260: a message posted right
# after the upload can land before the file). Seconds before the file's message shows.
FILE_SHARE_DELAY = 1.0
# Rate limits, when turned on (docs.slack.dev/apis/web-api/rate-limits): chat.postMessage "generally
# allows posting one message per second per channel" with "short bursts >1 allowed" (how many is
# not documented: reports see tens get through, the fake allows 5); Tier 3 methods "50+ per
# minute", a token bucket of 50 that refills at 50 a minute. (requests a second, burst, per channel)
POST_RATE = (1.0, 5, True)
TIER_3 = (50 / 60, 50, False)
# views.publish is in Tier 4, "100+ per minute" (its reference page on docs.slack.dev).
TIER_4 = (100 / 60, 100, False)
# Tier 2, "20+ per minute": chat.startStream and chat.stopStream (their reference pages, and the
# tables of Slack's SDKs); chat.appendStream is Tier 4. agents.sessions.setStatus is Tier 3 (the
# table of slack-morphism, a Slack client that keeps one per method).
TIER_2 = (20 / 60, 20, False)
RATE_LIMITS: dict[str, tuple[float, int, bool]] = {
    "chat.postMessage": POST_RATE,
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "conversations.history": TIER_3,
    "conversations.replies": TIER_3,
    "views.publish": TIER_4,
    "chat.startStream": TIER_2,
    "chat.appendStream": TIER_4,
    "chat.stopStream": TIER_2,
    "agents.sessions.setStatus": TIER_3,
    "agents.sessions.rename": TIER_3,
}
JSON_PARAMS = ("blocks", "attachments", "files", "metadata", "view")
TS_BASE_US = 1_700_000_000 * 1_000_000
TS_STEP_US = 100

# Which message events the app gets, by the first letter of the channel ID: (channel_type, the
# bot event it needs). An app receives the messages of a channel it is in when it subscribes to
# that kind (docs.slack.dev, message.channels / message.groups / message.im: "A message was
# posted to a channel"...), its own included: Slack delivers them and Bolt drops them
# (github.com/slackapi/bolt-python/issues/307). Subscribed like manifest.yml by default.
CHANNEL_TYPES = {
    "C": ("channel", "message.channels"),
    "G": ("group", "message.groups"),
    "D": ("im", "message.im"),
}
BOT_EVENTS = frozenset({"message.channels", "message.groups", "message.im"})
# Every bot event the app subscribes to by default: manifest.yml's (message kinds above, plus
# these). agent_session_stopped is not among them until the manifest subscribes it: without it
# Slack shows no stop button (docs.slack.dev, agent_session_stopped: "the user sees a
# non-interactive loading indicator instead").
SUBSCRIBED_EVENTS = BOT_EVENTS | {"app_mention", "app_home_opened"}

# ---- Slack's agent platform: streams (chat.startStream / appendStream / stopStream).
# markdown_text: "Limit this field to 12,000 characters" (each method's reference page).
MAX_MARKDOWN_TEXT = 12_000
# What one streamed message may hold in all: Slack documents no cumulative limit, but the live
# API rejects an appendStream past about 12,000 characters with msg_too_long, deterministically
# (github.com/CopilotKit/CopilotKit issues/6063 and pull 6064: 11,977 of 15,668 characters
# posted). The fake holds 12,000.
STREAM_MAX_CHARS = 12_000
# Slack ends a stream by itself about five minutes after chat.startStream, appends or not
# (github.com/slackapi/node-slack-sdk/issues/2702: "automatically closed after approximately 5
# minutes, even if we continue sending updates"; python-slack-sdk issue 1859 and pull 1880: both
# appendStream and stopStream then answer message_not_in_streaming_state, and chat.update is the
# way to finish the message). The fake counts from the start, the stricter reading (some
# reports say idle time).
STREAM_MAX_AGE = 300.0
# A workspace without the feature: every stream method's documented errors include
# unknown_method, "This method is currently not available" -- what Slack answers for a method a
# workspace does not offer. (The fake's choice; Slack documents no feature flag error here.)
STREAMING_DISABLED_ERROR = "unknown_method"
CHUNK_TYPES = frozenset({"markdown_text", "task_update", "plan_update", "blocks"})
TASK_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})

# ---- agent sessions (docs.slack.dev, agents.sessions.setStatus and "Agent sessions"):
# "Must be one of: active, processing, suspended, closed" (error invalid_status); a title of at
# most 200 characters, only used when the session is created; feature_disabled: "The agent tasks
# feature is not enabled for this workspace".
SESSION_STATUSES = ("active", "processing", "suspended", "closed")
MAX_SESSION_TITLE = 200
SESSIONS_DISABLED_ERROR = "feature_disabled"
# The fields of a stored message that its message event carries. A bot user's chat.postMessage
# comes back with no subtype, with both `user` (the bot user) and `bot_id`, plus `bot_profile`
# (github.com/HubSpot/slack-client/pull/84 shows one such event). Slack does not document
# message metadata in message events (it has message_metadata_posted for that): left out.
EVENT_FIELDS = (
    "type",
    "subtype",
    "user",
    "bot_id",
    "app_id",
    "text",
    "blocks",
    "attachments",
    "ts",
    "thread_ts",
    "parent_user_id",
    "team",
)
APP_EVENT = "app_event"  # an Events API event for the app: goes to on_event, not on_change

# views.publish (docs.slack.dev: the method's reference and "Home tab views"): a `home` view of at
# most 100 blocks, private_metadata up to 3,000 characters, callback_id up to 255; a view over
# 250 kb is view_too_large; a `home` view of an app whose Home tab is off is not_enabled. A
# malformed argument is invalid_arguments with the reason in response_metadata.messages, in the
# form Slack gives it ("[ERROR] no more than 100 items allowed [json-pointer:/view/blocks]",
# quoted in github.com/grafana/oncall pull 210; "invalid `user_id`" in the method's docs).
# Buttons: text up to 75 characters, value up to 2,000, 25 elements an actions block (Block Kit
# reference).
MAX_VIEW_BLOCKS = 100
MAX_VIEW_BYTES = 250_000
MAX_PRIVATE_METADATA = 3_000
MAX_CALLBACK_ID = 255
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2_000
MAX_CONTEXT_ACTIONS = 5

JSON_CT = "application/json; charset=utf-8"
TEXT_CT = "text/plain; charset=utf-8"
HTML_CT = "text/html; charset=utf-8"
OCTET_CT = "application/octet-stream"
SIGN_IN_PAGE = (
    '<!DOCTYPE html><html lang="en-US"><head><title>Sign in | Slack</title></head>'
    "<body><h1>Sign in to your workspace</h1></body></html>"
)
# Slack's filetype for common extensions (the file type reference: "text", "python", ...).
FILETYPES = {
    "txt": "text",
    "py": "python",
    "md": "markdown",
    "js": "javascript",
    "ts": "typescript",
    "sh": "shell",
    "yml": "yaml",
    "jpeg": "jpg",
}

# Kept-alive connections: a server closes one that stayed idle too long, saying nothing (an ELB
# load balancer after 60 s by default, "Edit attributes for your Application Load Balancer";
# Node's http server after 5 s until its version 24, server.keepAliveTimeout; Apache's
# KeepAliveTimeout is 5 s). The fake holds the short end: seconds a connection may wait for its
# next request, settable per fake (``idle_timeout``; 0 keeps them forever).
IDLE_TIMEOUT = 5.0

Event = tuple[str, str, dict]
HttpResult = tuple[int, bytes, dict[str, str]]
LOST: HttpResult = (0, b"", {})  # the call was carried out, then the connection dropped unanswered


@dataclass(frozen=True)
class Call:
    """One Web API request as the fake received it (header names are lower-cased)."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    at: float


@dataclass(frozen=True)
class ResponsePost:
    """One accepted POST to a response_url."""

    url: str
    payload: dict[str, Any]
    response_type: str
    replace_original: bool
    delete_original: bool
    channel: str | None
    at: float


@dataclass
class _Fault:
    remaining: int
    status: int
    retry_after: int | None
    error: str | None


@dataclass
class _Hold:
    method: str
    seconds: float
    when: Callable[[dict[str, Any]], bool]
    remaining: int


@dataclass
class _Hook:
    channel: str | None
    message_ts: str | None
    issued_at: float
    uses: int = 0


@dataclass
class _Share:
    """A completed upload whose message Slack has not shown yet."""

    due: float
    channel: str
    content: dict
    thread_ts: str | None
    file_ids: list[str]


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass(frozen=True)
class Stream:
    """One streamed message as the fake saw it: ``state`` is streaming, stopped (by
    chat.stopStream), expired (Slack ended it: older than ``stream_max_age``, or longer than
    ``stream_max_chars`` when ``stream_overflow`` is "end"), stopped_by_user (the stop button)
    or deleted; ``appends`` is the markdown text of each accepted call (startStream's first)."""

    channel: str
    ts: str
    thread_ts: str
    state: str
    text: str
    appends: tuple[str, ...]
    chunks: tuple[dict, ...]
    started_at: float
    ended_at: float | None


@dataclass
class _Stream:
    channel: str
    ts: str
    thread_ts: str
    started_at: float
    state: str = "streaming"
    appends: list[str] = field(default_factory=list)
    chunks: list[dict] = field(default_factory=list)
    ended_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.appends)

    def view(self) -> Stream:
        return Stream(
            self.channel,
            self.ts,
            self.thread_ts,
            self.state,
            self.text,
            tuple(self.appends),
            tuple(copy.deepcopy(self.chunks)),
            self.started_at,
            self.ended_at,
        )


@dataclass
class _Session:
    """An agent session: one per (channel, thread root)."""

    channel: str
    thread_ts: str
    status: str
    title: str
    initiator_user_id: str | None
    history: list[tuple[str, float]] = field(default_factory=list)

    def view(self) -> dict:
        return {
            "channel": self.channel,
            "thread_ts": self.thread_ts,
            "status": self.status,
            "title": self.title,
            "initiator_user_id": self.initiator_user_id,
            "history": [status for status, _ in self.history],
        }


class ApiError(Exception):
    """Raised inside a method handler to answer ``{"ok": false, "error": ...}`` (with
    ``response_metadata.messages`` when there are ``messages``)."""

    def __init__(self, error: str, *messages: str):
        super().__init__(error)
        self.error = error
        self.messages = list(messages)


# --------------------------------------------------------------------------- pure helpers


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _json(status: int, data: dict, headers: dict[str, str] | None = None) -> HttpResult:
    body = json.dumps(data, separators=(",", ":")).encode()
    return status, body, {"Content-Type": JSON_CT, **(headers or {})}


def _text(status: int, text: str) -> HttpResult:
    return status, text.encode(), {"Content-Type": TEXT_CT}


def _decode_json_params(params: dict[str, Any]) -> dict[str, Any]:
    for key in JSON_PARAMS:
        value = params.get(key)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                params[key] = json.loads(value)
    return params


def decode_params(query: str, content_type: str, body: bytes) -> dict[str, Any]:
    """Query string + form or JSON body -> one flat dict (JSON-in-form fields decoded)."""
    params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if body and "json" in content_type:
        loaded = json.loads(body)
        params.update(loaded if isinstance(loaded, dict) else {})
    elif body:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        params.update({k: v[-1] for k, v in form.items()})
    return _decode_json_params(params)


def bearer_token(headers: dict[str, str], params: dict[str, Any]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return params.get("token") or None


def _schema_error(pointer: str, what: str) -> str:
    return f"[ERROR] {what} [json-pointer:{pointer}]"


def view_problem(view: dict) -> str | None:
    """What views.publish says is wrong with a ``home`` view's content (None if nothing):
    Slack's message for the first rule broken, with its JSON pointer."""
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        return _schema_error("/view/blocks", "must be an array of blocks")
    if len(blocks) > MAX_VIEW_BLOCKS:
        return _schema_error("/view/blocks", f"no more than {MAX_VIEW_BLOCKS} items allowed")
    if len(str(view.get("private_metadata") or "")) > MAX_PRIVATE_METADATA:
        return _schema_error("/view/private_metadata", "must be less than 3001 characters")
    if len(str(view.get("callback_id") or "")) > MAX_CALLBACK_ID:
        return _schema_error("/view/callback_id", "must be less than 256 characters")
    for i, block in enumerate(blocks):
        if problem := _view_block_problem(block):
            return _schema_error(f"/view/blocks/{i}{problem[0]}", problem[1])
    return None


def _view_block_problem(block: Any) -> tuple[str, str] | None:
    """(pointer below the block, message) for a block a view may not hold."""
    if isinstance(block, dict) and _text_len(block.get("text")) > MAX_SECTION_TEXT:
        return "/text/text", f"must be less than {MAX_SECTION_TEXT + 1} characters"
    if isinstance(block, dict) and block.get("type") == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= MAX_ACTIONS_ELEMENTS:
            return "/elements", f"must hold 1 to {MAX_ACTIONS_ELEMENTS} elements"
        for j, element in enumerate(elements):
            if problem := _button_problem(element):
                return f"/elements/{j}{problem[0]}", problem[1]
    accessory = block.get("accessory") if isinstance(block, dict) else None
    if problem := _button_problem(accessory):
        return f"/accessory{problem[0]}", problem[1]
    if _block_invalid(block):
        return "", "invalid block"
    return None


def _button_problem(element: Any) -> tuple[str, str] | None:
    if not isinstance(element, dict) or element.get("type") != "button":
        return None
    if _text_len(element.get("text")) > MAX_BUTTON_TEXT:
        return "/text/text", f"must be less than {MAX_BUTTON_TEXT + 1} characters"
    if len(str(element.get("value") or "")) > MAX_BUTTON_VALUE:
        return "/value", f"must be less than {MAX_BUTTON_VALUE + 1} characters"
    return None


def _text_len(obj: Any) -> int:
    return len(str(obj.get("text", ""))) if isinstance(obj, dict) else 0


def _section_invalid(block: dict) -> bool:
    text, fields = block.get("text"), block.get("fields") or []
    if text is None and not fields:
        return True
    too_many = len(fields) > MAX_SECTION_FIELDS
    return (
        too_many
        or _text_len(text) > MAX_SECTION_TEXT
        or any(_text_len(f) > MAX_FIELD_TEXT for f in fields)
    )


def _header_invalid(block: dict) -> bool:
    text = block.get("text")
    return not isinstance(text, dict) or _text_len(text) > MAX_HEADER_TEXT


def _plain_text_invalid(obj: Any, limit: int) -> bool:
    return (
        not isinstance(obj, dict)
        or obj.get("type") != "plain_text"
        or not isinstance(obj.get("text"), str)
        or not 0 < len(obj["text"]) <= limit
    )


def _feedback_button_invalid(button: Any) -> bool:
    """A positive_button / negative_button (Block Kit reference, feedback buttons element: a
    plain_text ``text`` of at most 75 characters and a ``value`` of at most 2,000, both
    required)."""
    if not isinstance(button, dict) or _plain_text_invalid(button.get("text"), MAX_BUTTON_TEXT):
        return True
    value = button.get("value")
    return not isinstance(value, str) or not 0 < len(value) <= MAX_BUTTON_VALUE


def _context_action_invalid(element: Any) -> bool:
    if not isinstance(element, dict):
        return True
    if element.get("type") == "feedback_buttons":
        return any(
            _feedback_button_invalid(element.get(key))
            for key in ("positive_button", "negative_button")
        )
    if element.get("type") == "icon_button":
        return not element.get("icon") or _plain_text_invalid(element.get("text"), MAX_BUTTON_TEXT)
    return True


def _context_actions_invalid(block: dict) -> bool:
    """context_actions (Block Kit reference): 1 to 5 feedback_buttons or icon_button elements."""
    elements = block.get("elements")
    if not isinstance(elements, list) or not 0 < len(elements) <= MAX_CONTEXT_ACTIONS:
        return True
    return any(_context_action_invalid(e) for e in elements)


def _task_card_invalid(block: dict) -> bool:
    """task_card (Block Kit reference): task_id and title required, status one of pending,
    in_progress, complete, error."""
    return (
        not block.get("task_id")
        or not isinstance(block.get("title"), str)
        or block.get("status") not in TASK_STATUSES
    )


def _plan_invalid(block: dict) -> bool:
    """plan (Block Kit reference): a title and task_card tasks."""
    tasks = block.get("tasks") or []
    if not isinstance(block.get("title"), str) or not isinstance(tasks, list):
        return True
    return any(not isinstance(t, dict) or _task_card_invalid(t) for t in tasks)


_BLOCK_CHECKS: dict[str, Callable[[dict], bool]] = {
    "section": _section_invalid,
    "header": _header_invalid,
    "context_actions": _context_actions_invalid,
    "task_card": _task_card_invalid,
    "plan": _plan_invalid,
}


def _block_invalid(block: Any) -> bool:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return True
    check = _BLOCK_CHECKS.get(block["type"])
    return bool(check and check(block))


def blocks_error(blocks: Any) -> str | None:
    """Slack's verdict on a ``blocks`` value: None, invalid_blocks_format or invalid_blocks."""
    if not isinstance(blocks, list):
        return "invalid_blocks_format"
    if len(blocks) > MAX_BLOCKS or any(_block_invalid(b) for b in blocks):
        return "invalid_blocks"
    return None


def blocks_text_length(obj: Any) -> int:
    """Characters of every ``text`` string in blocks (section, fields, context, header, buttons,
    rich_text, markdown...): what counts towards :data:`MAX_BLOCKS_TEXT`."""
    if isinstance(obj, list):
        return sum(blocks_text_length(item) for item in obj)
    if not isinstance(obj, dict):
        return 0
    own = obj.get("text")
    total = len(own) if isinstance(own, str) else 0
    return total + sum(blocks_text_length(v) for v in obj.values() if isinstance(v, dict | list))


def content_error(params: dict[str, Any]) -> str | None:
    """The error chat.postMessage would give for this text/blocks/attachments, if any."""
    text, blocks = params.get("text"), params.get("blocks")
    if blocks is not None and (error := blocks_error(blocks)):
        return error
    if blocks is not None and blocks_text_length(blocks) > MAX_BLOCKS_TEXT:
        return "msg_blocks_too_long"
    if text is not None and len(str(text)) > MAX_TEXT:
        return "msg_too_long"
    if not text and not blocks and not params.get("attachments"):
        return "no_text"
    return None


def _content(params: dict[str, Any]) -> dict[str, Any]:
    content = {"text": str(params.get("text") or ""), "blocks": params.get("blocks") or []}
    for key in ("attachments", "metadata"):
        if params.get(key):
            content[key] = params[key]
    return content


def _public(msg: dict, metadata: bool = True) -> dict:
    hidden = ("history",) if metadata else ("history", "metadata")
    return {k: copy.deepcopy(v) for k, v in msg.items() if k not in hidden}


def _multipart_file(content_type: str, body: bytes) -> bytes:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    parts = BytesParser().parsebytes(head + body).get_payload()
    for part in parts if isinstance(parts, list) else []:
        if part.get_filename() is not None:
            return part.get_payload(decode=True) or b""
    return body


def _ts(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _describe(call: Call) -> str:
    keys = ("channel", "channel_id", "ts", "thread_ts", "text")
    shown = ", ".join(f"{k}={str(call.params[k])[:60]!r}" for k in keys if k in call.params)
    return f"{call.method}({shown})"


def _chunk_problem(chunk: Any) -> bool:
    """A chunk Slack would refuse (invalid_chunks): of a known type with its required fields
    (docs.slack.dev, chat.appendStream, "Using the chunks parameter")."""
    if not isinstance(chunk, dict) or chunk.get("type") not in CHUNK_TYPES:
        return True
    kind = chunk["type"]
    if kind == "markdown_text":
        return not isinstance(chunk.get("text"), str)
    if kind == "task_update":
        return (
            not chunk.get("id")
            or not chunk.get("title")
            or chunk.get("status") not in TASK_STATUSES
        )
    if kind == "plan_update":
        return not isinstance(chunk.get("title"), str)
    return blocks_error(chunk.get("blocks")) is not None


def stream_text(params: dict[str, Any]) -> tuple[str, list[dict]]:
    """The markdown a stream call adds (its ``markdown_text``, then the text of its
    markdown_text chunks, as slack_sdk's chat_stream helper sends it) and its chunks; raises
    invalid_chunks or msg_too_long."""
    chunks = params.get("chunks")
    if chunks is not None and (not isinstance(chunks, list) or any(map(_chunk_problem, chunks))):
        raise ApiError("invalid_chunks")
    text = str(params.get("markdown_text") or "")
    if len(text) > MAX_MARKDOWN_TEXT:
        raise ApiError("msg_too_long")
    for chunk in chunks or []:
        if chunk["type"] == "markdown_text":
            if len(chunk["text"]) > MAX_MARKDOWN_TEXT:
                raise ApiError("msg_too_long")
            text += chunk["text"]
    return text, list(chunks or [])


def _missing(field_name: str) -> ApiError:
    return ApiError("invalid_arguments", f"[ERROR] missing required field: {field_name}")


def _metadata_error(metadata: Any) -> str | None:
    """chat.stopStream's metadata: "JSON object with event_type and event_payload fields"."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("event_type"), str):
        return "invalid_metadata_format"
    if not isinstance(metadata.get("event_payload"), dict):
        return "invalid_metadata_format"
    return None


# --------------------------------------------------------------------------- message store


class _Workspace:
    """Channels, messages and threads. Not locked: FakeSlack holds its lock around every use."""

    def __init__(self, team_id: str):
        self.team_id = team_id
        self.channels: dict[str, dict[str, dict]] = {}
        self.threads: dict[tuple[str, str], list[str]] = {}
        self._last_us = TS_BASE_US

    def next_ts(self) -> str:
        self._last_us += TS_STEP_US
        return _ts(self._last_us)

    def _claim_ts(self, ts: str | None) -> str:
        if ts is None:
            return self.next_ts()
        seconds, _, micros = ts.partition(".")
        self._last_us = max(self._last_us, int(seconds) * 1_000_000 + int(micros or 0))
        return ts

    def get(self, channel: str, ts: str | None) -> dict | None:
        return self.channels.get(channel, {}).get(ts or "")

    def post(self, channel: str, content: dict, user: str, **opts: Any) -> dict:
        """opts: thread_ts, ts, broadcast, extra (dict merged into the message)."""
        ts = self._claim_ts(opts.get("ts"))
        msg = {"type": "message", "ts": ts, "user": user, "team": self.team_id, **content}
        msg.update(opts.get("extra") or {})
        msg["history"] = []
        thread_ts = self.root_of(channel, opts.get("thread_ts"))
        if thread_ts and thread_ts != ts:
            self._attach_reply(channel, thread_ts, msg, opts.get("broadcast", False))
        self.channels.setdefault(channel, {})[ts] = msg
        return msg

    def root_of(self, channel: str, thread_ts: str | None) -> str | None:
        """The thread a ``thread_ts`` puts a new message in. Slack's docs say "Avoid using a reply's
        ts value; use its parent instead" (chat.postMessage, thread_ts); Slack then threads the
        message under the reply's parent: there are no threads of replies. A ts that names no
        message is taken as it is: Slack answers ok and the message shows in no channel view
        (github.com/slackapi/python-slack-sdk/issues/840), as the fake does."""
        named = self.get(channel, thread_ts)
        if named is not None and named.get("thread_ts") not in (None, named["ts"]):
            return str(named["thread_ts"])
        return thread_ts

    def is_reply(self, channel: str, ts: str | None) -> bool:
        named = self.get(channel, ts)
        return named is not None and named.get("thread_ts") not in (None, named["ts"])

    def _attach_reply(self, channel: str, thread_ts: str, msg: dict, broadcast: bool) -> None:
        msg["thread_ts"] = thread_ts
        if broadcast:
            msg["subtype"] = "thread_broadcast"
        self.threads.setdefault((channel, thread_ts), []).append(msg["ts"])
        parent = self.get(channel, thread_ts)
        if parent is None:
            return
        msg["parent_user_id"] = parent.get("user")
        parent["thread_ts"] = thread_ts
        parent["reply_count"] = parent.get("reply_count", 0) + 1
        users = parent.setdefault("reply_users", [])
        if msg["user"] not in users:
            users.append(msg["user"])
        parent["reply_users_count"] = len(users)
        parent["latest_reply"] = msg["ts"]

    def update(self, msg: dict, changes: dict, editor: str) -> dict:
        previous = {k: copy.deepcopy(msg.get(k)) for k in changes}
        msg["history"].append(previous)
        msg.update(changes)
        msg["edited"] = {"user": editor, "ts": self.next_ts()}
        return msg

    def delete(self, channel: str, ts: str) -> None:
        msg = self.channels.get(channel, {}).pop(ts)
        thread_ts = msg.get("thread_ts")
        replies = self.threads.get((channel, thread_ts or ""), [])
        if ts in replies:
            replies.remove(ts)
            parent = self.get(channel, thread_ts)
            if parent is not None:
                parent["reply_count"] = len(replies)

    def is_top_level(self, msg: dict) -> bool:
        thread_ts = msg.get("thread_ts")
        return thread_ts in (None, msg["ts"]) or msg.get("subtype") == "thread_broadcast"

    def top_level(self, channel: str) -> list[dict]:
        return [m for m in self.channels.get(channel, {}).values() if self.is_top_level(m)]

    def replies(self, channel: str, thread_ts: str) -> list[dict]:
        msgs = self.channels.get(channel, {})
        return [msgs[ts] for ts in self.threads.get((channel, thread_ts), []) if ts in msgs]

    def thread(self, channel: str, ts: str) -> list[dict]:
        """conversations.replies: the thread of the message ``ts`` (its root first), or nothing
        when the root is not there (Slack: thread_not_found) even if orphan replies are."""
        root = self.get(channel, ts)
        if root is not None and root.get("thread_ts") not in (None, ts):
            ts = root["thread_ts"]
            root = self.get(channel, ts)
        return [root, *self.replies(channel, ts)] if root else []


# --------------------------------------------------------------------------- HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    """One kept-alive connection, served like a load balancer would: it waits at most the fake's
    ``idle_timeout`` for the next request (then closes, saying nothing, as an idle connection is
    closed), and with ``max_requests`` set it answers the last request it takes on the
    connection with ``Connection: close`` and closes."""

    protocol_version = "HTTP/1.1"
    wbufsize = -1  # buffer headers + body into one send; flushed by handle_one_request
    timeout = 300  # once a request has begun: for the rest of it to arrive
    server: _Server

    def setup(self) -> None:
        if self.server.tls is not None:  # the handshake, in this connection's own thread
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.served = 0
        self.server.track(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.untrack(self.connection)
        if self.server.tls is not None:  # the server closes the plain socket it handed over
            with contextlib.suppress(OSError):
                self.connection.close()

    def handle_one_request(self) -> None:
        """Wait for the next request's first byte (or the client's close) for at most
        ``idle_timeout`` seconds, then read it with the handler's ``timeout``."""
        self.connection.settimeout(self.server.fake.idle_timeout or None)
        try:
            started = self.rfile.peek(1)
        except TimeoutError:
            self.close_connection = True
            with contextlib.suppress(OSError):  # the FIN goes out before the close is counted
                self.connection.shutdown(socket.SHUT_RDWR)
            self.server.closed_idle()
            return
        except OSError:
            started = b""
        if not started:
            self.close_connection = True
            return
        self.connection.settimeout(self.timeout)
        super().handle_one_request()

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload, extra = self.server.fake.handle_http(self.path, headers, body)
        if (status, payload, extra) == LOST:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response_only(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.served += 1
        if self.server.fake.max_requests and self.served >= self.server.fake.max_requests:
            self.send_header("Connection", "close")  # sets close_connection: closed after this
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        return b"".join(parts)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeSlack, tls: ssl.SSLContext | None):
        self.fake, self.tls = fake, tls
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self.opened = self.idle_closed = 0
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def track(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)
            self.opened += 1
        self.fake._connections_changed()

    def closed_idle(self) -> None:
        with self._conns_lock:
            self.idle_closed += 1
        self.fake._connections_changed()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
            return  # a client that refused our certificate or went away: nothing to tell
        super().handle_error(request, client_address)

    def untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------- the fake


class FakeSlack:
    """Slack Web API + upload URLs + response_urls on one local HTTP server.

    ``on_change`` callables get ``(kind, channel, message)`` outside the lock, kind being one
    of posted, updated, deleted, ephemeral, status.

    ``on_event`` callables get each Events API body (``{"type": "event_callback", ...}``) Slack
    would send the app: its own ``chat.postMessage`` posts as ``message`` events and their
    ``chat.delete`` as ``message_deleted`` ones, in channels whose kind is in ``bot_events``
    (see :data:`CHANNEL_TYPES`). :meth:`FakeSocketMode.attach` delivers them over the socket.

    ``rate_limits`` (or the attribute ``enforce_rate_limits``) turns on Slack's rate limits (see
    :data:`RATE_LIMITS`); ``file_share_delay`` is how long a completed upload takes to show in
    its channel (0: at once); ``clock`` is what :meth:`now` counts from (a test may pass a fixed
    one, ``lambda: 0.0``, so that only :meth:`advance` moves time).

    Connections are kept alive (HTTP/1.1) like a real server's: one that waits longer than
    ``idle_timeout`` seconds (real time, not the fake's clock) for its next request is closed
    without a word; with ``max_requests`` (0: no limit) a connection's last request is answered
    with ``Connection: close`` and the connection closed. Both are attributes a test may change
    at any time. :attr:`connections` counts the connections accepted, :attr:`idle_closes` those
    closed for idling. ``tls`` (a server-side ``ssl.SSLContext``) serves https instead.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_token: str | None = None,
        team_id: str = "T0AICO",
        bot_user_id: str = "U0AICOBOT",
        *,
        app_token: str | None = None,
        bot_id: str = "B0AICOBOT",
        app_id: str = "A0AICO",
        team_domain: str = "aico-test",
        rate_limits: bool = False,
        file_share_delay: float = FILE_SHARE_DELAY,
        home_tab_enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        streaming_enabled: bool = True,
        sessions_enabled: bool = True,
        stream_max_age: float = STREAM_MAX_AGE,
        stream_max_chars: int = STREAM_MAX_CHARS,
        stream_overflow: str = "reject",
        bot_events: frozenset[str] | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        max_requests: int = 0,
        tls: ssl.SSLContext | None = None,
    ):
        self.host, self.port = host, port
        self.idle_timeout, self.max_requests, self.tls = idle_timeout, max_requests, tls
        self.enforce_rate_limits = rate_limits
        self.file_share_delay = file_share_delay
        self.home_tab_enabled = home_tab_enabled
        self.streaming_enabled, self.sessions_enabled = streaming_enabled, sessions_enabled
        self.streaming_error, self.sessions_error = (
            STREAMING_DISABLED_ERROR,
            SESSIONS_DISABLED_ERROR,
        )
        self.stream_max_age, self.stream_max_chars = stream_max_age, stream_max_chars
        if stream_overflow not in ("reject", "end"):
            raise ValueError(f"stream_overflow is reject or end, not {stream_overflow!r}")
        self.stream_overflow = stream_overflow
        self.missing_scopes: set[str] = set()
        self._clock = clock
        self._advanced = 0.0
        self.bot_token, self.app_token = bot_token, app_token
        self.team_id, self.team_domain = team_id, team_domain
        self.bot_user_id, self.bot_id, self.app_id = bot_user_id, bot_id, app_id
        self.socket_mode_url: str | None = None
        self.latency = 0.0
        self.not_in_channel: set[str] = set()
        self.users: dict[str, dict] = {}
        self.on_change: list[Callable[[str, str, dict], None]] = []
        self.on_event: list[Callable[[dict], None]] = []
        self.bot_events: frozenset[str] = SUBSCRIBED_EVENTS if bot_events is None else bot_events
        self.errors: list[BaseException] = []
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._handlers = self._method_table()
        self._reset_state()

    def _reset_state(self) -> None:
        self._version = 0
        self._ws = _Workspace(self.team_id)
        self._calls: list[Call] = []
        self._faults: dict[str, _Fault] = {}
        self._holds: list[_Hold] = []
        self._hooks: dict[str, _Hook] = {}
        self._responses: list[ResponsePost] = []
        self._ephemerals: list[dict] = []
        self._files: dict[str, dict] = {}
        self._contents: dict[str, bytes] = {}
        self._statuses: list[dict] = []
        self._shares: list[_Share] = []
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        for timer in getattr(self, "_timers", []):
            timer.cancel()
        self._timers: list[threading.Timer] = []
        self._views: dict[str, dict] = {}  # user -> their published Home
        self._published: list[dict] = []  # every accepted views.publish, oldest first
        self._streams: dict[tuple[str, str], _Stream] = {}  # (channel, ts) -> stream
        self._sessions: dict[tuple[str, str], _Session] = {}  # (channel, thread root ts)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeSlack:
        self._server = _Server((self.host, self.port), self, self.tls)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeSlack:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        with self._lock:
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget all messages, calls, faults and hooks (keeps the server and settings)."""
        with self._cond:
            self._reset_state()
            self._cond.notify_all()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeSlack is not started")
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    # ------------------------------------------------------------------ connections

    @property
    def connections(self) -> int:
        """How many connections the fake has accepted since it started."""
        return self._server.opened if self._server else 0

    @property
    def idle_closes(self) -> int:
        """How many of them it closed because they idled past ``idle_timeout``."""
        return self._server.idle_closed if self._server else 0

    def _connections_changed(self) -> None:
        with self._cond:
            self._bump()

    # ------------------------------------------------------------------ the fake's clock

    def now(self) -> float:
        """The fake's time in seconds (its clock plus every :meth:`advance`): what response_url
        expiry, rate limits and file sharing are measured in."""
        return self._clock() + self._advanced

    def advance(self, seconds: float) -> None:
        """Move the fake's time forward: hooks expire, rate limit buckets refill and pending file
        shares land as if ``seconds`` had passed."""
        with self._cond:
            self._advanced += seconds
            self._bump()
        self._settle()

    def _settle(self) -> None:
        """Show the files whose sharing is due (before every view and Web API call)."""
        events: list[Event] = []
        with self._cond:
            if self._release_shares(events) | self._expire_streams(events):
                self._bump()
        self._fire(events)

    # ------------------------------------------------------------------ test-side API

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.method == method]

    def messages(self, channel: str) -> list[dict]:
        """The channel's top-level messages, oldest first, as stored (metadata and edit history
        included)."""
        self._settle()
        with self._lock:
            return copy.deepcopy(self._ws.top_level(channel))

    def replies(self, channel: str, thread_ts: str) -> list[dict]:
        """The replies under ``thread_ts`` (without its root), also when no root message exists."""
        self._settle()
        with self._lock:
            return copy.deepcopy(self._ws.replies(channel, thread_ts))

    def message(self, channel: str, ts: str) -> dict | None:
        self._settle()
        with self._lock:
            return copy.deepcopy(self._ws.get(channel, ts))

    @property
    def pending_shares(self) -> int:
        """Completed uploads whose message is not in its channel yet."""
        with self._lock:
            return len(self._shares)

    def home_view(self, user: str) -> dict | None:
        """The Home ``user`` sees now (the last view published for them), as Slack stores it."""
        with self._lock:
            return copy.deepcopy(self._views.get(user))

    def published_views(self, user: str | None = None) -> list[dict]:
        """Every view accepted by views.publish (for ``user``), oldest first, with its
        ``user_id``."""
        with self._lock:
            return copy.deepcopy([v for v in self._published if user in (None, v["user_id"])])

    def ephemerals(self, channel: str | None = None) -> list[dict]:
        with self._lock:
            found = [e for e in self._ephemerals if channel in (None, e["channel"])]
            return copy.deepcopy(found)

    @property
    def responses(self) -> list[ResponsePost]:
        with self._lock:
            return list(self._responses)

    def responses_for(self, url: str) -> list[ResponsePost]:
        with self._lock:
            return [r for r in self._responses if r.url == url]

    @property
    def assistant_statuses(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(self._statuses)

    def file(self, file_id: str) -> dict | None:
        with self._lock:
            return copy.deepcopy(self._files.get(file_id))

    def file_content(self, file_id: str) -> bytes | None:
        with self._lock:
            return self._contents.get(file_id)

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U0USER1",
        thread_ts: str | None = None,
        ts: str | None = None,
        **extra: Any,
    ) -> dict:
        """Put a message from someone else (a human by default) into the workspace."""
        with self._cond:
            content = {"text": text, "blocks": extra.pop("blocks", [])}
            opts = {"thread_ts": thread_ts, "ts": ts, "extra": extra}
            msg = self._ws.post(channel, content, user, **opts)
            self._bump()
            return copy.deepcopy(msg)

    # ---- the agent platform, test side

    def streams(self, channel: str | None = None) -> list[Stream]:
        """Every stream started (in ``channel``), oldest first, as it stands now."""
        self._settle()
        with self._lock:
            return [s.view() for s in self._streams.values() if channel in (None, s.channel)]

    def stream(self, channel: str, ts: str) -> Stream | None:
        self._settle()
        with self._lock:
            found = self._streams.get((channel, ts))
            return found.view() if found else None

    def session(self, channel: str, thread_ts: str) -> dict | None:
        """The agent session of a thread: status, title, initiator and its status ``history``."""
        with self._lock:
            found = self._sessions.get((channel, thread_ts))
            return found.view() if found else None

    def sessions(self) -> list[dict]:
        with self._lock:
            return [s.view() for s in self._sessions.values()]

    def user_posts(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U0USER1",
        thread_ts: str | None = None,
        files: list[dict] | None = None,
    ) -> list[dict]:
        """A person posts ``text`` (with ``files`` from :meth:`add_file`): the message is put in
        the workspace, and the Events API bodies Slack sends the app for it are returned and
        given to :attr:`on_event`: a ``message`` event where the app hears that kind of channel
        (:attr:`bot_events`), and an ``app_mention`` when the text mentions the app in a
        channel (never in a DM). Both for one message, as Slack does: the app must make one
        task of them (same channel and ts, different event_ids)."""
        extra: dict[str, Any] = {"files": copy.deepcopy(files)} if files else {}
        if files:
            extra |= {"subtype": "file_share", "upload": False}
        msg = self.add_message(channel, text, user=user, thread_ts=thread_ts, **extra)
        bodies = self._user_events(channel, msg)
        for body in bodies:
            self._deliver(body)
        return bodies

    def _user_events(self, channel: str, msg: dict) -> list[dict]:
        opts = {
            "user": msg["user"],
            "team": self.team_id,
            "thread_ts": msg.get("thread_ts"),
            "parent_user_id": msg.get("parent_user_id"),
            "files": msg.get("files"),
        }
        events = []
        channel_type = self._heard_in(channel)
        if channel_type is not None:
            events.append(
                signing.user_message_event(
                    channel, msg["text"], msg["ts"], channel_type=channel_type, **opts
                )
            )
        mentioned = f"<@{self.bot_user_id}>" in msg["text"] and channel[:1] != "D"
        if mentioned and "app_mention" in self.bot_events and channel not in self.not_in_channel:
            events.append(
                signing.user_message_event(
                    channel, msg["text"], msg["ts"], kind="app_mention", **opts
                )
            )
        return [self._event_body(event) for event in events]

    def _deliver(self, body: dict) -> None:
        for callback in list(self.on_event):
            try:
                callback(copy.deepcopy(body))
            except Exception as exc:
                self.errors.append(exc)

    def dm_channel(self, user: str) -> str:
        """The ID of the app's direct-message channel with ``user`` (its Messages tab)."""
        return f"D{user[1:]}"

    def open_home(self, user: str = "U0USER1", tab: str = "messages") -> dict | None:
        """``user`` opens the app's Home or Messages tab: the ``app_home_opened`` body Slack
        sends (given to :attr:`on_event` too), or None when the app is not subscribed."""
        if "app_home_opened" not in self.bot_events:
            return None
        event = signing.app_home_opened_event(user, self.dm_channel(user), tab)
        if tab == "home" and (view := self.home_view(user)) is not None:
            event["view"] = view
        body = self._event_body(event)
        self._deliver(body)
        return body

    def press_stop(self, channel: str, thread_ts: str, user: str = "U0USER1") -> dict:
        """``user`` presses the stop button of the thread's agent session: Slack stops the app's
        open streams there (appends then answer stopped_by_user) and sends
        ``agent_session_stopped`` (returned, and given to :attr:`on_event`). The session keeps
        its status: "The session status does not update automatically". Slack shows the button
        only while the session is processing and the app subscribes to the event: else there is
        nothing to press (ValueError)."""
        with self._cond:
            session = self._sessions.get((channel, thread_ts))
            if session is None or session.status != "processing":
                raise ValueError(f"no stop button: the session is {session and session.status}")
            if "agent_session_stopped" not in self.bot_events:
                raise ValueError(
                    "no stop button: the app is not subscribed to agent_session_stopped"
                )
            stopped = [
                s
                for s in self._streams.values()
                if (s.channel, s.thread_ts) == (channel, thread_ts) and s.state == "streaming"
            ]
            for stream in stopped:
                self._end_stream(stream, "stopped_by_user")
            self._bump()
        event = signing.agent_session_stopped_event(
            channel, thread_ts, user, [s.ts for s in stopped], self._ws_ts()
        )
        body = self._event_body(event)
        self._deliver(body)
        return body

    def _ws_ts(self) -> str:
        with self._lock:
            return self._ws.next_ts()

    def feedback_click(
        self, channel: str, ts: str, user: str = "U0USER1", positive: bool = True
    ) -> dict:
        """The block_actions payload of ``user`` clicking the feedback buttons of the message
        ``ts`` (send it with SlackSender.action or FakeSocketMode.send_interactive);
        ValueError when the message shows none."""
        msg = self.message(channel, ts)
        if msg is None:
            raise ValueError(f"no message {ts} in {channel}")
        public = _public(msg, metadata=False)
        return signing.feedback_action_payload(
            public,
            channel,
            user=user,
            positive=positive,
            team_id=self.team_id,
            api_app_id=self.app_id,
            response_url=self.new_response_url(channel, ts),
        )

    def add_file(
        self,
        channel: str,
        name: str,
        mimetype: str,
        content: bytes,
        user: str = "U0USER1",
    ) -> dict:
        """A file ``user`` uploads to ``channel``: the file object as Slack puts it in a
        message event's ``files`` (url_private and url_private_download serve ``content`` to
        the bot token only; files.info answers it). Post it with :meth:`user_posts`."""
        with self._cond:
            file_id = f"F0{next(self._ids):08d}"
            record = self._file_record(file_id, name, len(content), user)
            record["mimetype"] = mimetype
            record["channels" if channel[:1] == "C" else "groups"] = [channel]
            self._files[file_id] = record
            self._contents[file_id] = bytes(content)
            self._bump()
            return copy.deepcopy(record)

    def new_response_url(self, channel: str | None = None, message_ts: str | None = None) -> str:
        """A fresh response_url; ``message_ts`` is the message replace/delete_original act on."""
        hook_id = secrets.token_hex(8)
        with self._lock:
            self._hooks[hook_id] = _Hook(channel, message_ts, issued_at=self.now())
        return f"{self.base_url}/response/{hook_id}"

    def fail_next(
        self,
        method: str,
        count: int = 1,
        status: int = 429,
        retry_after: int | None = 1,
        error: str | None = None,
    ) -> None:
        """Make the next ``count`` calls to ``method`` ("*" = any method) fail."""
        with self._lock:
            self._faults[method] = _Fault(count, status, retry_after, error)

    def lose_answer_next(self, method: str, count: int = 1) -> None:
        """Carry out the next ``count`` calls to ``method``, then drop the connection without an
        answer: the caller cannot tell whether the call happened (it did)."""
        self.fail_next(method, count, status=0)

    def hold_answer_next(
        self,
        method: str,
        seconds: float,
        when: Callable[[dict[str, Any]], bool] = lambda params: True,
        count: int = 1,
    ) -> None:
        """Carry out the next ``count`` calls to ``method`` whose params satisfy ``when`` at
        once, and hold each one's answer for ``seconds``: the window in which a caller that
        made the call has not heard that it did (to be killed in, say)."""
        with self._lock:
            self._holds.append(_Hold(method, seconds, when, count))

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Re-check ``predicate()`` after every change; return its truthy value or time out."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = self._version
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(self._timeout_message(predicate, timeout, value))
            with self._cond:
                if self._version == seen:
                    self._cond.wait(remaining)

    def wait_for_calls(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        def enough() -> list[Call]:
            calls = self.calls_to(method)
            return calls if len(calls) >= count else []

        return self.wait_for(enough, timeout)

    def _timeout_message(self, predicate: Callable[[], Any], timeout: float, value: Any) -> str:
        name = getattr(predicate, "__qualname__", repr(predicate))
        recent = "\n  ".join(_describe(c) for c in self.calls[-10:]) or "(none)"
        return (
            f"FakeSlack.wait_for: {name} still {value!r} after {timeout}s; "
            f"last API calls:\n  {recent}"
        )

    # ------------------------------------------------------------------ HTTP entry point

    def handle_http(self, path: str, headers: dict[str, str], body: bytes) -> HttpResult:
        route, _, query = path.partition("?")
        try:
            return self._route(route, query, headers, body)
        except Exception as exc:
            self.errors.append(exc)
            return _json(500, {"ok": False, "error": f"fake_slack_crashed: {exc!r}"})

    def _route(self, route: str, query: str, headers: dict[str, str], body: bytes) -> HttpResult:
        prefix, _, rest = route.lstrip("/").partition("/")
        if prefix == "api":
            return self._api(rest, query, headers, body)
        if prefix == "upload":
            return self._upload(rest, headers, body)
        if prefix == "response":
            return self._hook_post(route, rest, body)
        if prefix == "files":
            return self._download(route, rest.partition("/")[0], headers)
        if prefix == "files-pri":
            return self._download(route, rest.partition("/")[0].rpartition("-")[2], headers)
        if prefix == "":
            return 200, SIGN_IN_PAGE.encode(), {"Content-Type": HTML_CT}
        return _text(404, "not_found")

    def _bump(self) -> None:
        self._version += 1
        self._cond.notify_all()

    def _fire(self, events: list[Event]) -> None:
        for kind, channel, msg in events:
            if kind == APP_EVENT:
                self._send_event(msg)
                continue
            for callback in list(self.on_change):
                try:
                    callback(kind, channel, msg)
                except Exception as exc:
                    self.errors.append(exc)

    # ------------------------------------------------------------------ Web API

    def _api(self, method: str, query: str, headers: dict[str, str], body: bytes) -> HttpResult:
        if self.latency:
            time.sleep(self.latency)
        params = decode_params(query, headers.get("content-type", ""), body)
        token = bearer_token(headers, params)
        events: list[Event] = []
        with self._cond:
            self._release_shares(events)
            self._expire_streams(events)
            self._calls.append(Call(method, params, headers, time.time()))
            fault = self._take_fault(method) or self._rate_limited(method, params)
            result = fault or self._dispatch(method, params, token, events)
            if fault == LOST:
                self._dispatch(method, params, token, events)
            held = 0.0 if fault else self._take_hold(method, params)
            self._bump()
        self._fire(events)
        if held:
            time.sleep(held)
        return result

    def _take_hold(self, method: str, params: dict[str, Any]) -> float:
        for hold in self._holds:
            if hold.method == method and hold.when(params):
                hold.remaining -= 1
                if hold.remaining <= 0:
                    self._holds.remove(hold)
                return hold.seconds
        return 0.0

    def _take_fault(self, method: str) -> HttpResult | None:
        key = method if method in self._faults else "*"
        fault = self._faults.get(key)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            del self._faults[key]
        if fault.status == 0:
            return LOST
        if fault.status == 429:
            retry = {"Retry-After": str(fault.retry_after or 0)}
            return _json(429, {"ok": False, "error": fault.error or "ratelimited"}, retry)
        return _json(fault.status, {"ok": False, "error": fault.error or "internal_error"})

    def _rate_limited(self, method: str, params: dict) -> HttpResult | None:
        """HTTP 429 ratelimited with Retry-After when ``method`` is over its limit (see
        :data:`RATE_LIMITS`); a refused call takes no token."""
        limit = RATE_LIMITS.get(method)
        if not self.enforce_rate_limits or limit is None:
            return None
        rate, burst, per_channel = limit
        key = (method, str(params.get("channel") or "") if per_channel else "")
        now = self.now()
        bucket = self._buckets.setdefault(key, _Bucket(float(burst), now))
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        retry_after = max(1, math.ceil((1.0 - bucket.tokens) / rate))
        return _json(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})

    def _dispatch(
        self, method: str, params: dict, token: str | None, events: list[Event]
    ) -> HttpResult:
        handler = self._handlers.get(method)
        if handler is None:
            return _json(200, {"ok": False, "error": "unknown_method"})
        try:
            self._check_token(method, token)
            return _json(200, {"ok": True, **handler(params, events)})
        except ApiError as exc:
            answer: dict[str, Any] = {"ok": False, "error": exc.error}
            if exc.messages:
                answer["response_metadata"] = {"messages": exc.messages}
            return _json(200, answer)

    def _check_token(self, method: str, token: str | None) -> None:
        wants_app = method == "apps.connections.open"
        expected = self.app_token if wants_app else self.bot_token
        if expected is not None and token != expected:
            raise ApiError("invalid_auth")
        if not token:
            raise ApiError("not_authed")
        if token.startswith("xapp-") != wants_app:
            raise ApiError("not_allowed_token_type")

    def _method_table(self) -> dict[str, Callable[[dict, list[Event]], dict]]:
        return {
            "api.test": lambda p, ev: {"args": p},
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.delete": self._delete,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.getPermalink": self._permalink,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "files.info": self._files_info,
            "apps.connections.open": self._connections_open,
            "assistant.threads.setStatus": self._set_status,
            "assistant.threads.setTitle": self._assistant_ack,
            "assistant.threads.setSuggestedPrompts": self._assistant_ack,
            "reactions.add": self._reaction_add,
            "reactions.remove": self._reaction_remove,
            "users.info": self._users_info,
            "views.publish": self._views_publish,
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
            "agents.sessions.setStatus": self._session_set_status,
            "agents.sessions.rename": self._session_rename,
        }

    # ---- Events API: what the app hears of its own messages

    def _send_event(self, event: dict) -> None:
        body = self._event_body(event)
        for callback in list(self.on_event):
            try:
                callback(copy.deepcopy(body))
            except Exception as exc:
                self.errors.append(exc)

    def _event_body(self, event: dict) -> dict:
        """The Events API wrapper around ``event``, as Slack sends it to this app."""
        return {
            "team_id": self.team_id,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev0{next(self._ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }

    def _heard_in(self, channel: str) -> str | None:
        """The channel_type of ``channel`` if the app gets its message events, else None."""
        kind = CHANNEL_TYPES.get(channel[:1])
        if kind is None or kind[1] not in self.bot_events or channel in self.not_in_channel:
            return None
        return kind[0]

    def _message_event(self, channel: str, msg: dict, events: list[Event]) -> None:
        """Queue the ``message`` event of the app's own new message ``msg``."""
        channel_type = self._heard_in(channel)
        if channel_type is None:
            return
        event = {k: copy.deepcopy(msg[k]) for k in EVENT_FIELDS if msg.get(k) not in (None, [])}
        event["bot_profile"] = {
            "id": self.bot_id,
            "deleted": False,
            "name": "aico",
            "app_id": self.app_id,
            "team_id": self.team_id,
        }
        event |= {"channel": channel, "event_ts": msg["ts"], "channel_type": channel_type}
        events.append((APP_EVENT, channel, event))

    def _deleted_event(self, channel: str, msg: dict, events: list[Event]) -> None:
        """Queue the ``message_deleted`` event of a deletion (docs.slack.dev, message_deleted:
        hidden, with the deleted message's ts in ``deleted_ts`` and ``previous_message``)."""
        channel_type = self._heard_in(channel)
        if channel_type is None:
            return
        ts = self._ws.next_ts()
        previous = {k: copy.deepcopy(msg[k]) for k in EVENT_FIELDS if msg.get(k) not in (None, [])}
        event = {
            "type": "message",
            "subtype": "message_deleted",
            "hidden": True,
            "channel": channel,
            "ts": ts,
            "deleted_ts": msg["ts"],
            "event_ts": ts,
            "previous_message": previous,
            "channel_type": channel_type,
        }
        events.append((APP_EVENT, channel, event))

    def _channel(self, params: dict, key: str = "channel") -> str:
        channel = params.get(key)
        if not channel:
            raise ApiError("channel_not_found")
        if channel in self.not_in_channel:
            raise ApiError("not_in_channel")
        return str(channel)

    def _existing(self, channel: str, ts: str | None) -> dict:
        msg = self._ws.get(channel, ts)
        if msg is None:
            raise ApiError("message_not_found")
        return msg

    def _bot_extra(self) -> dict:
        return {"bot_id": self.bot_id, "app_id": self.app_id}

    def _post(self, channel: str, content: dict, events: list[Event], **opts: Any) -> dict:
        opts["extra"] = {**self._bot_extra(), **opts.get("extra", {})}
        msg = self._ws.post(channel, content, self.bot_user_id, **opts)
        public = _public(msg)
        events.append(("posted", channel, public))
        return public

    # ---- auth / chat

    def _auth_test(self, params: dict, events: list[Event]) -> dict:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_domain,
            "user": "aico",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _post_message(self, params: dict, events: list[Event]) -> dict:
        channel = self._channel(params)
        if error := content_error(params):
            raise ApiError(error)
        broadcast = _truthy(params.get("reply_broadcast"))
        thread_ts = params.get("thread_ts") or None
        msg = self._post(
            channel, _content(params), events, thread_ts=thread_ts, broadcast=broadcast
        )
        self._message_event(channel, msg, events)
        return {"channel": channel, "ts": msg["ts"], "message": msg}

    def _update(self, params: dict, events: list[Event]) -> dict:
        channel = self._channel(params)
        msg = self._existing(channel, params.get("ts"))
        if msg.get("user") != self.bot_user_id or msg.get("streaming"):
            # A message still streaming is the stream's to change (the fake's stricter choice:
            # Slack documents nothing; chat.update is the documented way to finish one that
            # Slack ended, and works then).
            raise ApiError("cant_update_message")
        if error := content_error(params):
            raise ApiError(error)
        changes = {k: v for k, v in _content(params).items() if k in params}
        public = _public(self._ws.update(msg, changes, self.bot_user_id))
        events.append(("updated", channel, public))
        return {"channel": channel, "ts": msg["ts"], "text": msg["text"], "message": public}

    def _delete(self, params: dict, events: list[Event]) -> dict:
        channel = self._channel(params)
        msg = self._existing(channel, params.get("ts"))
        if msg.get("user") != self.bot_user_id:
            raise ApiError("cant_delete_message")
        if stream := self._streams.get((channel, msg["ts"])):
            self._end_stream(stream, "deleted")
        self._ws.delete(channel, msg["ts"])
        events.append(("deleted", channel, _public(msg)))
        self._deleted_event(channel, msg, events)
        return {"channel": channel, "ts": msg["ts"]}

    def _post_ephemeral(self, params: dict, events: list[Event]) -> dict:
        channel = self._channel(params)
        if not params.get("user"):
            raise ApiError("user_not_in_channel")
        if error := content_error(params):
            raise ApiError(error)
        record = self._record_ephemeral(channel, params, "chat.postEphemeral", events)
        return {"message_ts": record["ts"]}

    def _record_ephemeral(self, channel: str | None, params: dict, source: str, events) -> dict:
        record = {
            "channel": channel,
            "user": params.get("user"),
            "ts": self._ws.next_ts(),
            "thread_ts": params.get("thread_ts"),
            "source": source,
            **_content(params),
        }
        self._ephemerals.append(record)
        events.append(("ephemeral", channel or "", copy.deepcopy(record)))
        return record

    def _permalink(self, params: dict, events: list[Event]) -> dict:
        channel = self._channel(params)
        ts = self._existing(channel, params.get("message_ts"))["ts"]
        link = f"https://{self.team_domain}.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        return {"channel": channel, "permalink": link}

    # ---- conversations
    # A message's metadata comes back only with include_all_metadata=true: "Return all metadata
    # associated with this message" (conversations.history / conversations.replies, arguments).

    def _conversations_replies(self, params: dict, events: list[Event]) -> dict:
        channel = self._channel(params)
        thread = self._ws.thread(channel, str(params.get("ts") or ""))
        if not thread:
            raise ApiError("thread_not_found")
        limit = int(params.get("limit") or 1000)
        metadata = _truthy(params.get("include_all_metadata"))
        return {
            "messages": [_public(m, metadata) for m in thread[:limit]],
            "has_more": len(thread) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _conversations_history(self, params: dict, events: list[Event]) -> dict:
        channel = self._channel(params)
        msgs = list(reversed(self._ws.top_level(channel)))
        limit = int(params.get("limit") or 100)
        metadata = _truthy(params.get("include_all_metadata"))
        return {
            "messages": [_public(m, metadata) for m in msgs[:limit]],
            "has_more": len(msgs) > limit,
            "pin_count": 0,
            "response_metadata": {"next_cursor": ""},
        }

    # ---- files

    def _get_upload_url(self, params: dict, events: list[Event]) -> dict:
        filename, length = params.get("filename"), str(params.get("length", ""))
        if not filename or not length.isdigit():
            raise ApiError("invalid_arguments")
        file_id = f"F0{next(self._ids):08d}"
        self._files[file_id] = self._file_record(file_id, str(filename), int(length))
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _file_record(self, file_id: str, filename: str, size: int, user: str | None = None) -> dict:
        """A file object with the fields Slack gives one (the file type reference); both URLs
        are served only with the bot token (see :meth:`_download`)."""
        user = user or self.bot_user_id
        ext = filename.rpartition(".")[2].lower() if "." in filename else ""
        private = f"{self.base_url}/files-pri/{self.team_id}-{file_id}"
        now = int(time.time())
        return {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": filename,
            "title": filename,
            "mimetype": mimetypes.guess_type(filename)[0] or "application/octet-stream",
            "filetype": FILETYPES.get(ext, ext or "binary"),
            "pretty_type": (ext or "binary").upper(),
            "user": user,
            "user_team": self.team_id,
            "editable": False,
            "size": size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": False,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{private}/{filename}",
            "url_private_download": f"{private}/download/{filename}",
            "permalink": f"https://{self.team_domain}.slack.com/files/{user}/{file_id}/{filename}",
        }

    def _complete_upload(self, params: dict, events: list[Event]) -> dict:
        entries = params.get("files")
        if not isinstance(entries, list) or not entries:
            raise ApiError("invalid_arguments")
        records = [self._finish_file(entry) for entry in entries]
        response = {"files": copy.deepcopy(records)}  # as Slack answers: not shared yet
        for channel in self._share_targets(params):
            content = {"text": str(params.get("initial_comment") or ""), "blocks": []}
            thread_ts = params.get("thread_ts") or None
            ids = [r["id"] for r in records]
            share = _Share(self.now() + self.file_share_delay, channel, content, thread_ts, ids)
            self._shares.append(share)
            self._arm_timer(self.file_share_delay)
        self._release_shares(events)  # at once when file_share_delay is 0
        return response

    def _arm_timer(self, delay: float) -> None:
        if delay <= 0:
            return
        timer = threading.Timer(delay + 0.01, self._settle)
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _release_shares(self, events: list[Event]) -> bool:
        now = self.now()
        due = [share for share in self._shares if share.due <= now]
        if not due:
            return False
        self._shares = [share for share in self._shares if share.due > now]
        for share in due:
            self._share(share, events)
        return True

    def _share(self, share: _Share, events: list[Event]) -> None:
        records = [self._files[file_id] for file_id in share.file_ids if file_id in self._files]
        extra = {"files": copy.deepcopy(records), "upload": True}
        opts = {"thread_ts": share.thread_ts, "extra": extra}
        msg = self._post(share.channel, share.content, events, **opts)
        place = "private" if share.channel[:1] in ("G", "D") else "public"
        entry = {"ts": msg["ts"], "share_user_id": self.bot_user_id}
        if msg.get("thread_ts"):
            entry["thread_ts"] = msg["thread_ts"]
        for record in records:
            shares = record.setdefault("shares", {}).setdefault(place, {})
            shares.setdefault(share.channel, []).append(entry)
            record.setdefault("channels" if place == "public" else "groups", []).append(
                share.channel
            )

    def _files_info(self, params: dict, events: list[Event]) -> dict:
        if "files:read" in self.missing_scopes:
            raise ApiError("missing_scope")
        record = self._files.get(str(params.get("file") or ""))
        if record is None:
            raise ApiError("file_not_found")
        return {"file": copy.deepcopy(record), "comments": [], "response_metadata": {}}

    def _finish_file(self, entry: Any) -> dict:
        file_id = entry.get("id") if isinstance(entry, dict) else None
        record = self._files.get(file_id or "")
        if record is None or file_id not in self._contents:
            raise ApiError("file_not_found")
        record["title"] = entry.get("title") or record["title"]
        return record

    def _share_targets(self, params: dict) -> list[str]:
        if params.get("channel_id"):
            return [self._channel(params, "channel_id")]
        names = [c for c in str(params.get("channels") or "").split(",") if c]
        return [self._channel({"channel": c}) for c in names]

    def _upload(self, file_id: str, headers: dict[str, str], body: bytes) -> HttpResult:
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            body = _multipart_file(content_type, body)
        with self._cond:
            if file_id not in self._files:
                return _text(404, "file_not_found")
            self._contents[file_id] = body
            self._files[file_id]["size"] = len(body)
            self._bump()
        return _text(200, f"OK - {len(body)}")

    def _download(self, route: str, file_id: str, headers: dict[str, str]) -> HttpResult:
        """url_private(_download): the file for a request with the bot token in
        ``Authorization: Bearer`` ("include the token in an Authorization header", the file
        type reference); without it (or without files:read) Slack answers a 302 to its sign-in
        page, ``https://<team>.slack.com/?redir=<the file's path>``, and that page is HTML with
        status 200 (reported in github.com/drewminns/slackdeletron/issues/48 and
        slackapi/deno-slack-sdk/issues/285; an HTTP client that follows redirects gets the HTML,
        chenhg5/cc-connect issue 185)."""
        token = bearer_token(headers, {})
        expected = self.bot_token
        authed = token == expected if expected is not None else bool(token)
        if not authed or "files:read" in self.missing_scopes:
            location = f"{self.base_url}/?redir={quote(route, safe='')}"
            body = f'<a href="{location}">Found</a>.'
            return 302, body.encode(), {"Location": location, "Content-Type": HTML_CT}
        with self._lock:
            record, content = self._files.get(file_id), self._contents.get(file_id)
        if content is None or record is None:
            return _text(404, "file_not_found")
        return 200, content, {"Content-Type": str(record.get("mimetype") or OCTET_CT)}

    # ---- streams: chat.startStream / chat.appendStream / chat.stopStream
    # The message is a reply in its thread from startStream on, its text the markdown so far and
    # "streaming": true while the stream is open (a marker of the fake's: Slack's own is not
    # documented); after stopStream it is a plain message. Each call is checked in Slack's
    # order: the feature, the channel, the arguments, the message, then the text.

    def _stream_channel(self, params: dict) -> str:
        if not self.streaming_enabled:
            raise ApiError(self.streaming_error)
        return self._channel(params)

    def _start_stream(self, params: dict, events: list[Event]) -> dict:
        channel = self._stream_channel(params)
        thread_ts = params.get("thread_ts")
        if not thread_ts:
            raise _missing("thread_ts")  # "Streamed messages should always be replies"
        if channel[:1] != "D":  # "Required when streaming to channels" (both recipient fields)
            if not params.get("recipient_team_id"):
                raise ApiError("missing_recipient_team_id")
            if not params.get("recipient_user_id"):
                raise ApiError("missing_recipient_user_id")
        text, chunks = stream_text(params)
        self._check_stream_size(len(text))
        content = {"text": text, "blocks": []}
        opts = {"thread_ts": str(thread_ts), "extra": {"streaming": True}}
        msg = self._post(channel, content, events, **opts)
        root = str(msg.get("thread_ts") or thread_ts)
        stream = _Stream(channel, msg["ts"], root, self.now(), appends=[text], chunks=chunks)
        self._streams[(channel, msg["ts"])] = stream
        self._message_event(channel, msg, events)
        return {"channel": channel, "ts": msg["ts"]}

    def _check_stream_size(self, total: int) -> None:
        if total > self.stream_max_chars:
            raise ApiError("msg_too_long")

    def _open_stream(self, params: dict, method: str) -> tuple[_Stream, dict]:
        """The stream ``params`` names, if a call of ``method`` may still act on it."""
        channel = self._stream_channel(params)
        if not params.get("ts"):
            raise _missing("ts")
        msg = self._existing(channel, params.get("ts"))
        if msg.get("user") != self.bot_user_id:
            raise ApiError("message_not_owned_by_app")
        stream = self._streams.get((channel, msg["ts"]))
        if stream is None or stream.state in ("stopped", "expired", "deleted"):
            raise ApiError("message_not_in_streaming_state")
        if stream.state == "stopped_by_user" and method == "chat.appendStream":
            # "The streaming message was stopped by the user and no further appends are
            # accepted" (chat.appendStream's errors); stopStream still finishes it, as the
            # agent_session_stopped docs tell the app to.
            raise ApiError("stopped_by_user")
        return stream, msg

    def _grow(self, stream: _Stream, msg: dict, params: dict, required: bool) -> None:
        """Add the call's text to the stream (over the size limit: msg_too_long, or the stream
        ends when ``stream_overflow`` is "end")."""
        text, chunks = stream_text(params)
        if required and not text and not chunks:
            raise ApiError("no_text")
        if len(stream.text) + len(text) > self.stream_max_chars:
            if self.stream_overflow == "end":
                self._end_stream(stream, "expired")
                raise ApiError("message_not_in_streaming_state")
            raise ApiError("msg_too_long")
        stream.appends.append(text)
        stream.chunks.extend(chunks)
        msg["text"] = stream.text

    def _end_stream(self, stream: _Stream, state: str) -> None:
        stream.state, stream.ended_at = state, self.now()
        msg = self._ws.get(stream.channel, stream.ts)
        if msg is not None:
            msg.pop("streaming", None)

    def _append_stream(self, params: dict, events: list[Event]) -> dict:
        stream, msg = self._open_stream(params, "chat.appendStream")
        self._grow(stream, msg, params, required=True)
        events.append(("streamed", stream.channel, _public(msg)))
        return {"channel": stream.channel, "ts": stream.ts}

    def _stop_stream(self, params: dict, events: list[Event]) -> dict:
        stream, msg = self._open_stream(params, "chat.stopStream")
        blocks = params.get("blocks")
        if blocks is not None and (error := blocks_error(blocks)):
            raise ApiError(error)
        if blocks is not None and blocks_text_length(blocks) > MAX_BLOCKS_TEXT:
            raise ApiError("msg_blocks_too_long")
        if error := _metadata_error(params.get("metadata")):
            raise ApiError(error)
        status = params.get("session_status")
        if status is not None and status not in SESSION_STATUSES:
            raise ApiError("invalid_arguments", _schema_error("/session_status", "invalid value"))
        self._grow(stream, msg, params, required=False)
        if blocks is not None:
            msg["blocks"] = copy.deepcopy(blocks)
        if params.get("metadata") is not None:
            msg["metadata"] = copy.deepcopy(params["metadata"])
        self._end_stream(stream, "stopped")
        # "The session status to set after stopping the stream. Default: active"
        session = self._sessions.get((stream.channel, stream.thread_ts))
        if session is not None:
            self._set_session(session, str(status or "active"), events)
        public = _public(msg)
        events.append(("streamed", stream.channel, public))
        return {"channel": stream.channel, "ts": stream.ts, "message": _public(msg, False)}

    def _expire_streams(self, events: list[Event]) -> bool:
        """End the streams older than ``stream_max_age`` (lock held); True if any ended."""
        now, ended = self.now(), False
        for stream in self._streams.values():
            if stream.state == "streaming" and now - stream.started_at > self.stream_max_age:
                self._end_stream(stream, "expired")
                msg = self._ws.get(stream.channel, stream.ts)
                if msg is not None:
                    events.append(("streamed", stream.channel, _public(msg)))
                ended = True
        return ended

    # ---- agent sessions: agents.sessions.setStatus / rename

    def _session_target(self, params: dict) -> tuple[str, str]:
        if not self.sessions_enabled:
            raise ApiError(self.sessions_error)
        channel = params.get("channel_id")
        if not channel:
            raise ApiError("channel_not_found")
        if channel in self.not_in_channel:
            raise ApiError("not_authorized")  # "The caller is not a member of the ... channel"
        thread_ts = params.get("thread_ts")
        if not thread_ts:
            raise ApiError("thread_ts_required")
        # "Timestamp of the thread root message the session is scoped to": a reply's ts is
        # refused as assistant.threads.setStatus refuses it (invalid_thread_ts).
        if self._ws.is_reply(str(channel), str(thread_ts)):
            raise ApiError("invalid_thread_ts")
        return str(channel), str(thread_ts)

    def _session_set_status(self, params: dict, events: list[Event]) -> dict:
        channel, thread_ts = self._session_target(params)
        status = params.get("status")
        if not status:
            raise _missing("status")
        if status not in SESSION_STATUSES:
            raise ApiError("invalid_status")
        title = str(params.get("title") or "")
        if len(title) > MAX_SESSION_TITLE:
            raise ApiError(
                "invalid_arguments", _schema_error("/title", "must be less than 201 characters")
            )
        session = self._sessions.get((channel, thread_ts))
        if session is None:  # the title and initiator count only when the session is created
            initiator = params.get("initiator_user_id")
            session = _Session(channel, thread_ts, str(status), title, initiator)
            self._sessions[(channel, thread_ts)] = session
        self._set_session(session, str(status), events)
        answer: dict[str, Any] = {
            "status": session.status,
            "agent_status": session.status,
            "title": session.title,
        }
        if "agent_session_stopped" not in self.bot_events:
            warning = "missing_agent_session_stopped_event_subscription"
            answer |= {"warning": warning, "response_metadata": {"warnings": [warning]}}
        return answer

    def _set_session(self, session: _Session, status: str, events: list[Event]) -> None:
        session.status = status
        session.history.append((status, self.now()))
        events.append(("session", session.channel, session.view()))

    def _session_rename(self, params: dict, events: list[Event]) -> dict:
        channel, thread_ts = self._session_target(params)
        title = str(params.get("title") or "")
        if not 0 < len(title) <= MAX_SESSION_TITLE:
            raise ApiError(
                "invalid_arguments", _schema_error("/title", "must be 1 to 200 characters")
            )
        session = self._sessions.get((channel, thread_ts))
        if session is None:
            raise ApiError("session_not_found")
        session.title = title
        return {"title": title}

    # ---- views (the App Home)

    def _views_publish(self, params: dict, events: list[Event]) -> dict:
        user = str(params.get("user_id") or "")
        if user[:1] not in ("U", "W") or not user[1:].isalnum():
            raise ApiError("invalid_arguments", "invalid `user_id`")
        view = params.get("view")
        if not isinstance(view, dict):
            raise ApiError("invalid_arguments", _schema_error("/view", "a view object required"))
        if len(json.dumps(view, separators=(",", ":")).encode()) > MAX_VIEW_BYTES:
            raise ApiError("view_too_large")
        if view.get("type") != "home":
            raise ApiError("invalid_arguments", _schema_error("/view/type", "must be home"))
        if not self.home_tab_enabled:
            raise ApiError("not_enabled")
        if problem := view_problem(view):
            raise ApiError("invalid_arguments", problem)
        current = self._views.get(user)
        if params.get("hash") and (current is None or params["hash"] != current["hash"]):
            raise ApiError("hash_conflict")
        stored = self._stored_view(user, view, current)
        self._views[user] = stored
        self._published.append({**copy.deepcopy(stored), "user_id": user})
        return {"view": copy.deepcopy(stored)}

    def _stored_view(self, user: str, view: dict, current: dict | None) -> dict:
        view_id = current["id"] if current else f"V0{next(self._ids):08d}"
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": "home",
            "blocks": copy.deepcopy(view.get("blocks") or []),
            "private_metadata": str(view.get("private_metadata") or ""),
            "callback_id": str(view.get("callback_id") or ""),
            "external_id": str(view.get("external_id") or ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": self.app_id,
            "bot_id": self.bot_id,
        }

    # ---- misc

    def _connections_open(self, params: dict, events: list[Event]) -> dict:
        if not self.socket_mode_url:
            raise ApiError("socket_mode_url_not_set_on_fake")
        return {"url": self.socket_mode_url}

    def _set_status(self, params: dict, events: list[Event]) -> dict:
        channel = self._channel(params, "channel_id")
        if not params.get("thread_ts") or "status" not in params:
            raise ApiError("invalid_arguments")
        # The status line belongs to the thread's root: a reply's ts is refused (measured and
        # reported in public code using Slack: "root ts -> ok True, reply ts -> ok False",
        # invalid_thread_ts).
        if self._ws.is_reply(channel, params["thread_ts"]):
            raise ApiError("invalid_thread_ts")
        record = {"channel": channel, "thread_ts": params["thread_ts"], "status": params["status"]}
        self._statuses.append(record)
        events.append(("status", channel, dict(record)))
        return {}

    def _assistant_ack(self, params: dict, events: list[Event]) -> dict:
        self._channel(params, "channel_id")
        return {}

    def _reaction_add(self, params: dict, events: list[Event]) -> dict:
        msg = self._existing(self._channel(params), params.get("timestamp"))
        reactions = msg.setdefault("reactions", [])
        name = params.get("name")
        if any(r["name"] == name for r in reactions):
            raise ApiError("already_reacted")
        reactions.append({"name": name, "users": [self.bot_user_id], "count": 1})
        return {}

    def _reaction_remove(self, params: dict, events: list[Event]) -> dict:
        msg = self._existing(self._channel(params), params.get("timestamp"))
        kept = [r for r in msg.get("reactions", []) if r["name"] != params.get("name")]
        if len(kept) == len(msg.get("reactions", [])):
            raise ApiError("no_reaction")
        msg["reactions"] = kept
        return {}

    def _users_info(self, params: dict, events: list[Event]) -> dict:
        user_id = params.get("user")
        if not user_id:
            raise ApiError("user_not_found")
        user = self.users.get(user_id) or {
            "id": user_id,
            "team_id": self.team_id,
            "name": user_id.lower(),
            "real_name": user_id,
            "is_bot": user_id == self.bot_user_id,
            "deleted": False,
            "tz": "UTC",
            "profile": {"display_name": user_id.lower(), "real_name": user_id},
        }
        return {"user": user}

    # ------------------------------------------------------------------ response_url

    def _hook_post(self, url_path: str, hook_id: str, body: bytes) -> HttpResult:
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return _text(400, "invalid_payload")
        events: list[Event] = []
        with self._cond:
            result = self._use_hook(f"{self.base_url}{url_path}", hook_id, payload, events)
            self._bump()
        self._fire(events)
        return result

    def _use_hook(self, url: str, hook_id: str, payload: dict, events: list[Event]) -> HttpResult:
        hook = self._hooks.get(hook_id)
        if hook is None:
            return _text(404, "no_active_hooks")
        if self.now() - hook.issued_at > RESPONSE_URL_TTL:
            return _text(404, "expired_url")
        if hook.uses >= RESPONSE_URL_USES:
            return _text(404, "used_url")
        delete = _truthy(payload.get("delete_original"))
        if not delete and (error := content_error(payload)):
            return _text(400, error)
        hook.uses += 1
        post = ResponsePost(
            url=url,
            payload=payload,
            response_type=str(payload.get("response_type") or "ephemeral"),
            replace_original=_truthy(payload.get("replace_original")),
            delete_original=delete,
            channel=hook.channel,
            at=time.time(),
        )
        self._responses.append(post)
        self._apply_hook(hook, post, events)
        return _text(200, "ok")

    def _apply_hook(self, hook: _Hook, post: ResponsePost, events: list[Event]) -> None:
        target = self._ws.get(hook.channel or "", hook.message_ts)
        if post.delete_original and target is not None:
            self._ws.delete(hook.channel or "", target["ts"])
            events.append(("deleted", hook.channel or "", _public(target)))
        elif post.replace_original and target is not None:
            changes = {k: v for k, v in _content(post.payload).items() if k in post.payload}
            public = _public(self._ws.update(target, changes, self.bot_user_id))
            events.append(("updated", hook.channel or "", public))
        elif post.response_type == "in_channel" and hook.channel:
            thread_ts = post.payload.get("thread_ts") or None
            self._post(hook.channel, _content(post.payload), events, thread_ts=thread_ts)
        elif not post.delete_original:
            self._record_ephemeral(hook.channel, post.payload, "response_url", events)
