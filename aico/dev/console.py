"""The console of `aico dev`: what a person types, and the channel as Slack would show it.

What is typed becomes what Slack would send the bot. `/aico …` is a signed slash command.
`@aico …`, `reply`, `dm` and `attach` put a person's message in the fake Slack, which hands the
Events API bodies Slack sends for it (`message`, and `app_mention` for a mention outside DMs)
to the EventPump: signed, in order, from a thread of its own. `press`, `good` and `bad` are
block_actions clicks; `stop` is the stop button of a thread's agent session
(`agent_session_stopped`).

What the bot posts, edits, streams and says only to you is printed as Slack would show it
(ChannelView): a stream as it grows, then the finished message with its blocks as text (a
project's plan as a checklist of its task cards, buttons with the numbers `press` takes,
feedback buttons). Each message in the channel or a DM shows a number, `[n]`, that `reply n`
takes.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import mimetypes
import queue
import re
import shutil
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from aico.fakes.signing import new_trigger_id
from aico.procfile import ProcessGroup

EXAMPLE = "/aico task write a haiku about queues"
USER, USER_NAME = "U0DEV", "you"
CHANNEL, CHANNEL_NAME = "C0DEV", "dev"
BOT_NAME = "aico"
MAX_LINES = 40  # lines of one message shown before the rest is cut
LABEL_CHARS = 40  # characters of a parent's first line used to name its thread
MAX_ATTACH_BYTES = 100 * 1024 * 1024  # what `attach` reads: the file is held in memory
_MENTION = re.compile(r"(?<![\w<@])@aico\b", re.IGNORECASE)
_TS = re.compile(r"\d+\.\d+")


def exited(group: ProcessGroup) -> dict[str, int]:
    return {n: p.returncode for n, p in group.processes.items() if p.poll() is not None}


def describe_exits(group: ProcessGroup, dead: dict[str, int]) -> str:
    which = ", ".join(f"{name} (code {code})" for name, code in dead.items())
    return f"{which} exited early{tails(group, list(dead))}"


def tails(group: ProcessGroup, names: list[str] | None = None, lines: int = 20) -> str:
    """The last lines of the processes' logs, when they log to files."""
    if group.log_dir is None:
        return ""
    parts = []
    for name in names or list(group.commands):
        text = "\n".join(group.log(name).splitlines()[-lines:])
        parts.append(f"\n--- {group.log_dir / (name + '.log')} (last lines)\n{text}")
    return "".join(parts)


# --------------------------------------------------------------------------- output


class Output:
    """Whole lines to the terminal, from any thread, flushed at once.

    While a command is in flight, messages are held and shown after its ack; at an interactive
    prompt, a message is printed above the prompt and the half-typed line is redrawn.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.prompt = ""  # shown and waiting for input when not empty
        self._lock = threading.RLock()
        self._held: list[str] | None = None

    def say(self, text: str) -> None:
        self.show(text.split("\n"), hold=False)

    def show(self, lines: list[str], hold: bool = True) -> None:
        with self._lock:
            if hold and self._held is not None:
                self._held.extend(lines)
                return
            self._write(lines)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        with self._lock:
            self._held = []
        try:
            yield
        finally:
            with self._lock:
                held, self._held = self._held or [], None
                if held:
                    self._write(held)

    def _write(self, lines: list[str]) -> None:
        text = "\n".join(lines) + "\n"
        if self.prompt:
            text = "\r\033[K" + text + self.prompt + _line_buffer()
        self.stream.write(text)
        self.stream.flush()


def _line_buffer() -> str:
    readline = sys.modules.get("readline")
    return readline.get_line_buffer() if readline else ""


# --------------------------------------------------------------------------- the console

CONSOLE_HELP = f"""\
This console stands in for Slack: you are @{USER_NAME} in #{CHANNEL_NAME}.
  /aico task <what to do>   hand a task to aico; the answer comes in the task's thread
  /aico help                what the bot itself can do
  @aico <what to do>        mention aico in #{CHANNEL_NAME}: answered in your message's thread
  reply <n|ts> <text>       reply in the thread of message [n] (start with @aico to mention it)
  dm <text>                 a direct message to aico (its Messages tab)
  attach <path> [text]      mention aico with a local file attached (its type guessed)
  press <n|label>           press a button: by number on the last message with buttons, or by
                            its label (Cancel, Retry, Stop, Confirm, Approve, Plan it, …)
  good, bad                 the feedback buttons of the last answer
  stop                      the stop button of the last thread whose session is processing
  help                      this text
  quit, exit, Ctrl-D        stop everything (Ctrl-C too)
