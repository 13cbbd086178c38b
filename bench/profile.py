"""Where a task's CPU goes: by process and by step, from py-spy samples of a real burst.

    .venv/bin/python -m bench.profile [--tasks 6000] [--latency 0] [--rate 250] [--json PATH]

It runs bench/e2e.py's throughput phase (the Procfile's processes against a private RabbitMQ
node, FakeSlack and FakeClaude; --tasks commands at once, Claude answering in --latency s) and
attaches `py-spy record --gil` (only the thread holding the GIL is sampled: what the process
spends CPU on in Python, C extensions included) to the bot, the task worker and the result
worker once each has lived past its start-up. Each sample is put in the first of these steps
whose code is anywhere on its stack (a store append made by a Bolt listener is the store's):

  store         the event store: appends (the projection, the group commit, the fsync) and reads
  broker        pika and aico's AMQP link: consuming, acking, publishing, confirms
  slack         slack_sdk's Web API calls (building, sending, reading the answer)
  claude        the anthropic SDK's request and the stream read
  intake        the rest of the bot's HTTP server and Bolt (parsing, the signature, dispatch)
  aico          aico's own code outside those (the handlers, Block Kit, domain logic)
  other         the interpreter's and libraries' rest (thread hand-offs, logging, ...)

and JSON (json, orjson) is counted again on its own, wherever it is called from. The shares are
turned into milliseconds per task with e2e.py's CPU accounting of the same run (user + system CPU
of each process ÷ tasks), so the columns add up to the CPU per task that e2e.py reports. System
time spent in the kernel on a socket or an fsync is in the step that made the call only as far
as py-spy saw the thread in it; the rest stays in "other".

Needs py-spy (`pip install py-spy`; it reads other processes' memory: root, or ptrace allowed).
A measurement tool: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import psutil

ROLES = {  # a process's role, by what its command line runs
    "bot": ("aico bot",),
    "task": ("worker task",),
    "result": ("worker result",),
}
STEPS = ("store", "broker", "slack", "claude", "intake", "aico", "other")
# (step, what a frame's file path contains), in order: a sample goes to the first that matches
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "store",
        ("core/adapters/sqlite_store.py", "core/adapters/store_schema.py", "postgres_store.py"),
    ),
    ("broker", ("pika/", "core/adapters/rabbitmq.py")),
    ("slack", ("slack_sdk/", "core/adapters/slack_http.py", "urllib3/")),
    ("claude", ("anthropic/", "httpx", "httpcore", "core/adapters/claude")),
    ("intake", ("cheroot/", "bot/http.py", "slack_bolt/", "httptools", "bot/serve.py")),
)
JSON_FILES = ("json/", "orjson")
_BESIDE = Path(sys.executable).with_name("py-spy")  # in the virtualenv, when not on PATH
PY_SPY = str(_BESIDE) if _BESIDE.exists() else shutil.which("py-spy")
STARTUP_S = 4.0  # a process is sampled from this long after it started (imports, warm-up)


def classify(frames: list[str]) -> str:
    """The step of one sample (`frames`: outermost first), by RULES, else aico's or other."""
    for step, needles in RULES:
        if any(needle in frame for frame in frames for needle in needles):
            return step
    leaf = frames[-1] if frames else ""
    return "aico" if any(f"{part}/" in leaf for part in ("core", "workers", "bot")) else "other"


def is_json(frames: list[str]) -> bool:
    return any(any(needle in frame for needle in JSON_FILES) for frame in frames)


def read_samples(path: Path) -> tuple[Counter[str], int, int]:
    """(samples by step, JSON samples, all samples) of a py-spy raw (collapsed) file. Samples
    inside an import are left out: they are start-up, not a task's."""
    steps: Counter[str] = Counter()
    in_json = total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any("importlib._bootstrap" in frame for frame in frames):
            continue
        n = int(count)
        steps[classify(frames)] += n
        in_json += n if is_json(frames) else 0
        total += n
    return steps, in_json, total


