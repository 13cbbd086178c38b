"""The operator's commands: `aico status` and `aico db backup|rebuild`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from aico import bootstrap
from core.config import Settings
from core.domain import pool
from core.domain.pricing import usd
from core.domain.stats import Summary
from core.errors import AicoError
from core.slack.blocks import checks_line, feedback_line, projects_line, repos_line
from core.usecases.status import StatusReport


def status(settings: Settings) -> int:
    """What `/aico status` shows, as plain text."""
    store = bootstrap.store(settings)
    link = bootstrap.link(settings, "status")
    link.connected.wait(3.0)
    try:
        repos = [spec.name for spec in settings.repos]
        print(status_text(bootstrap.status(store, link, wait=3.0, repos=repos).report()))
    finally:
        link.close()
        store.close()
    return 0


def status_text(report: StatusReport) -> str:
    """A status report for a terminal: the figures `/aico status` shows, without Slack's markup."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.at))
    lines = [
        f"aico status, {when}",
        f"Queues: {_queues(report)}",
        f"Workers: {_workers(report)}",
        f"Checks: {checks_line(report)}",
        f"Last hour: {_summary(report.hour)}",
        f"Last 24 h: {_summary(report.day)}",
        f"Today (UTC): {report.today.tokens_in:,} in / {report.today.tokens_out:,} out tokens"
        f" · {usd(report.today.cost)} · {report.today.finished:,} task(s) finished",
        f"Top spenders today: {_spenders(report)}",
        *pool.describe(report.pool, report.at),
        *([f"Repositories: {repos_line(report)}"] if report.repos else []),
        f"Feedback today: {feedback_line(report)}",
        *([f"Projects: {projects_line(report)}"] if report.projects else []),
    ]
    return "\n".join(lines)


def _queues(report: StatusReport) -> str:
    if report.broker_error:
        return f"RabbitMQ cannot be read: {report.broker_error}"
    return " · ".join(
        f"{q.name.removeprefix('aico.')}: {q.ready:,} waiting, {q.consumers} consumer(s)"
        for q in report.queues
    )


def _workers(report: StatusReport) -> str:
    if not report.workers:
        return "none has reported in the last 15 s"
    breakers = ", ".join(f"{n} {state}" for state, n in sorted(report.breakers().items()))
    busy = f"{report.busy} of {report.capacity} slots busy"
    return f"{len(report.workers)} live, {busy} · Claude breakers: {breakers}"


def _summary(summary: Summary) -> str:
    if not summary.finished:
        return "no task finished"
    parts = [f"{summary.done:,} done, {summary.failed:,} failed, {summary.cancelled:,} cancelled"]
    if summary.success_rate is not None:
        parts.append(f"success {summary.success_rate:.0%}")
    p50, p95 = summary.percentile(0.5), summary.percentile(0.95)
    if p50 is not None and p95 is not None:
        parts.append(f"p50 {p50:.1f} s, p95 {p95:.1f} s")
    return " · ".join(parts)


def _spenders(report: StatusReport) -> str:
    if not report.top_users:
        return "none yet"
    users = ", ".join(f"{s.who} {usd(s.cost)} ({s.tasks})" for s in report.top_users)
    channels = ", ".join(f"#{s.who} {usd(s.cost)} ({s.tasks})" for s in report.top_channels)
    return f"users: {users} · channels: {channels}"


def db(settings: Settings, action: str, target: str = "") -> int:
    store = bootstrap.store(settings)
    try:
        if action == "backup":
            path = Path(target)
            store.backup(path)
            print(f"backed up the event store to {path}")
        else:
            print(f"rebuilt the projections of {store.rebuild():,} task(s) from their events")
    except AicoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0
