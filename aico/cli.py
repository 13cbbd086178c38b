"""The `aico` command: one subcommand per process (see the Procfile)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from aico import processes
from core import shutdown
from core.config import Settings
from core.errors import CONFIG_ERROR, ConfigError

# subcommand -> (settings role, the process). Each process imports its own code when it is
# chosen, so that it loads only the clients it uses (the anthropic SDK alone is ~60 MiB).
PROCESSES: dict[tuple[str, ...], tuple[str, Callable[[Settings], int]]] = {
    ("bot",): ("bot", processes.bot),
    ("pm",): ("pm", processes.pm),
    ("worker", "task"): ("task", processes.task_worker),
    ("worker", "result"): ("result", processes.result_worker),
}


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="aico", description="aico: tasks from Slack, done by Claude."
    )
    sub = cli.add_subparsers(dest="command", required=True)
    sub.add_parser("bot", help="the Slack app (HTTP on $PORT, or Socket Mode)")
    sub.add_parser("pm", help="the control plane: supervises task workers")
    worker = sub.add_parser("worker", help="run one worker process")
    worker.add_argument("kind", choices=["task", "result"])
    sub.add_parser("dev", help="the whole stack on this machine, with a local Slack console")
    sub.add_parser("status", help="queues, workers, breakers, success rate, durations, spend")
    db = sub.add_parser("db", help="the event store: a backup, or the projections rebuilt")
    db_sub = db.add_subparsers(dest="action", required=True)
    backup = db_sub.add_parser("backup", help="a consistent copy, taken while aico runs")
    backup.add_argument("target", help="the file to write")
    db_sub.add_parser("rebuild", help="derive every projection again from the events")
    _scaler_parser(sub)
    repos = sub.add_parser(
        "repos",
        help='the repositories\' code index: `aico repos search "<query>"` shows what a task gets',
        add_help=False,
    )
    repos.add_argument("action", choices=["search"])
    repos.add_argument("rest", nargs=argparse.REMAINDER)
    return cli


class _OneLineParser(argparse.ArgumentParser):
    """Bad options are one line on stderr (and exit code 2), not the usage and the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}\n")


def _scaler_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scaler = sub.add_parser("scaler", help="the autoscaler's policies, offline")
    actions = scaler.add_subparsers(dest="action", required=True, parser_class=_OneLineParser)
    simulate = actions.add_parser(
        "simulate",
        help="run a trace through a simulated pool under one policy; prints one JSON object",
        description="Simulate a trace (CSV with the header arrival_s,service_s, one task a "
        "line, in seconds) through a pool of task workers scaled by one policy, and print the "
        "figures as one JSON object: p50_wait_s, p95_wait_s, max_wait_s, worker_seconds, "
        "scale_events and more.",
    )
    simulate.add_argument("--trace", required=True, metavar="FILE", help="the trace (CSV)")
    simulate.add_argument("--policy", required=True, choices=["threshold", "queue-ratio", "aico"])
    simulate.add_argument(
        "--concurrency", type=int, default=8, metavar="C", help="slots per worker (default 8)"
    )
    simulate.add_argument(
        "--min", type=int, default=1, dest="minimum", metavar="N", help="fewest workers (default 1)"
    )
    simulate.add_argument(
        "--max", type=int, default=5, dest="maximum", metavar="M", help="most workers (default 5)"
    )
    simulate.add_argument(
        "--startup",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds from asking for a worker until it takes tasks (default 10)",
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "dev":
        from aico.dev.main import main as dev_main

        return dev_main()
    if args.command in ("status", "db"):
        return _admin(args)
    if args.command == "repos":
        return _repos(args.rest)
    if args.command == "scaler":
        from aico import scaler

        return scaler.command(args)
    shutdown.install()  # until the process installs its own handlers (it drains)
    key = (args.command, args.kind) if args.command == "worker" else (args.command,)
    role, run = PROCESSES[key]
    try:
        return int(run(Settings.from_env(role)) or 0)
    except ConfigError as exc:  # at start: a setting that cannot work (a retired model, …)
        print(f"error: {exc}", file=sys.stderr)
        return CONFIG_ERROR


def _repos(argv: list[str]) -> int:
    from aico.repos import search_main

    try:
        settings = Settings.from_env(None)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    return search_main(argv, settings)


def _admin(args: argparse.Namespace) -> int:
    from aico import admin

    try:
        settings = Settings.from_env(None)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    if args.command == "status":
        return admin.status(settings)
    return admin.db(settings, args.action, getattr(args, "target", ""))


if __name__ == "__main__":
    sys.exit(main())
