"""`GET /metrics` on the bot's port tells the truth about a running stack: from the Procfile, with
the real broker and the fakes of Slack and Claude, three tasks done are three done tasks in the
scrape, today's histogram counts them, the tokens are the ones the fake Claude reported, and one
task worker is live."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from aico.fakes.anthropic import FakeClaude
from core.domain.messages import TASKS
from tests.integration.drills.conftest import Ledger, assert_nothing_lost_or_twice
from tests.integration.stack import Stack, fresh_vhost, wait_until

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(stack: Stack) -> Figures:
    """One scrape of the bot's port, as Prometheus parses it: (name, labels) -> value."""
    url = f"http://127.0.0.1:{stack.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def fig(scraped: Figures, name: str, **labels: str) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


def words(content) -> int:
    """Tokens as the fake Claude counts them: words of a content string or of its text blocks."""
    if isinstance(content, list):
        return sum(words(block.get("text", "")) for block in content if isinstance(block, dict))
    return len(content.split()) if isinstance(content, str) else 0


def prompt_of(body: dict) -> str:
    last = body["messages"][-1]["content"]
    return last if isinstance(last, str) else last[0]["text"]


def usage_reported(claude: FakeClaude, prompts: set[str]) -> tuple[int, int]:
    """The input and output tokens the fake answered for `prompts`, summed."""
    answered = [c for c in claude.calls if c.status == 200 and prompt_of(c.body) in prompts]
    tokens_in = sum(
        words(c.body.get("system")) + sum(words(m.get("content")) for m in c.body["messages"])
        for c in answered
    )
    tokens_out = sum(len(f"Answer to: {prompt_of(c.body)}".split()) for c in answered)
    return tokens_in, tokens_out


def test_metrics_match_what_the_stack_did(rabbit, tmp_path, slack, claude):
    stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude).start()
    try:
        # Given one task worker heard from
        wait_until(lambda: fig(scrape(stack), "aico_workers_live") == 1, timeout=30)

        # When three tasks are done
        ledger = Ledger(stack, slack, claude)
        ledger.submit(3, "metrics")
        assert_nothing_lost_or_twice(ledger.wait_settled(timeout=60), stack, max_calls=1)

        # Then /metrics says three done, and today's histogram counts them
        got = wait_until(
            lambda: (s := scrape(stack)) and fig(s, "aico_tasks", status="done") == 3 and s,
            timeout=10,
        )
        assert fig(got, "aico_task_duration_seconds_bucket", le="+Inf") == 3
        assert fig(got, "aico_task_duration_seconds_count") == 3
        assert fig(got, "aico_claude_seconds_count") == 3  # Claude answered each of them
        assert fig(got, "aico_tasks_finished_today", outcome="done") == 3
        assert fig(got, "aico_tasks_finished_today", outcome="failed") == 0
        assert {fig(got, "aico_tasks", status=s) for s in ("queued", "running", "failed")} == {0}

        # And the tokens are the ones the fake Claude reported for them
        tokens_in, tokens_out = usage_reported(claude, set(ledger.tasks.values()))
        assert tokens_in > 0 and tokens_out > 0
        assert fig(got, "aico_tokens_today", direction="in") == tokens_in
        assert fig(got, "aico_tokens_today", direction="out") == tokens_out

        # And one task worker is live, its breaker closed, consuming an empty aico.tasks
        assert fig(got, "aico_workers_live") == 1
        assert fig(got, "aico_breakers", state="closed") == 1
        assert fig(got, "aico_queue_ready", queue=TASKS) == 0
        assert fig(got, "aico_queue_consumers", queue=TASKS) == 1
        assert fig(got, "aico_source_up", source="store") == 1
        assert fig(got, "aico_source_up", source="broker") == 1
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), f"{codes}\n{stack.logs()}"
