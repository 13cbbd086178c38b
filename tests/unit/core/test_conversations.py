"""Conversations on the in-memory twins of Slack and RabbitMQ, with the real SQLite event store:
a reply in a task's thread is the next turn, a task of its own in the same thread; only the
requester may reply unless conversations are open to the channel; a reply delivered twice is
one turn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.adapters.sqlite_store import SqliteEventStore
from core.domain.messages import TASKS, TaskMessage
from core.domain.task import TaskStatus
from core.errors import InvalidInput
from core.usecases.conversations import Conversations
from core.usecases.intake import Intake, TaskRequest
from core.usecases.relay import OutboxRelay
from tests.twins.broker import MemoryBroker
from tests.twins.polling import until

OWNER, STRANGER = "U0OWNER", "U0STRANGER"
CHANNEL = "C0GENERAL"


@pytest.fixture
def intake(store, slack, broker) -> Iterator[Intake]:
    # One relay thread: tasks are dispatched in the order they were submitted.
    relay = OutboxRelay(store, slack, broker, TASKS, threads=1, slack_patience=60.0)
    yield Intake(store, relay, 1_000)
    relay.close()


def queued(store: SqliteEventStore, task_id: str):
    return until(lambda: (t := store.task(task_id)) and t.status is TaskStatus.QUEUED and t)


def first_task(store, intake):
    task = intake.submit(TaskRequest(OWNER, CHANNEL, "draft the release notes"))
    return queued(store, task.id)


def queue_messages(broker: MemoryBroker) -> list[TaskMessage]:
    return [TaskMessage.decode(p.body) for p in broker.ready(TASKS)]


def test_a_reply_by_the_requester_is_the_next_turn_in_the_thread(store, slack, broker, intake):
    conversations = Conversations(store, intake, open_to_channel=False)
    first = first_task(store, intake)

    turn = conversations.reply(CHANNEL, first.thread_ts, OWNER, "  now shorter  ", "Ev0001")

    assert turn is not None and turn.id != first.id
    recorded = store.task(turn.id)
    assert (recorded.conversation, recorded.thread_ts) == (first.id, first.thread_ts)
    assert (recorded.user, recorded.prompt) == (OWNER, "now shorter")
    assert [t.id for t in store.thread(CHANNEL, first.thread_ts)] == [first.id, turn.id]
    queued(store, turn.id)
    [body] = [m for m in queue_messages(broker) if m.task_id == turn.id]
    assert (body.prompt, body.thread_ts) == ("now shorter", first.thread_ts)
    [parent] = slack.messages(CHANNEL)  # a turn has no parent message of its own
    assert parent["ts"] == first.thread_ts
    assert slack.replies(CHANNEL, first.thread_ts) == []


def test_a_reply_by_someone_else_is_refused_naming_who_may(store, slack, broker, intake):
    conversations = Conversations(store, intake, open_to_channel=False)
    first = first_task(store, intake)

    with pytest.raises(InvalidInput) as refused:
        conversations.reply(CHANNEL, first.thread_ts, STRANGER, "my turn", "Ev0002")

    assert str(refused.value).startswith(
        f"Only <@{OWNER}>, who started this conversation, can continue it."
    )
    assert [t.id for t in store.thread(CHANNEL, first.thread_ts)] == [first.id]
    # A turn submitted after the refusal is dispatched after anything the refusal had queued.
    turn = conversations.reply(CHANNEL, first.thread_ts, OWNER, "mine", "Ev0003")
    queued(store, turn.id)
    assert [m.task_id for m in queue_messages(broker)] == [first.id, turn.id]


def test_a_reply_by_someone_else_is_a_turn_when_open_to_the_channel(store, broker, intake):
    conversations = Conversations(store, intake, open_to_channel=True)
    first = first_task(store, intake)

    turn = conversations.reply(CHANNEL, first.thread_ts, STRANGER, "my turn", "Ev0004")

    assert turn is not None
    assert (turn.user, turn.conversation, turn.thread_ts) == (STRANGER, first.id, first.thread_ts)
    queued(store, turn.id)
    [body] = [m for m in queue_messages(broker) if m.task_id == turn.id]
    assert body.user == STRANGER


def test_the_same_reply_twice_is_one_turn(store, slack, broker, intake):
    conversations = Conversations(store, intake, open_to_channel=False)
    first = first_task(store, intake)

    turn = conversations.reply(CHANNEL, first.thread_ts, OWNER, "go on", "Ev0005")
    again = conversations.reply(CHANNEL, first.thread_ts, OWNER, "go on", "Ev0005")

    assert again.id == turn.id
    queued(store, turn.id)
    later = conversations.reply(CHANNEL, first.thread_ts, OWNER, "and then", "Ev0006")
    queued(store, later.id)
    assert [t.id for t in store.thread(CHANNEL, first.thread_ts)] == [first.id, turn.id, later.id]
    assert [m.task_id for m in queue_messages(broker)] == [first.id, turn.id, later.id]
    assert len(slack.messages(CHANNEL)) == 1


def test_a_reply_in_a_thread_aico_did_not_start_is_ignored(store, slack, broker, intake):
    conversations = Conversations(store, intake, open_to_channel=True)
    first_task(store, intake)

    assert conversations.reply(CHANNEL, "1600000000.000100", OWNER, "hi", "Ev0007") is None
    assert len(store.recent(10)) == 1
