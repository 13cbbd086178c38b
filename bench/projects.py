"""Benchmark of projects: a 10-step plan run by the real Procfile processes against RabbitMQ and
the fakes, its wall time against its critical path and against the steps run one after another.

    .venv/bin/python -m bench.projects [--runs 3] [--latency 2.0] [--workers 1] [--concurrency 8]

The plan (fake Claude's `plan_project` answer): six independent research steps, three steps that
each need two of them, one that needs those three, then the final assembly: three levels of
steps, then the final. Every Claude request takes --latency seconds (streamed: its first text
after half of it). The figures, per run and their median:

wall           from `/aico project` sent to the assembled answer posted in the thread (planning
               included);
critical path  the Claude time along the longest chain (the plan, each level of steps, the final):
               (1 + 3 + 1) x latency, the least any scheduler could take;
serial         every request one after another: (1 + 10 + 1) x latency;
wall ÷ critical path, and wall ÷ serial.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aico.fakes.anthropic import FakeClaude
from aico.fakes.slack import FakeSlack
from aico.rabbit_node import RabbitNode
from tests.integration.stack import BOT_TOKEN, Stack, fresh_vhost

CHANNEL = "C0CHAN1"
RESEARCH = ["queues", "storage", "network", "auth", "billing", "search"]
PAIRS = {"design-a": RESEARCH[0:2], "design-b": RESEARCH[2:4], "design-c": RESEARCH[4:6]}


def plan() -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {
            "id": f"read-{name}",
            "title": f"Read about {name}",
            "prompt": f"Summarise what we know about {name}.",
            "needs": [],
            "produces": "a summary",
        }
        for name in RESEARCH
    ]
    steps += [
        {
            "id": step,
            "title": f"Design {step[-1]}",
            "prompt": f"Design part {step[-1]} from its inputs.",
            "needs": [f"read-{name}" for name in needs],
            "produces": "a design",
        }
        for step, needs in PAIRS.items()
    ]
    steps.append(
        {
            "id": "review",
            "title": "Review the designs",
            "prompt": "Review the three designs together.",
            "needs": list(PAIRS),
            "produces": "a review",
        }
    )
    return {"title": "Design the system", "steps": steps, "final": {"prompt": "Write it up."}}


def run_once(
    node: RabbitNode, slack: FakeSlack, claude: FakeClaude, args: argparse.Namespace
) -> float:
    workdir = Path(tempfile.mkdtemp(prefix="aico-bench-projects-"))
    settings = {
        "AICO_MIN_WORKERS": str(args.workers),
        "AICO_TASK_CONCURRENCY": str(args.concurrency),
        "AICO_PROJECT_CONFIRM_USD": "100",
    }
    stack = Stack(workdir, fresh_vhost(node), slack, claude, **settings)
    try:
        stack.start(timeout=60)
        warm_up(stack, slack)
        sent = time.monotonic()
        _, body, _ = stack.command("project design the system end to end")
        project_id = body.split("`")[1]
        slack.wait_for(lambda: assembled(slack, project_id), 600)
        return time.monotonic() - sent
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def warm_up(stack: Stack, slack: FakeSlack) -> None:
    """One task answered: every process is up and connected before the clock starts."""
    _, body, _ = stack.command("task warm up")
    task_id = body.split("`")[1]
    slack.wait_for(lambda: answered(slack, task_id), 120)


def _thread_of(slack: FakeSlack, task_id: str) -> str:
    for message in slack.messages(CHANNEL):
        if f"`{task_id}`" in message["text"] + json.dumps(message.get("blocks")):
            return str(message["ts"])
    return ""


def answered(slack: FakeSlack, task_id: str) -> bool:
    thread = _thread_of(slack, task_id)
    return bool(thread) and any(
        "Answer to" in m.get("text", "") + json.dumps(m.get("blocks"))
        for m in slack.replies(CHANNEL, thread)
    )


def assembled(slack: FakeSlack, project_id: str) -> bool:
    thread = _thread_of(slack, project_id)
    return bool(thread) and any(
        "Write it up." in m.get("text", "") + json.dumps(m.get("blocks"))
        and not any(b.get("type") == "plan" for b in m.get("blocks", []))
        for m in slack.replies(CHANNEL, thread)
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(prog="python -m bench.projects")
    cli.add_argument("--runs", type=int, default=3)
    cli.add_argument("--latency", type=float, default=2.0, help="seconds per Claude request")
    cli.add_argument("--workers", type=int, default=1)
    cli.add_argument("--concurrency", type=int, default=8)
    return cli.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="aico-bench-rabbit-"))
    node = RabbitNode(base)
    node.start()
    slack = FakeSlack(bot_token=BOT_TOKEN).start()
    claude = FakeClaude(latency=args.latency).start()
    claude.tool_answers["plan_project"] = plan()
    walls: list[float] = []
    try:
        for _ in range(args.runs):
            slack.reset()
            walls.append(run_once(node, slack, claude, args))
    finally:
        claude.stop()
        slack.stop()
        node.stop()
        shutil.rmtree(base, ignore_errors=True)
    critical = (1 + 3 + 1) * args.latency
    serial = (1 + len(plan()["steps"]) + 1) * args.latency
    wall = statistics.median(walls)
    print(f"10-step project, Claude {args.latency:.1f} s a request, {args.runs} runs")
    print("| figure | seconds | ÷ critical path | ÷ serial |")
    print("|---|---:|---:|---:|")
    print(
        f"| wall (median; runs {', '.join(f'{w:.1f}' for w in walls)}) | {wall:.1f} | "
        f"{wall / critical:.3f} | {wall / serial:.3f} |"
    )
    ratio = critical / serial
    print(f"| critical path (plan, 3 levels, final) | {critical:.1f} | 1.000 | {ratio:.3f} |")
    print(f"| serial (plan, 10 steps, final) | {serial:.1f} | {serial / critical:.3f} | 1.000 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
