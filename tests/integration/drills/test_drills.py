"""Each drill submits real tasks, breaks something under them, and then accounts for every task:
its final state, its result messages in the thread, and its Claude calls."""

from __future__ import annotations

import json
import signal
import time

import pika
import psutil

from aico.fakes.signing import slash_command_body
from core.domain.messages import DELIVERY_LIMIT
from core.usecases.status import is_task_worker
from tests.integration.drills.conftest import assert_nothing_lost_or_twice, event_store
from tests.integration.stack import wait_until
from tests.integration.test_e2e import CHANNEL, parent_of
from tests.integration.test_processes import task_workers


def test_kill_9_of_task_workers_with_claude_calls_in_flight(ledger, stack, claude):
    claude.latency = 1.5
    ledger.submit(12, "kill")
    claude.wait_for(lambda fake: fake.in_flight >= 6, timeout=20)

    for worker in task_workers(stack):
        worker.kill()  # SIGKILL: no drain, no ack
    outcomes = ledger.wait_settled(timeout=60)

    # a killed attempt is one attempt: its task may be asked again once, never more
    assert_nothing_lost_or_twice(outcomes, stack, max_calls=2)
    assert all(o.final == "Done" for o in outcomes)


def test_kill_9_of_the_result_worker_between_its_answers_posts_and_their_records(
    ledger, stack, slack
):
    # Given answers that Slack has put in their threads, whose posts' answers are held back
    def an_answer(params: dict) -> bool:
        return bool(params.get("thread_ts"))

    slack.hold_answer_next("chat.postMessage", 30.0, when=an_answer, count=3)
    ids = ledger.submit(3, "posted")
    with event_store(stack) as store:
        wait_until(lambda: all(store.task(t) and store.task(t).thread_ts for t in ids), timeout=20)
        threads = [store.task(t).thread_ts for t in ids]
    slack.wait_for(lambda: all(slack.replies(CHANNEL, ts) for ts in threads), timeout=20)

    # When the result worker is killed before it heard of them, and comes back
    stack.processes.signal("result", signal.SIGKILL)
    stack.processes.processes["result"].wait(10)
    stack.processes.start("result")
    outcomes = ledger.wait_settled(timeout=60)

    # Then each answer is found again, done, and nothing is posted twice
    assert_nothing_lost_or_twice(outcomes, stack, max_calls=1)
    assert all(o.final == "Done" for o in outcomes)


def test_sigterm_to_a_task_worker_finishes_what_it_holds(ledger, stack, claude):
    claude.latency = 1.0
    ledger.submit(10, "term")
    claude.wait_for(lambda fake: fake.in_flight >= 4, timeout=20)
    victim = task_workers(stack)[0]

    victim.terminate()
    victim.wait(30)
    outcomes = ledger.wait_settled(timeout=60)

    # Then it drained: what it held was answered by it, once (a worker killed with tasks in
    # hand would have them asked again by another)
    assert_nothing_lost_or_twice(outcomes, stack, max_calls=1)


def test_close_all_connections_under_load(ledger, stack, claude, rabbit):
    claude.latency = 0.5
    ledger.submit(20, "forced")
    claude.wait_for(lambda fake: fake.in_flight >= 4, timeout=20)

    rabbit.ctl("close_all_connections", "drill")
    more = ledger.submit(5, "after")  # the bot still acks at once
    outcomes = ledger.wait_settled(timeout=90)

    assert_nothing_lost_or_twice(outcomes, stack, max_calls=2)
    assert {o.task_id for o in outcomes if o.final == "Done"} >= set(more)


def test_broker_stop_and_start_with_tasks_in_flight(ledger, stack, claude, rabbit):
    claude.latency = 0.5
    ledger.submit(20, "restart")
    claude.wait_for(lambda fake: fake.in_flight >= 4, timeout=20)

    rabbit.stop_app()
    during = ledger.submit(3, "while-down")  # acked within 3 s though the broker is down
    rabbit.start_app()
    outcomes = ledger.wait_settled(timeout=120)

    assert_nothing_lost_or_twice(outcomes, stack, max_calls=2)
    assert all(o.final for o in outcomes if o.task_id in during)


def test_the_pm_brings_killed_workers_back(stack):
    workers = wait_until(lambda: len(task_workers(stack)) == 2 and task_workers(stack))
    killed = {w.pid for w in workers}
    for worker in workers:
        worker.kill()

    def replaced() -> list[psutil.Process]:
        now = [w for w in task_workers(stack) if w.pid not in killed]
        return now if len(now) == 2 else []

    again = wait_until(replaced, timeout=30)  # (a killed worker may take a moment to die)
    assert all(w.status() != psutil.STATUS_ZOMBIE for w in again)


def test_the_same_slash_command_delivered_twice_makes_one_task(ledger, stack, slack, claude):
    body = slash_command_body("task only once please", response_url=slack.new_response_url())
    first = stack.sender.post(body)
    again = stack.sender.post(body, headers={"X-Slack-Retry-Num": "1"})

    assert first[0] == again[0] == 200
    task_id = first[1].split("`")[1]
    assert again[1].split("`")[1] == task_id, "the replay is answered with the same task"
    ledger.tasks[task_id] = "only once please"
    outcomes = ledger.wait_settled(timeout=20)
    assert_nothing_lost_or_twice(outcomes, stack, max_calls=1)
    assert len(slack.messages("C0CHAN1")) == 1


