"""Effects happen once: a task message that arrives twice is answered once, a Slack post whose
answer was lost is not posted again, and a task the broker gave up on is told as failed."""

from __future__ import annotations

import json
import sys

import pika

from core.domain import events
from core.domain.messages import DEAD_EXCHANGE, TASKS, TaskMessage
from tests.integration.drills.conftest import Ledger, assert_nothing_lost_or_twice, event_store
from tests.integration.stack import Stack, fresh_vhost, wait_until
from tests.integration.test_e2e import CHANNEL, parent_of


def publish(stack, exchange: str, routing_key: str, message: TaskMessage, **headers) -> None:
    with pika.BlockingConnection(pika.URLParameters(stack.env["AICO_AMQP_URL"])) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(
            delivery_mode=2, message_id=message.task_id, headers=headers or None
        )
        channel.basic_publish(exchange, routing_key, message.encode(), properties)


def task_message(stack, task_id: str) -> TaskMessage:
    """The task's queue message, rebuilt from what the stack recorded."""
    with event_store(stack) as store:
        task = store.task(task_id)
    assert task is not None and task.thread_ts
    return TaskMessage(task_id, task.prompt, task.user, task.channel, task.thread_ts, 1.0)


def test_a_task_message_delivered_twice_asks_claude_once(ledger, stack, claude, rabbit):
    # Given a task whose Claude call is in flight
    claude.latency = 1.5
    (task_id,) = ledger.submit(1, "copied")
    claude.wait_for(lambda fake: fake.in_flight == 1, timeout=20)

    # When a second copy of its message arrives (a publish repeated after a lost confirm),
    # and a third one after it is done
    publish(stack, "", TASKS, task_message(stack, task_id))
    (outcome,) = ledger.wait_settled(timeout=30)
    publish(stack, "", TASKS, task_message(stack, task_id))
    wait_until(lambda: queue_depth(rabbit, stack) == 0, timeout=20)  # taken and acked

    # Then Claude was asked once, the thread holds one answer, and the task one attempt
    assert_nothing_lost_or_twice([ledger.outcome(task_id)], stack, max_calls=1)
    assert outcome.final == "Done"
    with event_store(stack) as store:
        recorded = [e.type for e in store.events(task_id)]
    assert recorded.count(events.STARTED) == 1, "the concurrent copy claimed nothing"
    assert recorded.count(events.ANSWERED) == 1


def test_slack_posts_whose_answers_were_lost_are_not_posted_again(ledger, stack, slack, claude):
    # Given Slack that carries out the next two posts (the task's parent message, then its
    # answer) but drops each connection before answering: the poster cannot know it worked
    slack.lose_answer_next("chat.postMessage", count=2)

    # When a task is submitted and answered
    ledger.submit(1, "lost answers")
    (outcome,) = ledger.wait_settled(timeout=40)

    # Then the channel holds one parent message, and its thread one answer
    assert_nothing_lost_or_twice([outcome], stack, max_calls=1)
    assert outcome.final == "Done"
    assert len(slack.messages(CHANNEL)) == 1
    assert len(slack.calls_to("chat.postMessage")) == 2, "each post made once, then found"


def test_a_task_the_broker_gave_up_on_is_failed_in_its_thread(ledger, stack, slack, claude):
    # Given a task that is queued but will never be finished by a worker
    claude.latency = 30
    (task_id,) = ledger.submit(1, "doomed")
    claude.wait_for(lambda fake: fake.in_flight == 1, timeout=20)

    # When the broker dead-letters its message because the delivery limit ran out
    message = task_message(stack, task_id)
    publish(stack, DEAD_EXCHANGE, "", message, **{"x-first-death-reason": "delivery_limit"})

    # Then the owner sees it failed, with the reason, in the task's one result message
    (outcome,) = ledger.wait_settled(timeout=20)
    assert outcome.final == "Failed" and outcome.results == 1
    parent = parent_of(slack, task_id)
    (reply,) = slack.replies(CHANNEL, parent["ts"])
    assert "no attempt finished" in reply["text"]
    with event_store(stack) as store:
        assert [e.type for e in store.events(task_id)][-1] == events.FAILED
    assert json.dumps(parent["blocks"]).count("Failed") == 1


def test_a_task_whose_message_was_lost_is_queued_again_by_the_sweep(
    rabbit, tmp_path, slack, claude
):
    # Given no task worker yet, and a sweep that counts a task stranded after a second
    amqp_url = fresh_vhost(rabbit)
    settings = {"AICO_MIN_WORKERS": "0", "AICO_STALE_AFTER": "1", "AICO_SWEEP_EVERY": "1"}
    stack = Stack(tmp_path, amqp_url, slack, claude, **settings).start()
    try:
        ledger = Ledger(stack, slack, claude)
        (task_id,) = ledger.submit(1, "stranded")
        wait_until(lambda: queue_depth(rabbit, stack) == 1, timeout=20)

        # When its message vanishes from the queue (purged, or a broker that lost its data)
        rabbit.ctl("purge_queue", "-p", vhost_of(stack), TASKS)

        # Then the sweep queues it again, and a worker that comes along answers it, once
        wait_until(lambda: generation_of(stack, task_id) == 1, timeout=30)
        wait_until(lambda: queue_depth(rabbit, stack) == 1, timeout=20)
        stack.processes.commands["task"] = [sys.executable, "-m", "aico.cli", "worker", "task"]
        stack.processes.start("task")
        (outcome,) = ledger.wait_settled(timeout=30)
        assert_nothing_lost_or_twice([outcome], stack, max_calls=1)
        assert outcome.final == "Done"
        assert generation_of(stack, task_id) == 1
    finally:
        stack.stop()


def generation_of(stack, task_id: str) -> int:
    with event_store(stack) as store:
        task = store.task(task_id)
    return task.generation if task is not None else -1


def vhost_of(stack) -> str:
    return stack.env["AICO_AMQP_URL"].rsplit("/", 1)[1]


def queue_depth(rabbit, stack) -> int:
    rows = rabbit.ctl("list_queues", "-p", vhost_of(stack), "name", "messages").split("\n")
    counts = dict(row.split("\t") for row in rows if "\t" in row)
    return int(counts.get(TASKS, 0))
