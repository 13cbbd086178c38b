"""bench/versus.py's accounting and table: what makes its figures for aico and the peer comparable.

The tracker is fed by a real FakeSlack through slack_sdk, as both stacks post: the peer's plain
parent and plain answer in the thread, aico's parent with blocks, its placeholder reply turned
into the answer and its parent's Done."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_sdk import WebClient

from aico.fakes.slack import FakeSlack
from bench.e2e import CHANNEL, DONE_BADGE
from bench.versus import (
    AnswerTracker,
    Row,
    Spread,
    cpu_per_task,
    markdown_table,
    peak_memory,
    source_digest,
)

TOKEN = "xoxb-versus-test"
PROMPT = "wall q0a1b2cn7 say something"
MARK = "q0a1b2cn7"


@pytest.fixture
def slack() -> Iterator[tuple[WebClient, AnswerTracker]]:
    tracker = AnswerTracker()
    with FakeSlack(bot_token=TOKEN) as fake:
        fake.on_change.append(tracker.on_change)
        yield WebClient(token=TOKEN, base_url=fake.api_url), tracker


def test_the_peers_plain_answer_in_the_thread_counts_as_answered(slack) -> None:
    client, tracker = slack
    parent = client.chat_postMessage(channel=CHANNEL, text=f"Task from <@U0USER1>: {PROMPT}")
    client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text=f"Answer to: {PROMPT}")

    assert tracker.wait({MARK}, tracker.answered, stall=5) == set()
    assert set(tracker.posted) == {MARK}
    assert len(tracker.answers[MARK]) == 1
    assert tracker.failed == set()


def test_aicos_placeholder_counts_only_once_it_shows_the_answer(slack) -> None:
    client, tracker = slack
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"Task `abc` {PROMPT}"}}]
    parent = client.chat_postMessage(channel=CHANNEL, text="task", blocks=blocks)
    reply = client.chat_postMessage(
        channel=CHANNEL, thread_ts=parent["ts"], text=":gear: Working on it"
    )
    assert MARK not in tracker.answered

    client.chat_update(channel=CHANNEL, ts=reply["ts"], text=f"Answer to: {PROMPT}")
    done = [{"type": "context", "elements": [{"type": "mrkdwn", "text": DONE_BADGE}]}]
    client.chat_update(channel=CHANNEL, ts=parent["ts"], text="task", blocks=blocks + done)

    assert tracker.wait({MARK}, tracker.finished, stall=5) == set()
    assert tracker.answered[MARK] <= tracker.finished[MARK]
    assert len(tracker.answers[MARK]) == 1  # one message, posted then updated


def test_an_answer_to_another_prompt_or_a_second_answer_is_told_apart(slack) -> None:
    client, tracker = slack
    parent = client.chat_postMessage(channel=CHANNEL, text=f"Task: {PROMPT}")
    other = "Answer to: wall q0a1b2cn70 say something"  # a longer mark with the same start
    client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text=other)
    assert MARK not in tracker.answered

    for _ in range(2):
        client.chat_postMessage(
            channel=CHANNEL, thread_ts=parent["ts"], text=f"Answer to: {PROMPT}"
        )
    assert len(tracker.answers[MARK]) == 2  # answered twice: the run fails on it


def test_a_failure_reply_ends_the_wait_and_marks_the_task_failed(slack) -> None:
    client, tracker = slack
    parent = client.chat_postMessage(channel=CHANNEL, text=f"Task: {PROMPT}")
    client.chat_postMessage(
        channel=CHANNEL, thread_ts=parent["ts"], text=":warning: Claude could not answer"
    )

    assert tracker.wait({MARK}, tracker.answered, stall=5) == set()
    assert tracker.failed == {MARK}
    assert MARK not in tracker.answered


def test_the_table_shows_medians_spreads_and_aicos_ratio_to_the_peer() -> None:
    rows = [
        Row("tasks/s", Spread.of([240, 250, 246]), Spread.of([95, 90, 100]), 0),
        Row("ack p99, ms", Spread.of([117.0]), None),
        Row("CPU, ms", Spread.of([0.0, 0.0]), Spread.of([1.0, 2.0]), 2),
    ]
    lines = markdown_table(rows).splitlines()

    assert lines[0].startswith("| figure | peer (median, min-max) | aico (median, min-max)")
    assert lines[2] == "| tasks/s | 246 (240-250) | 95 (90-100) | 0.39 |"
    assert lines[3] == "| ack p99, ms | 117.0 | n/a | — |"
    assert lines[4] == "| CPU, ms | 0.00 (0.00-0.00) | 1.50 (1.00-2.00) | — |"
    assert Spread.of([]) is None


def test_cpu_and_memory_are_taken_per_repetition_over_the_phases() -> None:
    def run(kind: str, phase: str, rep: int, rss: float, **figures: float) -> dict:
        return {"kind": kind, "phase": phase, "rep": rep, "peak_rss_mib": rss, **figures}

    runs = [
        run("aico", "wall", 0, 200, cpu_s=2.0, tasks=200),
        run("aico", "throughput", 0, 210, cpu_s=4.0, tasks=400),
        run("aico", "ack", 0, 205, tasks=200),
        run("aico", "wall", 1, 190, cpu_s=3.0, tasks=200),
        run("peer", "wall", 0, 220, cpu_s=1.0, tasks=200),
    ]

    assert cpu_per_task(runs, "aico") == [10.0, 15.0]  # (2 + 4) s / 600 tasks; 3 s / 200
    assert peak_memory(runs, "aico") == [210, 190]
    assert cpu_per_task(runs, "peer") == [5.0]


def test_the_peers_digest_changes_with_its_code_not_with_its_caches(tmp_path: Path) -> None:
    (tmp_path / "src" / "peer" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'peer'\n")
    code = tmp_path / "src" / "peer" / "tasks.py"
    code.write_text("x = 1\n")
    first = source_digest(tmp_path)

    (tmp_path / "src" / "peer" / "__pycache__" / "tasks.pyc").write_bytes(b"\0")
    assert source_digest(tmp_path) == first
    code.write_text("x = 2\n")
    assert source_digest(tmp_path) != first