Slash commands, messages and clicks are signed and posted to the bot exactly as Slack posts them.
Messages show a number, `[n] #{CHANNEL_NAME}  aico: …`, replies in a thread `↳`, a reply being
written `✍`, edits `✎`, answers only you can see `(only visible to you)`, buttons `[1] Cancel`."""


class Console:
    """Reads lines from stdin (a terminal or a pipe) and plays Slack for the bot."""

    def __init__(
        self,
        out: Output,
        slack: Any,
        sender_class: type,
        env: dict[str, str],
        group: ProcessGroup,
        data_dir: Path,
    ) -> None:
        self.out = out
        self.slack = slack
        self.group = group
        url = f"http://127.0.0.1:{env['PORT']}/slack/events"
        secret = env["SLACK_SIGNING_SECRET"]
        self.sender = sender_class(url, secret)
        self.pump = EventPump(sender_class(url, secret), out, self._bot_log())
        self.view = ChannelView(out, slack, data_dir / "files")
        self.interactive = sys.stdin.isatty()
        self._stopping = threading.Event()
        self._verbs: dict[str, Callable[[str], None]] = {
            "help": lambda _: self.out.say(CONSOLE_HELP),
            "reply": self.reply,
            "dm": self.dm,
            "attach": self.attach,
            "press": self.press,
            "good": lambda _: self.feedback(positive=True),
            "bad": lambda _: self.feedback(positive=False),
            "stop": lambda _: self.stop(),
        }

    def run(self) -> int:
        self.slack.on_change.append(self.view.on_change)
        self.slack.on_event.append(self.pump.put)
        self.pump.start()
        threading.Thread(target=self._watch, name="dev-watch", daemon=True).start()
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (line editing and history for input())
        try:
            while (line := self._read()) is not None and self.handle(line.strip()):
                pass
        finally:
            self._stopping.set()
            self.slack.on_event.remove(self.pump.put)
            self.pump.close()
            self.sender.close()
        return 0

    def _read(self) -> str | None:
        """The next line, or None at the end of input."""
        if self.interactive:
            self.out.prompt = "> "
            try:
                return input("> ")
            except EOFError:
                self.out.say("")
                return None
            finally:
                self.out.prompt = ""
        line = sys.stdin.readline()
        if line.strip():  # a pipe does not echo: show what was typed, as a terminal would
            self.out.say(f"> {line.rstrip()}")
        return line or None

    def handle(self, line: str) -> bool:
        """Act on one line; False when the console should stop."""
        word, _, rest = line.partition(" ")
        if word in ("quit", "exit"):
            return False
        if word == "/aico":
            self.command(rest.strip())
        elif _MENTION.match(line):
            self.say(CHANNEL, line)
        elif word in self._verbs:
            self._verbs[word](rest.strip())
        elif word.startswith("/"):
            self.out.say(f"Only /aico is installed in this workspace. {EXAMPLE}")
        elif word:
            self.out.say(f"Type a slash command or @aico …, e.g.  {EXAMPLE}  (`help` lists all)")
        return True

    # ---- what a person can do

    def command(self, text: str) -> None:
        """Post `/aico text` as Slack would and show the ack, then what it caused."""
        response_url = self.slack.new_response_url(channel=CHANNEL)
        with self.out.holding():
            try:
                status, body, _ = self.sender.command(text, **self._fields(response_url))
            except (OSError, http.client.HTTPException) as exc:
                self.out.say(f"The bot did not answer ({exc!r}); see {self._bot_log()}")
                return
            self.out.say("\n".join(self.view.ack(status, body)))

    def say(
        self,
        channel: str,
        typed: str,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> None:
        """Post what the person typed as their message (Slack's events go to the bot), and show
        it before anything the bot does about it."""
        text = slack_text(typed, self.slack.bot_user_id)
        with self.out.holding(), self.pump.gate:
            bodies = self.slack.user_posts(
                channel, text, user=USER, thread_ts=thread_ts, files=files
            )
            if not bodies:
                self.out.say(f"(aico does not hear {channel}: nothing was sent to it)")
                return
            self.out.say("\n".join(self.view.said(channel, bodies[0]["event"])))

    def reply(self, rest: str) -> None:
        ref, _, text = rest.partition(" ")
        if not ref or not text.strip():
            self.out.say("reply <n|ts> <text>: n is the [n] shown before a message")
            return
        target = self.view.thread(ref)
        if target is None:
            self.out.say(f"No message [{ref}] is shown: reply takes the [n] before a message")
            return
        self.say(target[0], text.strip(), thread_ts=target[1])

    def dm(self, text: str) -> None:
        if not text:
            self.out.say("dm <text>: a direct message to aico")
            return
        self.say(self.slack.dm_channel(USER), text)

    def attach(self, rest: str) -> None:
        """Upload a local file as the person, and mention aico with it (a file_share)."""
        path, text = split_path(rest)
        if not path:
            self.out.say("attach <path> [text]: mention aico with a local file attached")
            return
        try:
            content = read_attachment(Path(path).expanduser())
        except (OSError, ValueError) as exc:
            self.out.say(f"Cannot attach {path}: {getattr(exc, 'strerror', None) or exc}")
            return
        name = Path(path).name
        record = self.slack.add_file(CHANNEL, name, guess_mimetype(name, content), content, USER)
        self.say(CHANNEL, f"@aico {text}".rstrip(), files=[record])

    def press(self, wanted: str) -> None:
        if not wanted:
            self.out.say("press <n|label>: a button of the last message that has buttons")
            return
        found = self.view.find_button(wanted)
        if isinstance(found, str):
            self.out.say(found)
            return
        channel, ts, button = found
        message = self.slack.message(channel, ts)
        if message is None:
            self.out.say("That message is gone.")
            return
        payload = button_payload(
            message,
            channel,
            button,
            team_id=self.slack.team_id,
            api_app_id=self.slack.app_id,
            response_url=self.slack.new_response_url(channel, ts),
        )
        self._act(payload, f"(you pressed {button.label} on {self.view.name(channel, ts)})")

    def feedback(self, positive: bool) -> None:
        found = self.view.last_answer()
        if found is None:
            self.out.say("No answer with feedback buttons is shown yet.")
            return
        payload = self.slack.feedback_click(*found, user=USER, positive=positive)
        rating = "good" if positive else "bad"
        self._act(payload, f"(you rated {self.view.name(*found)} as a {rating} answer)")

    def stop(self) -> None:
        found = self.view.processing_thread()
        if found is None:
            self.out.say("No thread's session is processing: there is no stop button to press.")
            return
        with self.out.holding():
            try:
                self.slack.press_stop(*found, user=USER)
            except ValueError as exc:
                self.out.say(f"({exc})")
                return
            self.out.say(f"(you pressed the stop button of {self.view.thread_name(*found)})")

    def _act(self, payload: dict[str, Any], said: str) -> None:
        """Post a block_actions click as Slack would; show what was pressed, then the ack."""
        with self.out.holding():
            self.out.say(said)
            try:
                status, body, _ = self.sender.action(payload)
            except (OSError, http.client.HTTPException) as exc:
                self.out.say(f"The bot did not answer ({exc!r}); see {self._bot_log()}")
                return
            if lines := self.view.ack(status, body):
                self.out.say("\n".join(lines))

    def _fields(self, response_url: str) -> dict[str, str]:
        return {
            "user_id": USER,
            "user_name": USER_NAME,
            "channel_id": CHANNEL,
            "channel_name": CHANNEL_NAME,
            "team_id": self.slack.team_id,
            "team_domain": self.slack.team_domain,
            "api_app_id": self.slack.app_id,
            "response_url": response_url,
        }

    def _bot_log(self) -> Path:
        return (self.group.log_dir or Path(".")) / "bot.log"

    def _watch(self) -> None:
        """Say so when a process dies while the console runs (once per process)."""
        told: set[str] = set()
        while not self._stopping.wait(0.5):
            dead = {n: c for n, c in exited(self.group).items() if n not in told}
            if dead and not self._stopping.is_set():
                told.update(dead)
                self.out.say(f"aico dev: {describe_exits(self.group, dead)}")


class EventPump:
    """Slack's Events API for the console: each body the fake Slack has for the app (a person's
    message, the app's own posts, the stop button) is posted to the bot signed, one at a time
    and in order, from a thread of its own, as Slack posts them. `gate` holds deliveries back
    while the console shows what the person just posted, so the bot's answer never comes first."""

    def __init__(self, sender: Any, out: Output, bot_log: Path) -> None:
        self.sender, self.out, self.bot_log = sender, out, bot_log
        self.gate = threading.Lock()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="dev-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, body: dict[str, Any]) -> None:
        self._queue.put(body)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (within `timeout`), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)
        self.sender.close()

    def _run(self) -> None:
        while (body := self._queue.get()) is not None:
            with self.gate:
                self._deliver(body)

    def _deliver(self, body: dict[str, Any]) -> None:
        kind = str((body.get("event") or {}).get("type") or "an event")
        try:
            status, text, _ = self.sender.event(body)
        except (OSError, http.client.HTTPException) as exc:
            self.out.say(f"Slack could not deliver {kind} to the bot ({exc!r}); see {self.bot_log}")
            return
        if status != 200:
            self.out.say(f"The bot answered {kind} with HTTP {status}: {text[:200]}")