class Sampler:
    """Attaches py-spy to each role's process once it has lived STARTUP_S seconds."""

    def __init__(self, out: Path, rate: int) -> None:
        self.out, self.rate = out, rate
        self.root = 0  # the e2e run's pid: only its descendants are sampled
        self.files: dict[str, list[Path]] = defaultdict(list)
        self._spies: list[subprocess.Popen] = []
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for spy in self._spies:  # py-spy writes its file when its process ends or on SIGINT
            if spy.poll() is None:
                spy.send_signal(2)
        for spy in self._spies:
            try:
                spy.wait(20)
            except subprocess.TimeoutExpired:
                spy.kill()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            if not self.root:
                continue
            for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
                pid = proc.info["pid"]
                if pid in self._seen or not self._ours(proc):
                    continue
                line = " ".join(proc.info["cmdline"] or [])
                role = next((r for r, marks in ROLES.items() if any(m in line for m in marks)), "")
                if not role or "py-spy" in line:
                    continue
                if time.time() - (proc.info["create_time"] or 0) < STARTUP_S:
                    continue
                self._seen.add(pid)
                path = self.out / f"{role}-{pid}.txt"
                self.files[role].append(path)
                command = [str(PY_SPY), "record", "--pid", str(pid), "--gil", "--nonblocking"]
                command += ["--rate", str(self.rate), "--format", "raw", "--output", str(path)]
                self._spies.append(
                    subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )

    def _ours(self, proc: psutil.Process) -> bool:
        try:
            return any(parent.pid == self.root for parent in proc.parents())
        except psutil.Error:
            return False


def profile(
    by_role: dict[str, tuple[Counter[str], int, int]], cpu_ms: dict[str, float]
) -> dict[str, dict[str, float]]:
    """ms per task by role and step (JSON included as its own row), from the samples' shares
    and each role's measured CPU per task."""
    table: dict[str, dict[str, float]] = {}
    for role, (steps, in_json, total) in by_role.items():
        ms = cpu_ms.get(role, 0.0)
        if not total:
            continue
        table[role] = {step: ms * steps.get(step, 0) / total for step in STEPS}
        table[role]["json"] = ms * in_json / total
        table[role]["total"] = ms
    return table


def render(table: dict[str, dict[str, float]], cpu_ms: dict[str, float], tasks: int) -> str:
    roles = [r for r in ("bot", "task", "result") if r in table]
    lines = [
        f"CPU per task by process and step, ms ({tasks} tasks; py-spy --gil shares x e2e.py's "
        "CPU per task)",
        "",
        "| step | " + " | ".join(roles) + " | all |",
        "|---|" + "---:|" * (len(roles) + 1),
    ]
    for step in (*STEPS, "total"):
        cells = [table[r][step] for r in roles]
        row = " | ".join(f"{c:.2f}" for c in cells)
        lines.append(f"| {step} | {row} | {sum(cells):.2f} |")
    cells = [table[r]["json"] for r in roles]
    lines.append(
        "| of which JSON | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {sum(cells):.2f} |"
    )
    if "pm" in cpu_ms:
        lines.append("")
        lines.append(f"(the pm: {cpu_ms['pm']:.2f} ms per task, not sampled)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--tasks", type=int, default=6000, help="commands of the burst (6000)")
    cli.add_argument("--latency", type=float, default=0.0, help="Claude's latency, s (0)")
    cli.add_argument("--rate", type=int, default=250, help="py-spy samples a second (250)")
    cli.add_argument("--json", type=Path, help="also write the figures to this file")
    cli.add_argument("--keep", type=Path, help="keep py-spy's raw files in this directory")
    args = cli.parse_args(argv)
    if PY_SPY is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    out = args.keep or Path(tempfile.mkdtemp(prefix="aico-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    figures = out / "e2e.json"
    sampler = Sampler(out, args.rate)
    sampler.start()
    command = [sys.executable, "-m", "bench.e2e", "--phases", "throughput"]
    command += ["--throughput-tasks", str(args.tasks), "--latency", str(args.latency)]
    command += ["--json", str(figures)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    sampler.root = run.pid
    try:
        stdout, _ = run.communicate()
    finally:
        sampler.stop()
    if run.returncode or not figures.exists():
        print(stdout)
        print("the e2e run failed: no profile", file=sys.stderr)
        return 1
    result = json.loads(figures.read_text())
    cpu_ms: dict[str, float] = result["throughput"]["cpu_ms_per_task"]
    by_role: dict[str, tuple[Counter[str], int, int]] = {}
    for role, paths in sampler.files.items():
        steps: Counter[str] = Counter()
        in_json = total = 0
        for path in paths:
            if path.exists():
                s, j, t = read_samples(path)
                steps.update(s)
                in_json, total = in_json + j, total + t
        by_role[role] = (steps, in_json, total)
    table = profile(by_role, cpu_ms)
    print(render(table, cpu_ms, args.tasks))
    print(
        f"\nthroughput {result['throughput']['tasks_per_s']:.0f} tasks/s; build "
        f"{result.get('config', {}).get('build', '?')}"
    )
    if args.json:
        args.json.write_text(json.dumps({"cpu_ms": cpu_ms, "by_step": table}, indent=1) + "\n")
    if args.keep is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