def test_slack_answering_429_for_a_while(ledger, stack, slack, claude):
    slack.fail_next("*", count=8, status=429, retry_after=1)
    ledger.submit(4, "throttled")
    outcomes = ledger.wait_settled(timeout=60)

    assert_nothing_lost_or_twice(outcomes, stack, max_calls=1)
    posts = sum(1 for c in slack.calls if c.method == "chat.postMessage")
    assert posts > 8, "4 parents + 4 answers, and the retries of the rate-limited ones"


OUTAGE = 60.0  # seconds the broker stays down in the long-outage drill


def test_broker_down_for_a_minute_when_tasks_arrive_they_wait_and_the_owner_is_told(
    ledger, stack, slack, claude, rabbit
):
    # Given the broker down
    rabbit.stop_app()
    down_at = time.monotonic()
    try:
        # When tasks arrive: acked at once, the tasks are in the store
        waiting = ledger.submit(3, "outage")

        def told():
            shown = [json.dumps(parent_of(slack, t) or {}) for t in waiting]
            return all("Waiting for the queue" in s for s in shown)

        slack.wait_for(told, timeout=20)
        more = ledger.submit(2, "still down")
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))  # the outage itself
        assert claude.calls == []
    finally:
        rabbit.start_app()

    # Then, once it is back, every task is done, once
    outcomes = ledger.wait_settled(timeout=60)
    assert_nothing_lost_or_twice(outcomes, stack, max_calls=1)
    assert all(o.final == "Done" for o in outcomes)
    assert set(more) <= {o.task_id for o in outcomes}


def test_claude_overloaded_for_a_while_opens_the_breaker_and_no_task_is_lost(ledger, stack, claude):
    # Given Claude answering 529 (overloaded) for 15 seconds (the breakers open within a few,
    # and the heartbeats that show it come every 5 s: long enough to see them open twice)
    claude.fail_for(15, status=529)
    outage_ends = time.monotonic() + 15

    # When tasks arrive meanwhile
    ids = ledger.submit(12, "overloaded")
    breakers_seen: set[str] = set()
    attempts_while_open: list[int] = []  # all tasks' attempts, read while every breaker was open

    def settled_watching_the_breakers() -> bool:
        with event_store(stack) as store:  # the task workers' heartbeats come every 5 s
            beats = store.workers(time.time() - 6)
            states = [w["breaker"]["state"] for w in beats if is_task_worker(w)]
            breakers_seen.update(states)
            if states and set(states) == {"open"} and time.monotonic() < outage_ends:
                attempts_while_open.append(sum(store.task(t).attempts for t in ids))
        return ledger.settled()

    wait_until(settled_watching_the_breakers, timeout=150, interval=0.25)
    outcomes = ledger.wait_settled(timeout=1)

    # Then the breakers opened (the workers stopped taking tasks) and closed again
    assert {"open", "closed"} <= breakers_seen, breakers_seen
    # and while they were open (and Claude still down) the tasks waited without using attempts,
    # as the store records them: at most the breakers' probes (one per worker each time one
    # half-opens: after 5 s, then 10 s)
    assert len(attempts_while_open) >= 2, attempts_while_open
    workers = len(task_workers(stack))
    assert attempts_while_open[-1] - attempts_while_open[0] <= 2 * workers, attempts_while_open
    # and every task was answered once, within its budget of attempts
    assert_nothing_lost_or_twice(outcomes, stack, max_calls=(DELIVERY_LIMIT + 1) * 3)
    assert all(o.final == "Done" and o.answers == 1 for o in outcomes), outcomes


def dead_letters(rabbit, stack) -> int:
    vhost = stack.env["AICO_AMQP_URL"].rsplit("/", 1)[1]
    rows = rabbit.ctl("list_queues", "-p", vhost, "name", "messages").split("\n")
    counts = dict(row.split("\t") for row in rows if "\t" in row)
    return int(counts.get("aico.dead", 0))


def test_a_task_claude_refuses_is_told_in_its_thread_and_dead_lettered(
    ledger, stack, claude, rabbit
):
    claude.fail_next(count=1, status=400)
    ledger.submit(1, "refused")
    (outcome,) = ledger.wait_settled(timeout=20)

    assert (outcome.final, outcome.results, outcome.claude_calls) == ("Failed", 1, 1)
    wait_until(lambda: dead_letters(rabbit, stack) == 1, timeout=10)


def test_a_message_that_cannot_be_read_is_dead_lettered_and_work_goes_on(ledger, stack, rabbit):
    with pika.BlockingConnection(pika.URLParameters(stack.env["AICO_AMQP_URL"])) as conn:
        conn.channel().basic_publish("", "aico.tasks", b"\xff not a task", mandatory=True)
    wait_until(lambda: dead_letters(rabbit, stack) == 1, timeout=20)

    ledger.submit(2, "afterwards")
    assert_nothing_lost_or_twice(ledger.wait_settled(timeout=20), stack, max_calls=1)
