"""The Notifier port in memory: channels with their messages and threads, as SlackNotifier sees
them through Slack (tests/contract/test_notifier.py runs the same suite on both, the real one
against FakeSlack).

As Slack does: a post answers its ts; a reply is in its parent's thread (a reply to a reply goes
under the parent: Slack has no threads of replies); `find_message` looks in the thread (its root
included) or among the channel's latest top-level messages, by metadata (event_type and the
payload's task_id); a thread whose root does not exist is `thread_not_found`; an update of a
message that does not exist is `message_not_found`; a channel aico is not in answers
`not_in_channel`. Files are shared at once, unless `share_files_later()` (then `share_files()`
shares them, as Slack shares an upload a moment after it is complete). `set_status` and
`respond` never raise (SlackNotifier logs their failures).

Slack's agent platform, with FakeSlack's rules: `start_stream` posts a reply that is "streaming"
(its text grows with `append_stream`; `update` refuses it, `cant_update_message`) until
`stop_stream` (its last text, blocks under it, metadata) or Slack ends it (`end_stream`, as for a
stream too old or too long); then appends and stops answer `message_not_in_streaming_state` and
`update` works again. `stop_by_user` is the stop button (appends answer `stopped_by_user`).
`set_session` keeps one session per thread root (statuses active, processing, suspended, closed;
anything else is `invalid_status`). `streams_enabled` / `sessions_enabled` False: a workspace
without them (`unknown_method` / `feature_disabled`, permanent).

What a test may tell it: fail the next call to a method (`fail_next`, transient or permanent),
lose the answer of the next one (`lose_answer_next`: the call happened, the caller gets a
transient SlackError). What a test may look at, shaped as FakeSlack shows them: `messages`,
`replies`, `message`, `ephemerals`, `statuses`, `responses`, `calls`, `streams`, `sessions`;
`wait_for` any of it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import SlackError
from core.slack.metadata import is_about

TRANSIENT_CODE = "internal_error"  # what Slack answers with a 500
PERMANENT_CODE = "channel_not_found"
LATEST = 100  # SlackNotifier looks among the channel's 100 latest messages
SESSION_STATUSES = ("active", "processing", "suspended", "closed")
STREAM_MAX_CHARS = 12_000  # what one streamed message may hold, as FakeSlack holds it
TS_BASE_US = 1_700_000_000 * 1_000_000


@dataclass
class _Fault:
    remaining: int
    code: str
    transient: bool
    lose_answer: bool


class MemoryNotifier:
    """What aico says in Slack, kept in memory."""

    def __init__(self) -> None:
        self.not_in_channel: set[str] = set()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.statuses: list[dict[str, str]] = []
        self.responses: list[dict[str, str]] = []
        self._channels: dict[str, dict[str, dict[str, Any]]] = {}
        self._threads: dict[tuple[str, str], list[str]] = {}
        self._ephemerals: list[dict[str, Any]] = []
        self._faults: dict[str, _Fault] = {}
        self._unshared: list[tuple[str, str, dict[str, Any]]] | None = None
        self._last_us = TS_BASE_US
        self._cond = threading.Condition(threading.RLock())
        self.streams_enabled = True
        self.sessions_enabled = True
        self.streams: dict[str, dict[str, Any]] = {}  # ts -> {channel, thread_ts, state, appends}
        self.sessions: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, root) -> session

    # -- the Notifier port -------------------------------------------------------------------

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]],
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        with self._call("post", channel=channel, text=text, thread_ts=thread_ts):
            content = {"text": text, "blocks": copy.deepcopy(blocks)}
            if metadata:
                content["metadata"] = copy.deepcopy(metadata)
            message = self._post(channel, content, thread_ts)
        return message["ts"]

    def check(self) -> None:
        with self._call("check"):
            pass

    def update(
        self,
        channel: str,
        ts: str,
        text: str,
        blocks: list[dict[str, Any]],
        metadata: dict[str, Any] | None = None,
    ) -> None:
        with self._call("update", channel=channel, ts=ts, text=text):
            message = self._existing(channel, ts)
            if message.get("streaming"):
                raise SlackError("cant_update_message")
            message.update(text=text, blocks=copy.deepcopy(blocks))
            if metadata:
                message["metadata"] = copy.deepcopy(metadata)

    def delete(self, channel: str, ts: str) -> None:
        with self._call("delete", channel=channel, ts=ts):
            message = self._existing(channel, ts)
            if ts in self.streams:
                self._end(ts, "deleted")
            del self._channels[channel][ts]
            root = message.get("thread_ts")
            if root and ts in self._threads.get((channel, root), []):
                self._threads[(channel, root)].remove(ts)

    # -- streams and sessions ----------------------------------------------------------------

    def start_stream(self, channel: str, thread_ts: str, text: str, recipient: str = "") -> str:
        with self._call("start_stream", channel=channel, thread_ts=thread_ts, text=text):
            self._streaming_on()
            if not thread_ts:
                raise SlackError("invalid_arguments")
            if channel[:1] != "D" and not recipient:
                raise SlackError("missing_recipient_user_id")
            if len(text) > STREAM_MAX_CHARS:
                raise SlackError("msg_too_long")
            message = self._post(
                channel, {"text": text, "blocks": [], "streaming": True}, thread_ts
            )
            self.streams[message["ts"]] = {
                "channel": channel,
                "thread_ts": message.get("thread_ts", thread_ts),
                "state": "streaming",
                "appends": [text],
            }
        return str(message["ts"])

    def append_stream(self, channel: str, ts: str, text: str) -> None:
        with self._call("append_stream", channel=channel, ts=ts, text=text):
            message = self._open_stream(channel, ts, appending=True)
            if not text:
                raise SlackError("no_text")
            self._grow(message, ts, text)

    def stop_stream(
        self,
        channel: str,
        ts: str,
        text: str = "",
        blocks: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
        session_status: str = "",
    ) -> None:
        with self._call("stop_stream", channel=channel, ts=ts, text=text):
            message = self._open_stream(channel, ts, appending=False)
            if session_status and session_status not in SESSION_STATUSES:
                raise SlackError("invalid_arguments")
            if text:
                self._grow(message, ts, text)
            if blocks is not None:
                message["blocks"] = copy.deepcopy(blocks)
            if metadata:
                message["metadata"] = copy.deepcopy(metadata)
            self._end(ts, "stopped")
            session = self.sessions.get((channel, self.streams[ts]["thread_ts"]))
            if session is not None:
                session["status"] = session_status or "active"
                session["history"].append(session["status"])

    def find_stream(self, channel: str, thread_ts: str, head: str) -> str:
        with self._call("find_stream", channel=channel, thread_ts=thread_ts, head=head):
            found = ""
            for message in self._thread(channel, thread_ts)[1:]:
                plain = not message.get("metadata") and not message.get("files")
                if plain and str(message.get("text", "")).startswith(head):
                    found = str(message["ts"])
        return found

    def set_session(self, channel: str, thread_ts: str, status: str, title: str = "") -> None:
        with self._call("set_session", channel=channel, thread_ts=thread_ts, status=status):
            if not self.sessions_enabled:
                raise SlackError("feature_disabled")
            if status not in SESSION_STATUSES:
                raise SlackError("invalid_status")
            if self._is_reply(channel, thread_ts):
                raise SlackError("invalid_thread_ts")
            session = self.sessions.setdefault(
                (channel, thread_ts), {"status": status, "title": title, "history": []}
            )
            session["status"] = status
            session["history"].append(status)

    def find_message(
        self,
        channel: str,
        event_type: str,
        key: str,
        thread_ts: str = "",
        generation: int | None = None,
    ) -> str:
        with self._call("find_message", channel=channel, event_type=event_type, key=key):
            looked = self._thread(channel, thread_ts) if thread_ts else self._latest(channel)
            for message in looked:
                if is_about(message, event_type, key, generation):
                    return str(message["ts"])
        return ""

    def has_file(self, channel: str, thread_ts: str, filename: str) -> bool:
        with self._call("has_file", channel=channel, thread_ts=thread_ts, filename=filename):
            return any(
                f.get("name") == filename
                for message in self._thread(channel, thread_ts)
                for f in message.get("files") or []
            )
        raise AssertionError("unreachable")

    def upload(
        self, channel: str, thread_ts: str, content: str, filename: str, comment: str
    ) -> None:
        with self._call("upload", channel=channel, thread_ts=thread_ts, filename=filename):
            file = {"name": filename, "title": filename, "content": content}
            share = {"text": comment, "blocks": [], "files": [file], "upload": True}
            if self._unshared is None:
                self._post(channel, share, thread_ts)
            else:
                self._unshared.append((channel, thread_ts, share))

    def set_status(self, channel: str, thread_ts: str, status: str) -> None:
        try:
            with self._call("set_status", channel=channel, thread_ts=thread_ts, status=status):
                if self._is_reply(channel, thread_ts):
                    raise SlackError("invalid_thread_ts")
                self.statuses.append({"channel": channel, "thread_ts": thread_ts, "status": status})
        except SlackError:
            pass  # progress only, as SlackNotifier.set_status

    def ephemeral(self, channel: str, user: str, text: str, thread_ts: str = "") -> None:
        with self._call("ephemeral", channel=channel, user=user, text=text):
            if not user:
                raise SlackError("user_not_in_channel")
            self._ephemerals.append(
                {"channel": channel, "user": user, "text": text, "thread_ts": thread_ts or None}
            )

    def respond(self, response_url: str, text: str) -> None:
        try:
            with self._call("respond", response_url=response_url, text=text):
                self.responses.append({"url": response_url, "text": text})
        except SlackError:
            pass  # SlackNotifier.respond logs it

    # -- what a test tells it ----------------------------------------------------------------

    def fail_next(
        self, method: str = "*", count: int = 1, *, transient: bool = True, code: str = ""
    ) -> None:
        """The next `count` calls to `method` (a Notifier method name, "*" for any) fail with
        SlackError, transient (as a 500: `internal_error`) or permanent (as `ok: false`,
        `channel_not_found` unless `code` says otherwise); nothing is done."""
        code = code or (TRANSIENT_CODE if transient else PERMANENT_CODE)
        with self._cond:
            self._faults[method] = _Fault(count, code, transient, lose_answer=False)

    def lose_answer_next(self, method: str = "post", count: int = 1) -> None:
        """Carry out the next `count` calls to `method`, then lose the answer: the caller gets a
        transient SlackError (`connection_error`) although the call happened."""
        with self._cond:
            self._faults[method] = _Fault(count, "connection_error", True, lose_answer=True)

    def end_stream(self, ts: str) -> None:
        """Slack ends the stream itself (too old, too long): the message stays as it is."""
        with self._cond:
            self._end(ts, "expired")
            self._cond.notify_all()

    def stop_by_user(self, ts: str) -> None:
        """Someone pressed the session's stop button: appends are refused, a stop still ends it."""
        with self._cond:
            self.streams[ts]["state"] = "stopped_by_user"
            self._channels[self.streams[ts]["channel"]][ts].pop("streaming", None)
            self._cond.notify_all()

    def share_files_later(self) -> None:
        """From now on an upload's message shows only at `share_files()`."""
        with self._cond:
            self._unshared = self._unshared or []

    def share_files(self) -> int:
        """Show the uploads not shared yet, and share the next ones at once again."""
        with self._cond:
            pending, self._unshared = self._unshared or [], None
            for channel, thread_ts, share in pending:
                self._post(channel, share, thread_ts)
            self._cond.notify_all()
            return len(pending)

    # -- what a test looks at ----------------------------------------------------------------

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """The channel's top-level messages, oldest first."""
        with self._cond:
            return copy.deepcopy([m for m in self._in(channel) if self._top_level(m)])

    def replies(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The replies under `thread_ts`, without its root."""
        with self._cond:
            messages = self._channels.get(channel, {})
            return copy.deepcopy(
                [messages[ts] for ts in self._threads.get((channel, thread_ts), [])]
            )

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        with self._cond:
            return copy.deepcopy(self._channels.get(channel, {}).get(ts))

    def ephemerals(self, channel: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return copy.deepcopy([e for e in self._ephemerals if channel in (None, e["channel"])])

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (value := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{predicate!r} still {value!r} after {timeout}s")
                self._cond.wait(remaining)
            return value

    def stream_text(self, ts: str) -> str:
        """All the text a stream was given, start and appends."""
        with self._cond:
            return "".join(self.streams[ts]["appends"])

    # -- inside ------------------------------------------------------------------------------

    def _streaming_on(self) -> None:
        if not self.streams_enabled:
            raise SlackError("unknown_method")

    def _open_stream(self, channel: str, ts: str, appending: bool) -> dict[str, Any]:
        self._streaming_on()
        message = self._existing(channel, ts)
        stream = self.streams.get(ts)
        if stream is None or stream["state"] in ("stopped", "expired", "deleted"):
            raise SlackError("message_not_in_streaming_state")
        if stream["state"] == "stopped_by_user" and appending:
            raise SlackError("stopped_by_user")
        return message

    def _grow(self, message: dict[str, Any], ts: str, text: str) -> None:
        if len(message["text"]) + len(text) > STREAM_MAX_CHARS:
            raise SlackError("msg_too_long")
        self.streams[ts]["appends"].append(text)
        message["text"] += text

    def _end(self, ts: str, state: str) -> None:
        stream = self.streams[ts]
        stream["state"] = state
        message = self._channels.get(stream["channel"], {}).get(ts)
        if message is not None:
            message.pop("streaming", None)

    def _call(self, method: str, **params: Any) -> _Attempt:
        return _Attempt(self, method, params)

    def _take_fault(self, method: str) -> _Fault | None:
        key = method if method in self._faults else "*"
        fault = self._faults.get(key)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            del self._faults[key]
        return fault

    def _check_channel(self, channel: str) -> None:
        if not channel:
            raise SlackError("channel_not_found")
        if channel in self.not_in_channel:
            raise SlackError("not_in_channel")

    def _in(self, channel: str) -> list[dict[str, Any]]:
        return list(self._channels.get(channel, {}).values())

    def _post(self, channel: str, content: dict[str, Any], thread_ts: str | None) -> dict:
        self._last_us += 100
        ts = f"{self._last_us // 1_000_000}.{self._last_us % 1_000_000:06d}"
        message: dict[str, Any] = {"type": "message", "ts": ts, **content}
        root = self._root_of(channel, thread_ts or None)
        if root:
            message["thread_ts"] = root
            self._threads.setdefault((channel, root), []).append(ts)
            parent = self._channels.get(channel, {}).get(root)
            if parent is not None:
                parent["thread_ts"] = root
                parent["reply_count"] = parent.get("reply_count", 0) + 1
        self._channels.setdefault(channel, {})[ts] = message
        return message

    def _root_of(self, channel: str, thread_ts: str | None) -> str | None:
        named = self._channels.get(channel, {}).get(thread_ts or "")
        if named is not None and named.get("thread_ts") not in (None, named["ts"]):
            return str(named["thread_ts"])
        return thread_ts

    def _is_reply(self, channel: str, ts: str) -> bool:
        named = self._channels.get(channel, {}).get(ts)
        return named is not None and named.get("thread_ts") not in (None, named["ts"])

    @staticmethod
    def _top_level(message: dict[str, Any]) -> bool:
        return message.get("thread_ts") in (None, message["ts"])

    def _existing(self, channel: str, ts: str) -> dict[str, Any]:
        message = self._channels.get(channel, {}).get(ts)
        if message is None:
            raise SlackError("message_not_found")
        return message

    def _thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        root = self._channels.get(channel, {}).get(thread_ts)
        if root is not None and root.get("thread_ts") not in (None, thread_ts):
            thread_ts = root["thread_ts"]
            root = self._channels[channel].get(thread_ts)
        if root is None:
            raise SlackError("thread_not_found")
        messages = self._channels[channel]
        return [root, *(messages[ts] for ts in self._threads.get((channel, thread_ts), []))]

    def _latest(self, channel: str) -> list[dict[str, Any]]:
        return list(reversed([m for m in self._in(channel) if self._top_level(m)]))[:LATEST]


class _Attempt:
    """One call: recorded, maybe failed before it is carried out or its answer lost after; the
    state is changed under the lock, and waiters are woken when it is done."""

    def __init__(self, twin: MemoryNotifier, method: str, params: dict[str, Any]) -> None:
        self.twin, self.method, self.params = twin, method, params
        self.fault: _Fault | None = None

    def __enter__(self) -> None:
        twin = self.twin
        twin._cond.acquire()
        twin.calls.append((self.method, dict(self.params)))
        self.fault = twin._take_fault(self.method)
        try:
            if self.fault and not self.fault.lose_answer:
                raise SlackError(
                    self.fault.code,
                    f"Slack refused {self.method}: {self.fault.code}",
                    transient=self.fault.transient,
                )
            if "channel" in self.params and self.method != "respond":
                twin._check_channel(self.params["channel"])
        except BaseException:
            twin._cond.notify_all()
            twin._cond.release()
            raise

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        twin = self.twin
        twin._cond.notify_all()
        twin._cond.release()
        if exc_type is None and self.fault and self.fault.lose_answer:
            raise SlackError("connection_error", "Slack unreachable: answer lost", transient=True)
        return False
