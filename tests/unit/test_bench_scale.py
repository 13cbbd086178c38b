"""bench/scale.py's pure parts: how big the wall run is, how the drain is cut into stretches and
judged steady, what RSS the backlog table shows per process, how CPU is counted per task, and
the markdown tables the README takes."""

from __future__ import annotations

import json

import pytest

from bench.e2e import MIB
from bench.scale import (
    Chunk,
    drain_chunks,
    markdown_table,
    parse_args,
    per_task_cpu,
    report,
    rss_summary,
    steadiness,
    wall_tasks,
)


def test_the_wall_run_lasts_the_ideal_seconds_asked_at_every_capacity() -> None:
    # 3 s of ideal N·L/C with Claude at 200 ms
    assert [wall_tasks(3.0, c, 0.2) for c in (8, 16, 32)] == [120, 240, 480]
    # never less than one round of C, and Claude at 0 ms has no ideal: one round
    assert wall_tasks(0.01, 8, 0.2) == 8
    assert wall_tasks(3.0, 8, 0.0) == 8


def test_the_drain_is_cut_into_stretches_timed_from_the_release() -> None:
    released = 100.0
    shown = [100.0 + 0.01 * i for i in range(1, 2501)]  # 100 answers a second, out of order
    chunks = drain_chunks(list(reversed(shown)), released, step=1000)

    assert [(c.first, c.last) for c in chunks] == [(1, 1000), (1001, 2000), (2001, 2500)]
    assert [c.count for c in chunks] == [1000, 1000, 500]
    assert [round(c.seconds, 6) for c in chunks] == [10.0, 10.0, 5.0]
    assert [round(c.rate, 6) for c in chunks] == [100.0, 100.0, 100.0]
    assert drain_chunks([], released, step=1000) == []


def test_a_steady_drain_scores_one_and_a_slowing_one_less() -> None:
    steady = [Chunk(1, 1000, 9.0), Chunk(1001, 2000, 5.0), Chunk(2001, 3000, 5.0)]
    steady.append(Chunk(3001, 4000, 2.0))
    # the first stretch (held calls at the release) and the last (the pipeline empties) are
    # left out of the judgement
    assert steadiness(steady) == 1.0

    slowing = [Chunk(1, 1000, 5.0), Chunk(1001, 2000, 5.0), Chunk(2001, 3000, 10.0)]
    slowing.append(Chunk(3001, 3500, 1.0))
    assert steadiness(slowing) == pytest.approx(0.5)
    assert steadiness(steady[:3]) is None  # one stretch between the first and the last


def test_the_rss_table_shows_each_process_at_the_start_its_peak_and_the_end() -> None:
    samples = [
        (0.0, {"bot": 40 * MIB, "task": 90 * MIB}),
        (0.5, {"bot": 70 * MIB, "task": 95 * MIB, "result": 30 * MIB}),
        (1.0, {"bot": 60 * MIB, "task": 92 * MIB, "result": 31 * MIB}),
    ]
    summary = rss_summary(samples)

    assert list(summary) == ["bot", "task", "result", "total"]
    assert summary["bot"] == {"start": 40.0, "peak": 70.0, "end": 60.0}
    assert summary["result"] == {"start": 0.0, "peak": 31.0, "end": 31.0}
    # the stack's peak is the highest sum of one sample, not the sum of the peaks
    assert summary["total"] == {"start": 130.0, "peak": 195.0, "end": 183.0}
    assert rss_summary([]) == {}


def test_cpu_per_task_folds_children_into_their_process_and_leaves_servers_out() -> None:
    cpu = {"bot": 1.0, "bot+child": 0.5, "pm": 0.1, "task": 2.0, "result": 1.4}
    cpu |= {"broker": 0.4, "db": 1.0, "harness": 0.6}
    per_task = per_task_cpu(cpu, busy=8.0, tasks=1000)

    assert per_task["bot"] == pytest.approx(1.5)
    assert per_task["aico"] == pytest.approx(5.0)  # bot, pm, task workers, result worker
    assert per_task["broker"] == pytest.approx(0.4)
    assert per_task["db"] == pytest.approx(1.0)
    assert per_task["machine"] == pytest.approx(8.0)
    assert per_task["other"] == pytest.approx(1.0)  # the machine's busy time nobody measured


def test_a_markdown_table_aligns_labels_left_and_figures_right() -> None:
    lines = markdown_table(["store", "C", "tasks/s"], [["sqlite", "8", "173.9"], ["pg", "16"]])

    assert lines == [
        "| store | C | tasks/s |",
        "|---|---:|---:|",
        "| sqlite | 8 | 173.9 |",
        "| pg | 16 |  |",
    ]


