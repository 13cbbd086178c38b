"""The outbox relay on the in-memory twins of Slack and RabbitMQ, with the real SQLite event
store: a recorded task gets one parent message and one queue message, whatever Slack or the
broker does in between (an answer lost, a confirm late, a restart, a channel aico is not in)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.domain.messages import TASKS, TaskMessage
from core.domain.task import TaskStatus
from core.usecases import relay as relay_module
from core.usecases.relay import PARENT_EVENT, WAITING, OutboxRelay
from tests.twins.broker import MemoryBroker
from tests.twins.notifier import MemoryNotifier
from tests.twins.polling import WAIT, until

OWNER = "U0OWNER"
CHANNEL, AWAY = "C0GENERAL", "C0NOTJOINED"


@pytest.fixture
def relay(store, slack, broker) -> Iterator[OutboxRelay]:
    relay = OutboxRelay(store, slack, broker, TASKS, threads=2, slack_patience=60.0)
    yield relay
    relay.close()


_ids = iter(range(1, 10_000))


def record(
    store: SqliteEventStore,
    prompt: str = "write the release notes",
    channel: str = CHANNEL,
    response_url: str = "https://hooks.example/respond/1",
) -> str:
    """A task as intake records it before the ack (nothing posted, nothing queued)."""
    task_id = f"task{next(_ids):06d}"
    data = {"user": OWNER, "channel": channel, "prompt": prompt, "response_url": response_url}
    store.append(task_id, events.SUBMITTED, data, f"{task_id}:submitted")
    return task_id


def queued(store: SqliteEventStore, task_id: str):
    return until(lambda: (t := store.task(task_id)) and t.status is TaskStatus.QUEUED and t)


def task_messages(broker: MemoryBroker, task_id: str) -> list[TaskMessage]:
    return [TaskMessage.decode(p.body) for p in broker.ready(TASKS) if p.message_id == task_id]


def parents(slack: MemoryNotifier, task_id: str, channel: str = CHANNEL) -> list[dict[str, Any]]:
    """The top-level messages of `channel` that are `task_id`'s parent message."""
    return [
        m
        for m in slack.messages(channel)
        if (m.get("metadata") or {}).get("event_payload", {}).get("task_id") == task_id
    ]


def test_a_recorded_task_gets_one_parent_message_and_is_queued_once(store, slack, broker, relay):
    task_id = record(store, "write the release notes for 2.4")

    relay.dispatch_soon(task_id)

    task = queued(store, task_id)
    [parent] = slack.messages(CHANNEL)
    assert parent["ts"] == task.thread_ts
    assert parent["metadata"] == {"event_type": PARENT_EVENT, "event_payload": {"task_id": task_id}}
    assert parent["text"].startswith(f"Task {task_id} from <@{OWNER}>")
    assert "write the release notes for 2.4" in str(parent["blocks"])
    [message] = broker.ready(TASKS)
    assert message.message_id == task_id
    body = TaskMessage.decode(message.body)
    assert (body.task_id, body.prompt, body.user, body.channel) == (
        task_id,
        "write the release notes for 2.4",
        OWNER,
        CHANNEL,
    )
    assert body.thread_ts == task.thread_ts
    assert body.generation == 0

    relay.dispatch_soon(task_id)  # once queued, dispatching it again does nothing
    relay.dispatch_soon(record(store, "a second task"))
    until(lambda: len(broker.ready(TASKS)) == 2)
    assert len(parents(slack, task_id)) == 1
    assert len(task_messages(broker, task_id)) == 1


def test_a_post_whose_answer_was_lost_is_found_by_its_metadata_not_posted_twice(
    store, slack, broker, relay
):
    task_id = record(store)
    slack.lose_answer_next("post")

    relay.dispatch_soon(task_id)

    task = queued(store, task_id)
    [parent] = slack.messages(CHANNEL)  # the post that happened, its answer lost
    assert parent["ts"] == task.thread_ts
    asked = [method for method, _ in slack.calls]
    assert asked.count("post") == 1
    assert "find_message" in asked[asked.index("post") :]
    [body] = task_messages(broker, task_id)
    assert body.thread_ts == parent["ts"]


def test_a_broker_that_does_not_confirm_shows_waiting_then_queues_once_on_the_confirm(
    store, slack, broker, relay, monkeypatch
):
    monkeypatch.setattr(relay_module, "NOTICE_AFTER", 0.2)  # tell the owner sooner than 3 s
    broker.hold_confirms()
    task_id = record(store)

    relay.dispatch_soon(task_id)

    waiting = slack.wait_for(
        lambda: [m for m in parents(slack, task_id) if WAITING in m["text"]], WAIT
    )
    assert len(waiting) == 1 and len(slack.messages(CHANNEL)) == 1
    assert "Waiting for the queue" in waiting[0]["text"]
    assert broker.ready(TASKS) == []
    assert broker.held == 1
    assert store.task(task_id).status is TaskStatus.SUBMITTED  # saved, not queued yet

    assert broker.confirm_held() == 1
    task = queued(store, task_id)
    slack.wait_for(lambda: WAITING not in parents(slack, task_id)[0]["text"], WAIT)
    [parent] = slack.messages(CHANNEL)
    assert parent["ts"] == task.thread_ts
    assert "Queued" in parent["text"]
    assert len(task_messages(broker, task_id)) == 1
    assert broker.held == 0


