"""`aico dev` end to end: the real command in a subprocess, driven through its stdin and stdout.

Given no Slack or Anthropic settings, when a person types `/aico …` into the console, then they
see the ack, the parent message and the answer streaming in its thread as Slack would show them,
from the offline model; with no broker at AICO_AMQP_URL, dev starts a node of its own and stops
it on quit. A mention, a reply, a DM and an attached file reach the bot as Slack's events and are
answered in their threads; buttons, feedback and the session's stop button are pressed as
Slack's clicks. How the console draws a plan and builds a click is checked without the stack.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from aico.dev import console
from tests.integration.stack import free_port, fresh_vhost

READY = 90.0  # seconds for dev to be ready (a node of its own takes about 3-6 s to boot)
ANSWER = 60.0  # seconds for a task's answer to show
EXIT = 90.0  # seconds for dev to stop everything after `quit`
PROXIES = ("http_proxy", "https_proxy", "all_proxy")
TASK = "write a haiku about queues"


def aico_command() -> list[str]:
    script = Path(sys.executable).parent / "aico"
    return [str(script)] if script.exists() else [sys.executable, "-m", "aico.cli"]


def dev_env(data_dir: Path, amqp_url: str) -> dict[str, str]:
    """This environment without Slack, Anthropic, aico or proxy settings; wide lines."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SLACK_", "ANTHROPIC_", "AICO_")) and name.lower() not in PROXIES
    }
    env.update(AICO_DATA_DIR=str(data_dir), AICO_AMQP_URL=amqp_url, COLUMNS="200")
    return env


