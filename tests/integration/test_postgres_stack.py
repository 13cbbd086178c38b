"""The whole stack from its Procfile with the event store in PostgreSQL (`AICO_DB_URL`), as it
runs when the processes are on more than one host.

Given a private RabbitMQ node, a private PostgreSQL server with a fresh database, the fake Slack
and the fake Claude, when a person runs `/aico task …`, then the answer is in the task's thread
and the task is recorded Done in PostgreSQL, by every process that wrote to it.
"""

from __future__ import annotations

import json

import pytest

from aico.bootstrap import open_store
from core.domain import events
from core.domain.task import TaskStatus
from tests.integration.stack import Stack, fresh_vhost
from tests.integration.test_e2e import task_id_of, wait_for_answer


@pytest.fixture
def db_url(postgres) -> str:
    return postgres.create_database()


@pytest.fixture
def stack(rabbit, tmp_path, slack, claude, db_url):
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, AICO_DB_URL=db_url).start()
    yield running
    codes = running.stop()
    assert all(code == 0 for code in codes.values()), f"{codes}\n{running.logs()}"


def test_a_task_is_answered_and_recorded_done_in_postgres(stack, slack, claude, db_url, tmp_path):
    # When a person hands aico a task
    status, body, elapsed = stack.command("task Write a haiku about databases")
    assert status == 200 and elapsed < 3.0
    task_id = task_id_of(body)

    # Then the answer arrives in the task's thread
    parent, replies = wait_for_answer(slack, task_id)
    assert len(replies) == 1
    assert "Answer to: Write a haiku about databases" in json.dumps(replies[0]["blocks"])
    assert "Write a haiku about databases" in json.dumps(parent["blocks"])

    # And PostgreSQL holds the task's whole history, written by the bot and both workers
    store = open_store(db_url)
    try:
        task = store.task(task_id)
        types = [e.type for e in store.events(task_id)]
    finally:
        store.close()
    assert task is not None and task.status is TaskStatus.DONE
    assert task.prompt == "Write a haiku about databases" and task.reply_ts == replies[0]["ts"]
    for written_by in (events.SUBMITTED, events.STARTED, events.ANSWERED, events.COMPLETED):
        assert written_by in types
    assert not (tmp_path / "data" / "aico.db").exists(), "no process fell back to SQLite"
