"""`aico dev` end to end: the real command in a subprocess, driven through its stdin and stdout.

Given no Slack or Anthropic settings, when a person types `/aico …` into the console, then they
see the ack, the parent message and the answer in its thread as Slack would show them, from the
offline model; with no broker at AICO_AMQP_URL, dev starts a node of its own and stops it on quit.
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


def ask(dev: DevConsole, after: int) -> tuple[str, int, int, int]:
    """Type the task; (task id, index of the ack, of the parent message, of the answer)."""
    dev.send(f"/aico task {TASK}")
    ack = dev.wait_for("received", ANSWER, after)
    match = re.search(r"Task `(\w+)` received", dev.lines[ack])
    assert match, dev.report()
    task_id = match.group(1)
    parent = dev.wait_for(f"#dev  aico: Task `{task_id}` from @you", ANSWER, after)
    answer = dev.wait_for(f"[offline model] Answer to: {TASK}", ANSWER, after)
    return task_id, ack, parent, answer


def test_a_task_typed_in_the_console_is_answered_in_its_thread(rabbit, run_dev, tmp_path):
    dev = run_dev(tmp_path / "data", fresh_vhost(rabbit))
    notice = dev.wait_for("No ANTHROPIC_API_KEY: using the offline model", READY)
    ready = dev.wait_for(f"e.g.  /aico task {TASK}", READY)

    task_id, ack, parent, answer = ask(dev, ready)

    assert notice < ready < ack < parent < answer, dev.report()
    assert dev.lines[ack].startswith("(only visible to you) aico: 📥 Task"), dev.report()
    assert dev.lines[answer].startswith(f"  ↳ [thread of Task `{task_id}` from @you] aico: ")
    dev.wait_for(f"  ✎ updated [Task `{task_id}` from @you]: ✅ Done", ANSWER, answer - 1)
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
    posted = [line for line in dev.lines if line.startswith("#dev  aico:")]
    assert posted == [], dev.report()  # nothing was posted in the channel
    assert dev.quit() == 0, dev.report()