def slack_text(typed: str, bot_user_id: str) -> str:
    """What Slack sends of what a person typed: `&`, `<` and `>` escaped, `@aico` a mention."""
    escaped = typed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION.sub(f"<@{bot_user_id}>", escaped)


def split_path(rest: str) -> tuple[str, str]:
    """`attach`'s path (in quotes when it has spaces) and the text after it."""
    if rest[:1] in ("'", '"') and (end := rest.find(rest[0], 1)) > 0:
        return rest[1:end], rest[end + 1 :].strip()
    path, _, text = rest.partition(" ")
    return path, text.strip()


def read_attachment(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_ATTACH_BYTES:
        raise ValueError(f"{size:,} bytes; the console attaches up to {MAX_ATTACH_BYTES:,}")
    return path.read_bytes()


def guess_mimetype(name: str, content: bytes) -> str:
    """The file's type from its name, as Slack guesses it; text/plain for other UTF-8 text."""
    guessed = mimetypes.guess_type(name)[0]
    if guessed:
        return guessed
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain"


# --------------------------------------------------------------------------- rendering

_EMOJI = {
    "inbox_tray": "📥",
    "hourglass_flowing_sand": "⏳",
    "gear": "⚙️",
    "white_check_mark": "✅",
    "x": "❌",
    "no_entry_sign": "🚫",
    "no_entry": "⛔",
    "warning": "⚠️",
    "boom": "💥",
    "rotating_light": "🚨",
    "tada": "🎉",
    "repeat": "🔁",
    "recycle": "♻️",
    "writing_hand": "✍️",
    "brain": "🧠",
    "raised_hand": "✋",
    "skull": "💀",
    "rocket": "🚀",
}
_TOKEN = re.compile(r"<([@#!])([^>|]+)(?:\|([^>]*))?>|<((?:https?|mailto):[^>|]+)(?:\|([^>]*))?>")
_EMOJI_CODE = re.compile(r":([a-z0-9_+-]+):")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")
# A task card's status (Block Kit: pending, in_progress, complete, error) as a checklist mark.
_CARD_MARKS = {"pending": "[ ]", "in_progress": "[~]", "complete": "[x]", "error": "[!]"}
PRESSABLE = ("button", "icon_button")


@dataclass(frozen=True)
class Button:
    """A button a person can press on a message, named as its block_actions action names it."""

    label: str
    action_id: str
    block_id: str
    value: str | None
    kind: str = "button"


def render(message: dict[str, Any], stream: bool = False) -> str:
    """What Slack shows of a message, as mrkdwn: its blocks, else its fallback text; a
    stream's text and then its blocks (Slack shows a stream's blocks under it). Buttons are
    numbered in the order `press` counts them."""
    numbers = itertools.count(1)
    blocks = message.get("blocks") or []
    parts = [text for block in blocks if (text := _block_text(block, numbers))]
    text = str(message.get("text") or "")
    if stream:
        return "\n".join(filter(None, [text, *parts]))
    return "\n".join(parts) if parts else text


def _block_text(block: Any, numbers: Iterator[int]) -> str:
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind in ("section", "header"):
        texts = [block.get("text") or {}, *(block.get("fields") or [])]
        text = "\n".join(t.get("text", "") for t in texts if isinstance(t, dict) and t.get("text"))
        return " ".join(filter(None, [text, *_buttons_text(block, numbers)]))
    if kind == "context":
        elements = block.get("elements") or []
        return " ".join(e.get("text", "") for e in elements if isinstance(e, dict))
    if kind in ("actions", "context_actions"):
        return "  ".join([*_feedback_text(block), *_buttons_text(block, numbers)])
    if kind == "plan":
        cards = [card_line(c) for c in block.get("tasks") or [] if isinstance(c, dict)]
        return "\n".join([f"📋 {block.get('title') or 'Plan'}", *cards])
    if kind == "task_card":
        return card_line(block)
    if kind == "rich_text":
        return "\n".join(rich_text(e) for e in block.get("elements") or [])
    if kind == "markdown":
        return str(block.get("text") or "")
    return "───" if kind == "divider" else ""


def _elements(block: dict[str, Any]) -> list[Any]:
    """The elements of a block that may hold buttons, in the order Slack shows them."""
    if block.get("type") in ("actions", "context_actions"):
        return list(block.get("elements") or [])
    return [block["accessory"]] if isinstance(block.get("accessory"), dict) else []


def _buttons_text(block: dict[str, Any], numbers: Iterator[int]) -> list[str]:
    return [
        f"[{next(numbers)}] {_label(e)}"
        for e in _elements(block)
        if isinstance(e, dict) and e.get("type") in PRESSABLE
    ]


def _feedback_text(block: dict[str, Any]) -> list[str]:
    return [
        f"👍 {_label(e.get('positive_button'))} · 👎 {_label(e.get('negative_button'))}"
        " (type good or bad)"
        for e in _elements(block)
        if isinstance(e, dict) and e.get("type") == "feedback_buttons"
    ]


def _label(element: Any) -> str:
    text = element.get("text") if isinstance(element, dict) else None
    return str(text.get("text") or "") if isinstance(text, dict) else str(text or "")


def buttons_of(message: dict[str, Any]) -> tuple[Button, ...]:
    """The message's buttons, in the order `render` numbers them."""
    found = []
    for index, block in enumerate(message.get("blocks") or []):
        if not isinstance(block, dict):
            continue
        block_id = str(block.get("block_id") or f"b{index}")
        for element in _elements(block):
            if isinstance(element, dict) and element.get("type") in PRESSABLE:
                action_id, value = str(element.get("action_id") or ""), element.get("value")
                label = _label(element)
                found.append(Button(label, action_id, block_id, value, str(element["type"])))
    return tuple(found)


def has_feedback(message: dict[str, Any]) -> bool:
    return any(
        isinstance(e, dict) and e.get("type") == "feedback_buttons"
        for block in message.get("blocks") or []
        if isinstance(block, dict)
        for e in _elements(block)
    )


def card_line(card: dict[str, Any]) -> str:
    """A task card as a checklist line: its mark, title, status and details."""
    status = str(card.get("status") or "pending")
    line = f"  {_CARD_MARKS.get(status, '[?]')} {card.get('title') or ''} — "
    line += status.replace("_", " ")
    details = card.get("details")
    return f"{line} · {rich_text(details)}" if isinstance(details, dict) else line


def rich_text(element: Any) -> str:
    """The text of a rich_text element (sections, lists, quotes, text, links, mentions)."""
    if isinstance(element, list):
        return "".join(rich_text(e) for e in element)
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind == "text":
        return str(element.get("text") or "")
    if kind == "link":
        return str(element.get("text") or element.get("url") or "")
    if kind == "user":
        return f"<@{element.get('user_id')}>"
    if kind == "emoji":
        return f":{element.get('name')}:"
    if kind == "rich_text":
        return "\n".join(rich_text(e) for e in element.get("elements") or [])
    return rich_text(element.get("elements") or [])


def button_payload(
    message: dict[str, Any],
    channel: str,
    button: Button,
    *,
    user: str = USER,
    team_id: str,
    api_app_id: str,
    response_url: str,
) -> dict[str, Any]:
    """The block_actions payload Slack posts when `user` presses `button` on `message`
    (shaped as payloads/block_actions.json)."""
    action: dict[str, Any] = {
        "type": button.kind,
        "action_id": button.action_id,
        "block_id": button.block_id,
        "text": {"type": "plain_text", "text": button.label},
        "action_ts": f"{time.time():.6f}",
    }
    if button.value is not None:
        action["value"] = button.value
    container = {
        "type": "message",
        "message_ts": message["ts"],
        "channel_id": channel,
        "is_ephemeral": False,
        **({"thread_ts": message["thread_ts"]} if message.get("thread_ts") else {}),
    }
    return {
        "type": "block_actions",
        "user": {"id": user, "username": USER_NAME, "team_id": team_id},
        "api_app_id": api_app_id,
        "container": container,
        "trigger_id": new_trigger_id(),
        "team": {"id": team_id},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel},
        "message": {k: v for k, v in message.items() if k not in ("history", "metadata")},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }


def display(mrkdwn: str, people: dict[str, str] | None = None) -> str:
    """mrkdwn as a terminal shows it: mentions (by name where `people` knows them), links,
    emoji, quotes, bold; entities undone."""
    names = {USER: USER_NAME, **(people or {})}
    text = _TOKEN.sub(lambda match: _token(match, names), mrkdwn)
    text = _EMOJI_CODE.sub(lambda m: _EMOJI.get(m.group(1), m.group(0)), text)
    text = _BOLD.sub(r"\1", text)
    text = re.sub(r"(?m)^>", "│ ", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _token(match: re.Match[str], names: dict[str, str]) -> str:
    sigil, target, label, url, url_label = match.groups()
    if url:
        return f"{url_label} ({url})" if url_label else url
    if sigil == "@":
        return "@" + (label or names.get(target, target))
    if sigil == "#":
        return "#" + (label or (CHANNEL_NAME if target == CHANNEL else target))
    return "@" + (label or target)  # <!here>, <!channel>


def layout(head: str, text: str, indent: str, width: int, max_lines: int = MAX_LINES) -> list[str]:
    """`head` then the text, wrapped to `width`, cut after `max_lines` lines with a note."""
    lines: list[str] = []
    for number, line in enumerate(text.split("\n")):
        first = head if number == 0 else indent
        wrapped = textwrap.wrap(
            line, width, initial_indent=first, subsequent_indent=indent, break_on_hyphens=False
        )
        lines.extend(wrapped or [first.rstrip()])
    if len(lines) > max_lines:
        hidden = len(lines) - max_lines
        lines = [*lines[:max_lines], f"{indent}… {hidden} more line(s) not shown"]
    return lines


def terminal_width() -> int:
    return max(60, shutil.get_terminal_size((100, 24)).columns - 1)


# --------------------------------------------------------------------------- the channel


@dataclass(frozen=True)
class _Shown:
    """A message the console has shown: what `reply`, `press`, `good` and `bad` act on."""

    channel: str
    ts: str
    text: str
    label: str
    number: int = 0  # a top-level message's [n], which `reply n` takes; 0 for a reply
    thread_ts: str = ""  # a reply's thread
    buttons: tuple[Button, ...] = ()
    feedback: bool = False
    streamed: int = 0  # characters of a stream shown so far
    seen: int = 0  # when it was last shown: the latest with buttons is what `press` acts on


class ChannelView:
    """Turns FakeSlack's changes into the lines a person would see in the channel, and
    remembers what was shown for what the person does next."""

    def __init__(self, out: Output, slack: Any, files_dir: Path) -> None:
        self.out = out
        self.slack = slack
        self.files_dir = files_dir
        self.people = {USER: USER_NAME, str(slack.bot_user_id): BOT_NAME}
        self._shown: dict[tuple[str, str], _Shown] = {}
        self._sessions: dict[tuple[str, str], tuple[str, int]] = {}  # thread: (status, seen)
        self._numbers = itertools.count(1)
        self._clock = itertools.count(1)
        self._lock = threading.Lock()

    def on_change(self, kind: str, channel: str, message: dict[str, Any]) -> None:
        render_change = getattr(self, f"_{kind}", None)
        if render_change is None:
            return
        with self._lock:
            lines = render_change(channel, message)
        if lines:
            self.out.show(lines)

    def ack(self, status: int, body: str) -> list[str]:
        """The command's HTTP answer as Slack shows the ack (only to the one who typed it)."""
        if status != 200:
            return [f"(only visible to you) the bot answered HTTP {status}: {body[:200]}"]
        try:
            answer = json.loads(body) if body.strip() else {}
        except ValueError:
            answer = {"text": body}
        if not isinstance(answer, dict) or not (answer.get("text") or answer.get("blocks")):
            return []
        return self._ephemeral(CHANNEL, answer)

    def said(self, channel: str, event: dict[str, Any]) -> list[str]:
        """The person's own message (its Events API `event`), as the channel shows it."""
        shared = [
            f"you shared a file {f.get('name')} ({int(f.get('size') or 0):,} bytes, "
            f"{f.get('mimetype')})"
            for f in event.get("files") or []
        ]
        text = "\n".join(
            filter(None, [display(str(event.get("text") or ""), self.people), *shared])
        )
        with self._lock:
            return self._lines(self._remember(channel, event, text), USER_NAME)

    # ---- what the person acts on

    def thread(self, ref: str) -> tuple[str, str] | None:
        """(channel, thread ts) of the message `[ref]` (or of the message whose ts is `ref`)."""
        with self._lock:
            shown = [s for s in self._shown.values() if ref in (str(s.number or ""), s.ts)]
        if shown:
            return shown[0].channel, shown[0].thread_ts or shown[0].ts
        return (CHANNEL, ref) if _TS.fullmatch(ref) else None

    def find_button(self, wanted: str) -> tuple[str, str, Button] | str:
        """(channel, ts, button) for `press wanted`: by number on the last message that has
        buttons, or by label (whole, else its start) on the latest message that has it; else
        what to tell the person."""
        with self._lock:
            pressable = sorted((s for s in self._shown.values() if s.buttons), key=_seen)
        if not pressable:
            return "No message shown has buttons to press."
        last = pressable[-1]
        if wanted.isdigit():
            if 1 <= int(wanted) <= len(last.buttons):
                return last.channel, last.ts, last.buttons[int(wanted) - 1]
            return f"The last message with buttons has {_choices(last)}."
        for matches in (str.__eq__, str.startswith):
            for shown in reversed(pressable):
                for button in shown.buttons:
                    if matches(button.label.lower(), wanted.lower()):
                        return shown.channel, shown.ts, button
        return f"No button {wanted!r} is shown; the last message with buttons has {_choices(last)}."

    def last_answer(self) -> tuple[str, str] | None:
        """(channel, ts) of the latest message shown with feedback buttons."""
        with self._lock:
            answers = sorted((s for s in self._shown.values() if s.feedback), key=_seen)
        return (answers[-1].channel, answers[-1].ts) if answers else None

    def processing_thread(self) -> tuple[str, str] | None:
        """(channel, thread ts) of the thread whose session went processing last, if it is."""
        with self._lock:
            busy = [
                (seen, t) for t, (status, seen) in self._sessions.items() if status == "processing"
            ]
        return max(busy)[1] if busy else None

    def name(self, channel: str, ts: str) -> str:
        with self._lock:
            shown = self._shown.get((channel, ts))
            return self._name(shown) if shown else ts

    def thread_name(self, channel: str, thread_ts: str) -> str:
        with self._lock:
            return self._thread_name(channel, thread_ts)

    # ---- FakeSlack's changes (called with the lock held)

    def _posted(self, channel: str, message: dict[str, Any]) -> list[str]:
        stream = bool(message.get("streaming"))
        text = "\n".join(filter(None, [self._display(message, stream), *self._files(message)]))
        shown = self._remember(channel, message, text, len(str(message.get("text") or "")))
        return self._lines(shown, f"{BOT_NAME} is writing" if stream else BOT_NAME)

    def _streamed(self, channel: str, message: dict[str, Any]) -> list[str]:
        """A stream grew (its new text is shown), or ended: stopped with what goes under the
        answer (the finished message is shown), or ended without it (Slack ended it, or aico
        goes on by editing it)."""
        before = self._shown.get((channel, message["ts"]))
        text = str(message.get("text") or "")
        sent = before.streamed if before else 0
        new = display(text[sent:], self.people).strip()
        if message.get("blocks") and not message.get("streaming"):
            shown = self._remember(channel, message, self._display(message, True), len(text))
            return self._lines(shown, BOT_NAME)
        if before is not None:
            self._shown[(channel, message["ts"])] = replace(before, streamed=len(text))
        lines = layout("      ✍ ", new, "        ", terminal_width()) if new else []
        return lines if message.get("streaming") else [*lines, "      (the stream ended)"]

    def _updated(self, channel: str, message: dict[str, Any]) -> list[str]:
        text = self._display(message, False)
        before = self._shown.get((channel, message["ts"]))
        self._remember(channel, message, text)
        old = set(before.text.split("\n")) if before else set()
        changed = "\n".join(line for line in text.split("\n") if line not in old)
        if not changed:
            return []
        name = f" [{self._name(before)}]" if before and before.label not in changed else ""
        return layout(f"  ✎ updated{name}: ", changed, "      ", terminal_width())

    def _deleted(self, channel: str, message: dict[str, Any]) -> list[str]:
        gone = self._shown.pop((channel, message["ts"]), None)
        return [f"  ✗ deleted: {gone.label if gone else message['ts']}"]

    def _ephemeral(self, channel: str, message: dict[str, Any]) -> list[str]:
        text = self._display(message, False)
        return layout("(only visible to you) aico: ", text, "    ", terminal_width())

    def _status(self, channel: str, message: dict[str, Any]) -> list[str]:
        status = str(message.get("status") or "")
        where = self._thread_name(channel, str(message.get("thread_ts")))
        return [f"  ⋯ [{where}] aico {status}"] if status else []

    def _session(self, channel: str, session: dict[str, Any]) -> list[str]:
        """An agent session's status; shown when it changes."""
        thread = (channel, str(session.get("thread_ts")))
        status = str(session.get("status") or "")
        before = self._sessions.get(thread)
        self._sessions[thread] = (status, next(self._clock))
        if before is not None and before[0] == status:
            return []
        hint = " (`stop` presses its stop button)" if status == "processing" else ""
        return [f"  ⋯ [{self._thread_name(*thread)}] aico's session is {status}{hint}"]

    # ---- helpers (the lock held)

    def _remember(
        self, channel: str, message: dict[str, Any], text: str, streamed: int = 0
    ) -> _Shown:
        key = (channel, str(message["ts"]))
        before = self._shown.get(key)
        thread = str(message.get("thread_ts") or "")
        thread = "" if thread == key[1] else thread
        number = before.number if before else (0 if thread else next(self._numbers))
        shown = _Shown(
            channel,
            key[1],
            text,
            _first_line(text),
            number,
            thread,
            buttons_of(message),
            has_feedback(message),
            streamed,
            next(self._clock),
        )
        self._shown[key] = shown
        return shown

    def _display(self, message: dict[str, Any], stream: bool) -> str:
        return display(render(message, stream), self.people)

    def _lines(self, shown: _Shown, who: str) -> list[str]:
        if shown.thread_ts:
            head = f"  ↳ [{self._thread_name(shown.channel, shown.thread_ts)}] {who}: "
            return layout(head, shown.text, "      ", terminal_width())
        head = f"[{shown.number}] {_channel_name(shown.channel)}  {who}: "
        return layout(head, shown.text, "    ", terminal_width())

    def _name(self, shown: _Shown) -> str:
        return f"{shown.number}: {shown.label}" if shown.number else shown.label

    def _thread_name(self, channel: str, thread_ts: str) -> str:
        parent = self._shown.get((channel, thread_ts))
        return f"thread {self._name(parent)}" if parent else f"thread {thread_ts}"

    def _files(self, message: dict[str, Any]) -> list[str]:
        lines = []
        for record in message.get("files") or []:
            name, size = record.get("name", "file"), int(record.get("size") or 0)
            saved = self._save(record)
            where = f"; a copy is in {saved}" if saved else ""
            lines.append(f"aico shared a file {name} ({size:,} bytes{where})")
        return lines

    def _save(self, record: dict[str, Any]) -> Path | None:
        """Keep a copy of a shared file so that the person can read it all."""
        content = self.slack.file_content(record.get("id", ""))
        if content is None:
            return None
        self.files_dir.mkdir(parents=True, exist_ok=True)
        path = self.files_dir / f"{record['id']}-{Path(record.get('name') or 'file').name}"
        path.write_bytes(content)
        return path


def _seen(shown: _Shown) -> int:
    return shown.seen


def _choices(shown: _Shown) -> str:
    labels = " ".join(f"[{i}] {b.label}" for i, b in enumerate(shown.buttons, 1))
    return f"{labels} ({shown.label})"


def _first_line(text: str) -> str:
    line = text.split("\n", 1)[0].strip()
    return line if len(line) <= LABEL_CHARS else line[: LABEL_CHARS - 1] + "…"


def _channel_name(channel: str) -> str:
    if channel[:1] == "D":
        return "DM"
    return f"#{CHANNEL_NAME}" if channel == CHANNEL else f"#{channel}"