def test_a_publish_the_broker_refuses_is_published_again_and_queued_once(
    store, slack, broker, relay
):
    broker.fail_next_publish()
    task_id = record(store)

    relay.dispatch_soon(task_id)

    queued(store, task_id)
    assert len(task_messages(broker, task_id)) == 1
    assert len(parents(slack, task_id)) == 1


def test_resume_queues_what_was_recorded_but_not_queued_once(store, slack, broker, relay):
    fresh = record(store, "never posted")
    posted_before = record(store, "posted, then the bot stopped")
    # The bot stopped after Slack took the post and before the store heard of it.
    ts = slack.post(
        CHANNEL,
        "Task",
        [],
        metadata={"event_type": PARENT_EVENT, "event_payload": {"task_id": posted_before}},
    )
    done = record(store, "queued before the stop")
    store.append(done, events.POSTED, {"thread_ts": "1699999999.000001"}, f"{done}:posted")
    store.append(done, events.QUEUED, {}, f"{done}:queued:0")

    assert relay.resume() == 2

    assert queued(store, fresh).thread_ts
    assert queued(store, posted_before).thread_ts == ts
    assert len(parents(slack, fresh)) == 1
    assert len(parents(slack, posted_before)) == 1
    assert len(slack.messages(CHANNEL)) == 2
    assert [TaskMessage.decode(p.body).prompt for p in broker.ready(TASKS)] in (
        ["never posted", "posted, then the bot stopped"],
        ["posted, then the bot stopped", "never posted"],
    )

    assert relay.resume() == 0  # nothing left to resume
    assert len(broker.ready(TASKS)) == 2


def test_a_channel_the_bot_is_not_in_fails_the_task_and_tells_its_owner(
    store, slack, broker, relay
):
    slack.not_in_channel.add(AWAY)
    task_id = record(store, channel=AWAY, response_url="https://hooks.example/respond/9")

    relay.dispatch_soon(task_id)

    [response] = slack.wait_for(lambda: slack.responses, WAIT)
    assert response["url"] == "https://hooks.example/respond/9"
    assert response["text"].startswith(f":x: Task `{task_id}` failed:")
    assert "I am not in this channel" in response["text"]
    assert "/invite @aico" in response["text"]
    task = until(lambda: (t := store.task(task_id)) and t.status.final and t)
    assert task.status is TaskStatus.FAILED
    assert "I am not in this channel" in task.error
    assert slack.messages(AWAY) == []
    assert broker.ready(TASKS) == []


def test_two_dispatches_of_one_task_at_once_queue_it_once(store, slack, broker, relay):
    # Given a task whose first dispatch waits for the broker's confirm
    broker.hold_confirms()
    task_id = record(store, "queue me once")
    relay.dispatch_soon(task_id)
    until(lambda: broker.held == 1)

    # When a second dispatch of it starts meanwhile (resume() after a restart does this)
    assert relay.resume() == 1

    # Then, once the broker confirms, the task was published once and is queued once
    until(lambda: broker.confirm_held() or broker.held == 0)
    queued(store, task_id)
    relay.close()
    assert len(task_messages(broker, task_id)) == 1, broker.ready(TASKS)
    assert len(parents(slack, task_id)) == 1


def test_a_prompt_confirm_records_the_thread_and_the_queueing_in_one_append(store, broker, relay):
    task_id = record(store)

    relay.dispatch_soon(task_id)

    task = queued(store, task_id)
    [body] = task_messages(broker, task_id)
    assert task.thread_ts and body.thread_ts == task.thread_ts
    assert [e.type for e in store.events(task_id)] == [events.SUBMITTED, events.QUEUED]


def test_while_the_confirm_is_late_the_store_knows_the_thread(store, slack, broker, relay):
    # Given a broker that holds its confirm longer than the relay waits before it records the
    # parent's ts on its own
    broker.hold_confirms()
    task_id = record(store)

    relay.dispatch_soon(task_id)

    # Then a cancel or /aico status meanwhile finds the thread, and the task is not queued yet
    task = until(lambda: (t := store.task(task_id)) and t.thread_ts and t)
    assert task.status is TaskStatus.SUBMITTED
    [parent] = parents(slack, task_id)
    assert parent["ts"] == task.thread_ts
    assert broker.confirm_held() == 1
    assert queued(store, task_id).thread_ts == parent["ts"]


def test_a_task_cancelled_before_its_thread_was_recorded_says_so_in_its_parent(
    store, slack, broker, relay, monkeypatch
):
    # Given a task whose parent is posted and whose message waits for its confirm, the
    # thread not recorded yet
    monkeypatch.setattr(relay_module, "RECORD_THREAD_AFTER", 30.0)
    broker.hold_confirms()
    task_id = record(store)
    relay.dispatch_soon(task_id)
    until(lambda: broker.held == 1)
    assert store.task(task_id).thread_ts == ""

    # When it is cancelled then (the cancel cannot show it: it knows no thread), then confirmed
    store.append(task_id, events.CANCELLED, {"by": OWNER}, f"{task_id}:cancelled:0")
    assert broker.confirm_held() == 1

    # Then its parent says it was cancelled, and the store knows where it is
    slack.wait_for(lambda: "Cancelled" in parents(slack, task_id)[0]["text"], WAIT)
    task = store.task(task_id)
    assert task.status is TaskStatus.CANCELLED
    assert task.thread_ts == parents(slack, task_id)[0]["ts"]
