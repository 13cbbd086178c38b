"""A private RabbitMQ node of our own, for `aico dev` and the integration tests.

Everything the node owns lives under `base_dir`: `mnesia/` (data), `log/`, `server.log` (output of
the start script), the pid file and the Erlang cookie (`HOME` points there). Every config file the
node reads is looked up there too (`rabbitmq.conf`, `conf.d/`, `advanced.config`,
`rabbitmq-env.conf`, `enabled_plugins`, which starts as `[].`), so a system broker or
/etc/rabbitmq cannot interfere; drop a file in to tune a dev node. It listens on 127.0.0.1 only,
runs in its own process group and is started from the real start script
(/usr/lib/rabbitmq/bin/rabbitmq-server), not Debian's /usr/sbin wrapper, which sends the output to
/var/log and re-quotes the arguments through `su`.

Accounts: when we are root, the node and `rabbitmqctl` run as the `rabbitmq` user, like Debian's
wrapper does it, but without `su`: the child switches uid/gid itself (`subprocess.Popen(user=,
group=, extra_groups=[])`) and `base_dir` is chowned to `rabbitmq`, who must be able to reach it
(no private 0700 parent such as root's home directory). Any other user runs the node as itself
and must own `base_dir`.

Erlang's port mapper (`epmd`, port 4369) is shared by every node on the host: the first node
starts it, and it keeps running after the node stops, like a system daemon.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path

from core.errors import AicoError

BIN_DIR = Path("/usr/lib/rabbitmq/bin")
NODE_USER = "rabbitmq"
NOT_INSTALLED = (
    f"RabbitMQ is not installed ({BIN_DIR / 'rabbitmq-server'} is missing): install it with "
    "apt-get install -y rabbitmq-server, or point AICO_AMQP_URL at an existing broker"
)
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
_METHOD_FRAME = 1
_STOP_GRACE = 30.0  # seconds a node gets to shut down cleanly before it is killed
_LOG_TAIL = 30  # lines of log quoted in errors


class RabbitNodeError(AicoError):
    """The private RabbitMQ node could not be started, stopped or controlled."""


def is_installed() -> bool:
    """Whether the RabbitMQ server scripts are present."""
    return os.access(BIN_DIR / "rabbitmq-server", os.X_OK)


class RabbitNode:
    """One RabbitMQ node under `base_dir`; ports are picked free when not given.

    The name and ports stay fixed for the object's life, so `start()` after `stop()` or `kill()`
    brings the same node back with its data.
    """

    def __init__(self, base_dir: Path, port: int | None = None, name: str | None = None) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.port, self.dist_port = _free_ports(2) if port is None else (port, _free_ports(1)[0])
        self.name = name or f"aico-{self.port}"
        if "@" not in self.name:
            self.name += "@localhost"
        self._user = NODE_USER if os.geteuid() == 0 else None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def log_file(self) -> Path:
        """RabbitMQ's own log; the start script's output goes to `server.log` next to it."""
        return self.base_dir / "log" / f"{self.name}.log"

    def start(self, timeout: float = 60) -> RabbitNode:
        """Launch the node and return once it has booted and answers AMQP on 127.0.0.1."""
        if not is_installed():
            raise RabbitNodeError(NOT_INSTALLED)
        if self._running():
            return self
        self._prepare_base_dir()
        self._process = self._launch()
        try:
            self._wait_for_amqp(time.monotonic() + timeout)
            self.ctl("await_startup", timeout=timeout)
        except RabbitNodeError:
            self.kill()
            raise
        return self

    def stop(self) -> None:
        """Shut the node down cleanly (SIGTERM: the start script stops RabbitMQ), else kill it.

        Idempotent; the data stays in `base_dir` for a later `start()`.
        """
        if self._running():
            self._process.terminate()
            try:
                self._process.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the node's whole process group at once, as a crash would; idempotent."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._process = None

    def stop_app(self) -> None:
        """Stop RabbitMQ inside the running node: clients are cut off, the data stays."""
        self.ctl("stop_app")

    def start_app(self, timeout: float = 60) -> None:
        """Start RabbitMQ again after `stop_app` and wait until it answers AMQP."""
        self.ctl("start_app", timeout=timeout)
        self._wait_for_amqp(time.monotonic() + timeout)

    def ctl(self, *args: str, timeout: float = 30) -> str:
        """Run `rabbitmqctl -q -n <node> *args` as the node's user and return its stdout."""
        command = [str(BIN_DIR / "rabbitmqctl"), "-q", "-n", self.name, *args]
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self._environment(),
                cwd=self.base_dir,
                **self._as_node_user(),
            )
        except subprocess.TimeoutExpired as err:
            raise RabbitNodeError(
                f"rabbitmqctl {' '.join(args)} timed out after {timeout}s"
            ) from err
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()
            raise RabbitNodeError(f"rabbitmqctl {' '.join(args)} failed: {output}")
        return done.stdout

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _prepare_base_dir(self) -> None:
        for directory in (self.base_dir, self.base_dir / "mnesia", self.base_dir / "log"):
            directory.mkdir(parents=True, exist_ok=True)
        plugins = self.base_dir / "enabled_plugins"
        if not plugins.exists():
            plugins.write_text("[].\n")
        if self._user is not None:
            _chown_tree(self.base_dir, self._user)
            self._check_writable_by_node_user()

    def _check_writable_by_node_user(self) -> None:
        probe = subprocess.run(["test", "-w", str(self.base_dir)], **self._as_node_user())
        if probe.returncode != 0:
            raise RabbitNodeError(
                f"the {self._user} user cannot write to {self.base_dir}: a parent directory is "
                "probably private (mode 0700); use a directory it can reach, e.g. under /tmp"
            )

    def _launch(self) -> subprocess.Popen[bytes]:
        with open(self.base_dir / "server.log", "ab") as output:
            return subprocess.Popen(
                [str(BIN_DIR / "rabbitmq-server")],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._environment(),
                cwd=self.base_dir,
                **self._as_node_user(),
            )

    def _as_node_user(self) -> dict:
        """`subprocess` options that make a child switch to the node's account, if not ours."""
        if self._user is None:
            return {}
        return {"user": self._user, "group": self._user, "extra_groups": []}

    def _environment(self) -> dict[str, str]:
        base = self.base_dir
        return {
            "PATH": _PATH,
            "HOME": str(base),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONFIG_FILES": str(base / "conf.d"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "ERL_CRASH_DUMP": str(base / "log" / "erl_crash.dump"),
        }

    def _wait_for_amqp(self, deadline: float) -> None:
        while not _speaks_amqp(self.port):
            if not self._running():
                code = self._process.returncode if self._process else None
                raise RabbitNodeError(
                    f"RabbitMQ node {self.name} exited (code {code}){self._log_tails()}"
                )
            if time.monotonic() > deadline:
                raise RabbitNodeError(
                    f"RabbitMQ node {self.name} did not answer AMQP on port {self.port} "
                    f"in time{self._log_tails()}"
                )
            time.sleep(0.1)

    def _log_tails(self) -> str:
        parts = [_tail(path) for path in (self.base_dir / "server.log", self.log_file)]
        return "".join(f"\n--- {text}" for text in parts if text)


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now, all different (the sockets are held until all bind)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _speaks_amqp(port: int) -> bool:
    """Whether the broker answers an AMQP 0-9-1 protocol header with a method frame."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(_AMQP_HEADER)
            return sock.recv(1) == bytes([_METHOD_FRAME])
    except OSError:
        return False


def _chown_tree(root: Path, user: str) -> None:
    account = pwd.getpwnam(user)
    os.chown(root, account.pw_uid, account.pw_gid)
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories + files:
            os.chown(Path(directory) / name, account.pw_uid, account.pw_gid, follow_symlinks=False)


def _tail(path: Path, lines: int = _LOG_TAIL) -> str:
    """The last lines of a log file, headed by its path; empty when there is no such file."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 16_384))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return f"{path}:\n" + "\n".join(text.splitlines()[-lines:])