def _point(store: str, workers: int, tasks_per_s: float) -> dict:
    cpu = {"bot": 1.8, "pm": 0.1, "task": 2.5, "result": 2.0, "aico": 6.4}
    cpu |= {"broker": 0.8, "db": 2.3, "other": 0.2, "machine": 9.0}
    return {
        "store": store,
        "workers": workers,
        "capacity": 8 * workers,
        "wall": {"tasks": 120 * workers, "wall_over_ideal": 1.1},
        "throughput": {"tasks": 1000, "tasks_per_s": tasks_per_s, "all_acked_s": 2.5},
        "cpu_ms_per_task": cpu,
        "peak_rss_mib": 200.0 + 90 * workers,
        "ack": {"rate_per_s": 50.0, "p50_ms": 3.0, "p99_ms": 7.5, "max_ms": 9.0, "commands": 200}
        if workers == 1
        else None,
    }


def _backlog(store: str) -> dict:
    chunks = [
        {"first": 1, "last": 1000, "seconds": 5.0, "rate": 200.0},
        {"first": 1001, "last": 2000, "seconds": 4.0, "rate": 250.0},
    ]
    return {
        "store": store,
        "tasks": 2000,
        "workers": 1,
        "capacity": 8,
        "acked": 2000,
        "all_acked_s": 6.0,
        "all_posted_s": 8.0,
        "fill_ack_p50_ms": 11.0,
        "fill_ack_p99_ms": 30.0,
        "fill_ack_max_ms": 40.0,
        "queue_full": {"ready": 1990, "unacked": 10},
        "store_full": {"queued": 1990, "running": 10, "done": 16},
        "status_full_ms": [38.0, 40.0, 45.0],
        "status_draining_ms": [41.0, 80.0],
        "drain_latency_s": 0.0,
        "drained_s": 9.0,
        "drain_rate_per_s": 222.2,
        "drain_chunks": chunks,
        "steadiness": None,
        "drain_cpu_ms_per_task": {"aico": 4.3, "bot": 0.1, "pm": 0.1, "task": 2.2, "result": 1.9},
        "lost": 0,
        "failed": 0,
        "twice": 0,
        "rss_mib": {
            "bot": {"start": 41.0, "peak": 61.0, "end": 60.5},
            "total": {"start": 200.0, "peak": 240.0, "end": 239.0},
        },
    }


def test_the_report_has_a_row_per_store_and_pool_size_and_a_column_per_backlog() -> None:
    results = {
        "config": {"cpus": 2, "concurrency": 8, "latency_s": 0.2, "build": "abc1234"},
        # measured interleaved; shown by store, then pool size
        "curve": [_point(s, w, 100.0 + w) for w in (1, 2, 4) for s in ("sqlite", "postgresql")],
        "backlog": [_backlog("sqlite"), _backlog("postgresql")],
    }
    text = report(results)
    lines = text.splitlines()

    assert "build abc1234" in lines[0]
    curve_rows = [line for line in lines if line.startswith(("| sqlite |", "| postgresql |"))]
    assert [row.split(" | ")[:3] for row in curve_rows] == [
        ["| sqlite", "1", "8"],
        ["| sqlite", "2", "16"],
        ["| sqlite", "4", "32"],
        ["| postgresql", "1", "8"],
        ["| postgresql", "2", "16"],
        ["| postgresql", "4", "32"],
    ]
    assert "| sqlite | 2 | 16 | 1.100 (240) | 102.0 (1000) | 2.50 | 6.40 | 380.0 |" in lines
    # the acks at 50/s, for both stores
    assert sum(line.startswith("| sqlite (1 task worker(s)), 50/s | 3.0 | 7.5 |") for line in lines)
    assert sum("postgresql (1 task worker(s)), 50/s" in line for line in lines) == 1
    # the backlog: one column per store, the evidence that it was queued, the drain by stretch
    assert "| backlog of 2,000 tasks | sqlite | postgresql |" in lines
    assert "| full: task queue ready / unacked (RabbitMQ) | 1,990 / 10 | 1,990 / 10 |" in lines
    assert "| 1,001 to 2,000 | 4.00 | 250.0 | 4.00 | 250.0 |" in lines
    assert "| whole stack | 200.0 | 240.0 | 239.0 | 200.0 | 240.0 | 239.0 |" in lines
    json.dumps(results)  # what --json writes


def test_quick_takes_the_small_numbers_unless_one_is_given() -> None:
    args = parse_args(["--quick", "--backlog", "500", "--workers", "1,2"])

    assert args.backlog == 500
    assert args.throughput_tasks == 300
    assert args.workers_list == [1, 2]
    assert args.stores == ["sqlite", "postgresql"]
    full = parse_args([])
    assert (full.backlog, full.drain_step, full.throughput_tasks) == (10_000, 1000, 1000)


def test_an_unknown_store_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--stores", "sqlite,mysql"])
    assert "mysql" in capsys.readouterr().err
