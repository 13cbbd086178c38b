"""The console of `aico dev`: what a person types, and the channel as Slack would show it."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from aico.procfile import ProcessGroup

EXAMPLE = "/aico task write a haiku about queues"
USER, USER_NAME = "U0DEV", "you"
CHANNEL, CHANNEL_NAME = "C0DEV", "dev"
MAX_LINES = 40  # lines of one message shown before the rest is cut
LABEL_CHARS = 40  # characters of a parent's first line used to name its thread


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
  help                      this text
  quit, exit, Ctrl-D        stop everything (Ctrl-C too)
Lines starting with /aico are signed and posted to the bot exactly as Slack posts them.
Messages in #{CHANNEL_NAME} show as `#{CHANNEL_NAME}  aico: …`, replies in a thread as `↳`, edits
as `✎`, answers only you can see as `(only visible to you)`."""


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
        self.sender = sender_class(url, env["SLACK_SIGNING_SECRET"])
        self.view = ChannelView(out, slack, data_dir / "files")
        self.interactive = sys.stdin.isatty()
        self._stopping = threading.Event()

    def run(self) -> int:
        self.slack.on_change.append(self.view.on_change)
        threading.Thread(target=self._watch, name="dev-watch", daemon=True).start()
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (line editing and history for input())
        try:
            while (line := self._read()) is not None and self.handle(line.strip()):
                pass
        finally:
            self._stopping.set()
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
        word = line.split(maxsplit=1)[0] if line else ""
        if word in ("quit", "exit"):
            return False
        if word == "/aico":
            self.command(line.removeprefix("/aico").strip())
        elif word == "help":
            self.out.say(CONSOLE_HELP)
        elif word.startswith("/"):
            self.out.say(f"Only /aico is installed in this workspace. {EXAMPLE}")
        elif word:
            self.out.say(f"Type a slash command, e.g.  {EXAMPLE}  (or `help`)")
        return True

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


# --------------------------------------------------------------------------- rendering

_EMOJI = {
    "inbox_tray": "📥",
    "hourglass_flowing_sand": "⏳",
    "gear": "⚙️",
    "white_check_mark": "✅",
    "x": "❌",
    "no_entry_sign": "🚫",
    "warning": "⚠️",
    "boom": "💥",
    "rotating_light": "🚨",
    "tada": "🎉",
}
_TOKEN = re.compile(r"<([@#!])([^>|]+)(?:\|([^>]*))?>|<((?:https?|mailto):[^>|]+)(?:\|([^>]*))?>")
_EMOJI_CODE = re.compile(r":([a-z0-9_+-]+):")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")


def blocks_text(message: dict[str, Any]) -> str:
    """What Slack shows of a message: its sections and contexts, else the fallback text."""
    parts = [text for block in message.get("blocks") or [] if (text := _block_text(block))]
    return "\n".join(parts) if parts else str(message.get("text") or "")


def _block_text(block: Any) -> str:
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind in ("section", "header"):
        texts = [block.get("text") or {}, *(block.get("fields") or [])]
        return "\n".join(t.get("text", "") for t in texts if isinstance(t, dict) and t.get("text"))
    if kind == "context":
        elements = block.get("elements") or []
        return " ".join(e.get("text", "") for e in elements if isinstance(e, dict))
    return "───" if kind == "divider" else ""


def display(mrkdwn: str) -> str:
    """mrkdwn as a terminal shows it: mentions, links, emoji, quotes, bold; entities undone."""
    text = _TOKEN.sub(_token, mrkdwn)
    text = _EMOJI_CODE.sub(lambda m: _EMOJI.get(m.group(1), m.group(0)), text)
    text = _BOLD.sub(r"\1", text)
    text = re.sub(r"(?m)^>", "│ ", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _token(match: re.Match[str]) -> str:
    sigil, target, label, url, url_label = match.groups()
    if url:
        return f"{url_label} ({url})" if url_label else url
    if sigil == "@":
        return "@" + (label or (USER_NAME if target == USER else target))
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


@dataclass
class _Shown:
    text: str
    label: str


class ChannelView:
    """Turns FakeSlack's changes into the lines a person would see in the channel."""

    def __init__(self, out: Output, slack: Any, files_dir: Path) -> None:
        self.out = out
        self.slack = slack
        self.files_dir = files_dir
        self._shown: dict[tuple[str, str], _Shown] = {}
        self._lock = threading.Lock()

    def on_change(self, kind: str, channel: str, message: dict[str, Any]) -> None:
        render = getattr(self, f"_{kind}", None)
        if render is None:
            return
        with self._lock:
            lines = render(channel, message)
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

    def _posted(self, channel: str, message: dict[str, Any]) -> list[str]:
        text = "\n".join(filter(None, [display(blocks_text(message)), *self._files(message)]))
        self._shown[(channel, message["ts"])] = _Shown(text, _first_line(text))
        thread = message.get("thread_ts")
        if thread and thread != message["ts"]:
            parent = self._shown.get((channel, thread))
            head = f"  ↳ [thread of {parent.label if parent else thread}] aico: "
            return layout(head, text, "      ", terminal_width())
        return layout(f"{_channel_name(channel)}  aico: ", text, "    ", terminal_width())

    def _updated(self, channel: str, message: dict[str, Any]) -> list[str]:
        text = display(blocks_text(message))
        before = self._shown.get((channel, message["ts"]))
        self._shown[(channel, message["ts"])] = _Shown(text, _first_line(text))
        old = set(before.text.split("\n")) if before else set()
        changed = "\n".join(line for line in text.split("\n") if line not in old)
        if not changed:
            return []
        name = f" [{before.label}]" if before and before.label not in changed else ""
        return layout(f"  ✎ updated{name}: ", changed, "      ", terminal_width())

    def _deleted(self, channel: str, message: dict[str, Any]) -> list[str]:
        gone = self._shown.pop((channel, message["ts"]), None)
        return [f"  ✗ deleted: {gone.label if gone else message['ts']}"]

    def _ephemeral(self, channel: str, message: dict[str, Any]) -> list[str]:
        text = display(blocks_text(message))
        return layout("(only visible to you) aico: ", text, "    ", terminal_width())

    def _status(self, channel: str, message: dict[str, Any]) -> list[str]:
        status = str(message.get("status") or "")
        parent = self._shown.get((channel, str(message.get("thread_ts"))))
        where = f"[thread of {parent.label}] " if parent else ""
        return [f"  ⋯ {where}aico {status}"] if status else []

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


def _first_line(text: str) -> str:
    line = text.split("\n", 1)[0].strip()
    return line if len(line) <= LABEL_CHARS else line[: LABEL_CHARS - 1] + "…"


def _channel_name(channel: str) -> str:
    return f"#{CHANNEL_NAME}" if channel == CHANNEL else f"#{channel}"
