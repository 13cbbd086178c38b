"""Run the Procfile's processes (as honcho/foreman would): used by `aico dev`, tests and benches."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"


def read_procfile(path: Path = PROCFILE) -> dict[str, list[str]]:
    """`name: command` lines -> {name: argv}; `aico` resolves to this installation's script."""
    processes: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.lstrip().startswith("#"):
            processes[name.strip()] = _resolve(shlex.split(command))
    return processes


def _resolve(argv: list[str]) -> list[str]:
    """`aico` is the console script beside this Python (the virtualenv's), if there is one."""
    if argv and argv[0] == "aico":
        script = shutil.which("aico", path=str(Path(sys.executable).parent))
        return [script, *argv[1:]] if script else [sys.executable, "-m", "aico.cli", *argv[1:]]
    return argv


class ProcessGroup:
    """Start the named processes with `env`; each one's output goes to `logs/<name>.log`."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path | None = None,
        names: list[str] | None = None,
        procfile: Path = PROCFILE,
    ) -> None:
        commands = read_procfile(procfile)
        self.commands = {n: commands[n] for n in (names or list(commands))}
        self.env = dict(env)
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: list[IO[bytes]] = []

    def start(self, name: str | None = None) -> ProcessGroup:
        for proc_name in [name] if name else list(self.commands):
            self.processes[proc_name] = subprocess.Popen(
                self.commands[proc_name],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self._output(proc_name),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def _output(self, name: str) -> IO[bytes] | None:
        if self.log_dir is None:
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        return log

    def signal(self, name: str, sig: int = signal.SIGTERM) -> None:
        os.killpg(self.processes[name].pid, sig)

    def stop(self, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every process group, wait, SIGKILL what is left; returns the exit codes."""
        for proc in self.processes.values():
            if proc.poll() is None:
                _killpg(proc, signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.processes.items():
            try:
                codes[name] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                codes[name] = None
            _killpg(proc, signal.SIGKILL)  # children it left behind, too
        for log in self._logs:
            log.close()
        return codes

    def log(self, name: str) -> str:
        path = (self.log_dir or Path(".")) / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