class DevConsole:
    """`aico dev` in its own session; a reader thread collects its output line by line."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.data_dir = Path(env["AICO_DATA_DIR"])
        self.lines: list[str] = []
        self.closed = False
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [*aico_command(), "dev"],
            cwd=workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            bufsize=1,
            start_new_session=True,
        )
        threading.Thread(target=self._read, name="dev-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def find(self, text: str, after: int = -1) -> int | None:
        with self._changed:
            return next((i for i, ln in enumerate(self.lines) if i > after and text in ln), None)

    def wait_for(self, text: str, timeout: float, after: int = -1) -> int:
        """The index of the first line after `after` that contains `text`, once it is shown."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (index := self.find(text, after)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    why = "dev's output ended" if self.closed else f"not within {timeout:.0f} s"
                    raise AssertionError(f"{text!r} was not shown ({why}):\n{self.report()}")
                self._changed.wait(remaining)
        return index

    def quit(self) -> int:
        """`quit`, end of input; the exit code once dev has stopped everything."""
        self.send("quit")
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(EXIT)
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"dev did not stop within {EXIT:.0f} s:\n{self.report()}") from err

    def stop(self) -> None:
        """After a failed test: SIGTERM (dev cleans up), then SIGKILL if it hangs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(EXIT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def report(self) -> str:
        with self._changed:
            transcript = "\n".join(self.lines)
        logs = sorted((self.data_dir / "logs").glob("*.log"))
        tails = "".join(f"\n--- {log}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
        return f"--- transcript\n{transcript}{tails}"


@pytest.fixture
def run_dev(tmp_path: Path) -> Iterator:
    started: list[DevConsole] = []

    def run(data_dir: Path, amqp_url: str) -> DevConsole:
        dev = DevConsole(tmp_path, dev_env(data_dir, amqp_url))
        started.append(dev)
        return dev

    yield run
    for dev in started:
        dev.stop()


def ask(dev: DevConsole, after: int, task: str = TASK) -> tuple[str, int, int, int]:
    """Type the task; (task id, index of the ack, of the parent message, of the answer)."""
    dev.send(f"/aico task {task}")
    ack = dev.wait_for("received", ANSWER, after)
    match = re.search(r"Task `(\w+)` received", dev.lines[ack])
    assert match, dev.report()
    task_id = match.group(1)
    parent = dev.wait_for(f"#dev  aico: Task `{task_id}` from @you", ANSWER, after)
    answer = dev.wait_for(f"aico: [offline model] Answer to: {task}", ANSWER, after)
    return task_id, ack, parent, answer


def number(line: str) -> str:
    """The [n] a top-level message shows, which `reply n` takes."""
    match = re.match(r"\[(\d+)\] ", line)
    assert match, line
    return match.group(1)


def test_a_task_typed_in_the_console_is_answered_in_its_thread(rabbit, run_dev, tmp_path):
    dev = run_dev(tmp_path / "data", fresh_vhost(rabbit))
    notice = dev.wait_for("No ANTHROPIC_API_KEY: using the offline model", READY)
    ready = dev.wait_for(f"e.g.  /aico task {TASK}", READY)

    task_id, ack, parent, answer = ask(dev, ready)

    assert notice < ready < ack < parent < answer, dev.report()
    assert dev.lines[ack].startswith("(only visible to you) aico: 📥 Task"), dev.report()
    n = number(dev.lines[parent])
    thread = f"  ↳ [thread {n}: Task `{task_id}` from @you] aico"
    # the answer streamed: first its beginning as Claude wrote it, then the finished message
    writing = dev.wait_for(f"{thread} is writing: [offline", ANSWER, parent)
    assert writing < answer and dev.lines[answer].startswith(f"{thread}: "), dev.report()
    dev.wait_for(f"  ✎ updated [{n}: Task `{task_id}` from @you]: ✅ Done", ANSWER, answer - 1)
    # the receipt names the offline model and shows no Claude cost
    receipt = dev.wait_for("aico-offline · ", ANSWER, answer)
    assert "$0.0000" in dev.lines[receipt] and "claude" not in dev.lines[receipt], dev.report()
    assert dev.quit() == 0, dev.report()
    assert dev.find("aico dev: stopped") is not None, dev.report()


def test_without_a_broker_dev_runs_a_node_of_its_own_and_stops_it(run_dev):
    # pytest's tmp root is private (0700): the node's `rabbitmq` user could not reach it.
    data_dir = Path(tempfile.mkdtemp(prefix="aico-dev-test-"))
    data_dir.chmod(0o755)
    try:
        dev = run_dev(data_dir, f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
        dev.wait_for("starting a private RabbitMQ node", READY)
        ready = dev.wait_for(f"private node in {data_dir / 'rabbitmq'}, stopped on exit", READY)

        ask(dev, ready)

        assert dev.quit() == 0, dev.report()
        assert processes_mentioning(data_dir) == [], dev.report()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def processes_mentioning(path: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append(f"{proc.info['pid']}: {cmdline[:200]}")
    return found


def test_help_and_an_empty_task_get_their_answers_in_the_console(rabbit, run_dev, tmp_path):
    dev = run_dev(tmp_path / "data", fresh_vhost(rabbit))
    ready = dev.wait_for("`help` shows more", READY)

    dev.send("help")
    console_help = dev.wait_for("This console stands in for Slack", ANSWER, ready)
    dev.send("/aico help")
    bot_help = dev.wait_for("(only visible to you) aico: aico hands tasks", ANSWER, console_help)
    dev.wait_for("`/aico task <what to do>`: queue a task", ANSWER, bot_help)
    dev.send("/aico task")
    refusal = dev.wait_for("(only visible to you) aico: ⚠️", ANSWER, bot_help)

    assert "`/aico task <what to do>`" in dev.lines[refusal], dev.report()
    posted = [line for line in dev.lines if re.match(r"\[\d+\] #dev  aico:", line)]
    assert posted == [], dev.report()  # nothing was posted in the channel
    assert dev.quit() == 0, dev.report()


def test_a_mention_a_reply_a_file_buttons_feedback_and_stop_in_the_console(
    rabbit, run_dev, tmp_path
):
    dev = run_dev(tmp_path / "data", fresh_vhost(rabbit))
    ready = dev.wait_for("`help` shows more", READY)

    # When you mention aico in the channel, then it answers in your message's thread, streamed
    dev.send("@aico explain queues")
    said = dev.wait_for("#dev  you: @aico explain queues", ANSWER, ready)
    thread = f"  ↳ [thread {number(dev.lines[said])}: @aico explain queues] aico"
    writing = dev.wait_for(f"{thread} is writing: ", ANSWER, said)
    answer = dev.wait_for(f"{thread}: [offline model] Answer to: explain queues", ANSWER, said)
    begun = dev.lines[writing].partition(" is writing: ")[2]
    assert writing < answer and "[offline model] Answer to: explain queues".startswith(begun)
    buttons = dev.wait_for("👍 Good answer · 👎 Bad answer", ANSWER, answer)

    # When you rate it, then the bot's thanks is shown to you alone
    dev.send("good")
    thanks = dev.wait_for("(only visible to you) aico: Thanks: noted as a good", ANSWER, buttons)

    # When you reply in its thread, then the conversation goes on there
    dev.send(f"reply {number(dev.lines[said])} and one more thing")
    dev.wait_for("you: and one more thing", ANSWER, thanks)
    replied = dev.wait_for(f"{thread}: [offline model] Answer to: and one more thing", ANSWER)

    # When you press Cancel on a running task, then it is cancelled; Retry runs it again
    task = "count the queues"
    dev.send(f"/aico task {task}")
    parent = dev.wait_for("#dev  aico: Task `", ANSWER, replied)
    task_id = re.search(r"Task `(\w+)`", dev.lines[parent]).group(1)  # type: ignore[union-attr]
    dev.wait_for("[1] Cancel", ANSWER, parent)
    dev.send("press cancel")
    dev.wait_for(f"(you pressed Cancel on {number(dev.lines[parent])}: Task `{task_id}`", ANSWER)
    cancelled = dev.wait_for(f"Task `{task_id}` is cancelled", ANSWER, parent)
    dev.wait_for("🚫 Cancelled", ANSWER, parent)
    dev.wait_for("[1] Retry", ANSWER, parent)
    dev.send("press 1")
    retried = dev.wait_for(f"Task `{task_id}` is queued again", ANSWER, cancelled)
    answered = dev.wait_for(f"aico: [offline model] Answer to: {task}", ANSWER, retried)

    # When you attach a text file to a mention, then Claude got its content
    notes = tmp_path / "notes.txt"
    notes.write_text("The secret word is plum.\n")
    dev.send(f"attach {notes} what is the secret word")
    posted = dev.wait_for("#dev  you: @aico what is the secret word", ANSWER, answered)
    dev.wait_for("you shared a file notes.txt (25 bytes, text/plain)", ANSWER, posted)
    finished = dev.wait_for("aico: [offline model] Answer to: ", ANSWER, posted)
    dev.wait_for("The secret word is plum.", ANSWER, finished)

    # When you press the stop button of a DM's session while aico works, then the task stops
    dev.send("dm write a long story")
    dm = dev.wait_for("DM  you: write a long story", ANSWER, finished)
    dev.wait_for("aico's session is processing", ANSWER, dm)
    dev.send("stop")
    dev.wait_for(f"(you pressed the stop button of thread {number(dev.lines[dm])}: ", ANSWER, dm)
    dev.wait_for("was cancelled by @you", ANSWER, dm)
    dev.wait_for("aico's session is active", ANSWER, dm)
    assert dev.quit() == 0, dev.report()


# --------------------------------------------------------------------------- without the stack


def test_a_plan_shows_as_a_checklist_with_numbered_buttons():
    message = {
        "ts": "1.000100",
        "text": "Project p1",
        "blocks": [
            {
                "type": "plan",
                "title": "Ship it",
                "tasks": [
                    {"type": "task_card", "task_id": "a", "title": "Write", "status": "complete"},
                    {"type": "task_card", "task_id": "b", "title": "Test", "status": "in_progress"},
                    {"type": "task_card", "task_id": "c", "title": "Ship", "status": "pending"},
                ],
            },
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Confirm"}},
                    {"type": "button", "text": {"type": "plain_text", "text": "Stop"}},
                ],
            },
        ],
    }

    shown = console.render(message).split("\n")

    assert shown == [
        "📋 Ship it",
        "  [x] Write — complete",
        "  [~] Test — in progress",
        "  [ ] Ship — pending",
        "[1] Confirm  [2] Stop",
    ]
    assert [b.label for b in console.buttons_of(message)] == ["Confirm", "Stop"]


def test_a_pressed_button_is_the_click_slack_posts():
    message = {
        "ts": "1.000200",
        "thread_ts": "1.000100",
        "metadata": {"event_type": "x"},
        "blocks": [
            {
                "type": "actions",
                "block_id": "task:t1",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Cancel"},
                        "action_id": "aico_cancel",
                        "value": "t1",
                    }
                ],
            }
        ],
    }
    (button,) = console.buttons_of(message)

    payload = console.button_payload(
        message, "C0DEV", button, team_id="T1", api_app_id="A1", response_url="http://r"
    )

    (action,) = payload["actions"]
    assert (action["action_id"], action["block_id"], action["value"]) == (
        "aico_cancel",
        "task:t1",
        "t1",
    )
    assert payload["container"]["thread_ts"] == "1.000100"
    assert payload["user"]["id"] == console.USER and "metadata" not in payload["message"]


def test_what_a_person_types_is_escaped_and_mentions_aico():
    text = console.slack_text("@aico is 1 < 2 & 3 > 2? ask @aico", "U0BOT")

    assert text == "<@U0BOT> is 1 &lt; 2 &amp; 3 &gt; 2? ask <@U0BOT>"
