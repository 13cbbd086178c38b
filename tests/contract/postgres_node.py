"""A private PostgreSQL server for the tests: its own data directory in a temp dir, its own free
port on 127.0.0.1, its unix socket inside the temp dir, trust auth, `fsync=on`.

It is Debian's `postgresql` package run by hand (initdb, then `postgres` as our child), not the
system cluster: nothing on the machine can interfere, and the server goes away with the session.
PostgreSQL refuses to run as root, so when we are root initdb and the server run as the
`postgres` user, and the temp dir is chowned to it (the child switches uid itself, like
`runuser -u postgres` would, without a PAM session). The temp dir comes from `tempfile` under
/tmp, which that user can reach (pytest's own temp root is private to root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

SERVER_USER = "postgres"
SUPERUSER = "postgres"  # the database role initdb creates
NOT_INSTALLED = (
    "PostgreSQL is not installed (no initdb found under /usr/lib/postgresql/*/bin, from "
    "`pg_config --bindir`, or on PATH): run scripts/ensure-postgres, or apt-get install -y "
    "postgresql"
)
_STOP_GRACE = 30.0
_LOG_TAIL = 30


class PostgresNodeError(Exception):
    """The private PostgreSQL server could not be set up, started or used."""


def bin_dir() -> Path | None:
    """Where initdb and postgres are: Debian keeps them in a versioned directory off PATH."""
    candidates = [_pg_config_bindir()]
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: _version_key(p.parent.name), reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    return next((c for c in candidates if c and os.access(c / "initdb", os.X_OK)), None)


def serve() -> Iterator[PostgresNode]:
    """The body of a session fixture: a started server, stopped afterwards. A server that cannot
    start fails the tests that need it, saying why (they are never skipped)."""
    node = PostgresNode.in_temp_dir()
    try:
        node.start()
    except PostgresNodeError as err:
        problem = str(err)
    else:
        problem = ""
    if problem:
        pytest.fail(f"the private PostgreSQL server did not start: {problem}", pytrace=False)
    try:
        yield node
    finally:
        node.stop()


class PostgresNode:
    """One PostgreSQL server under `base_dir` (made with `in_temp_dir()`, removed by `stop()`)."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.socket_dir = base_dir / "socket"
        self.log_file = base_dir / "server.log"
        self.port = _free_port()
        self._user = SERVER_USER if os.geteuid() == 0 else None
        self._process: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0  # seconds that start() took: initdb and the server's boot

    @classmethod
    def in_temp_dir(cls) -> PostgresNode:
        return cls(Path(tempfile.mkdtemp(prefix="aico-postgres-")))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> PostgresNode:
        """initdb, then the server; returns once it accepts connections."""
        began = time.monotonic()
        try:
            if (binaries := bin_dir()) is None:
                raise PostgresNodeError(NOT_INSTALLED)
            self._prepare()
            self._run(binaries / "initdb", "-D", self.data_dir, "-U", SUPERUSER, "--auth=trust",
                      "--encoding=UTF8", "--locale=C", "--no-sync")  # fmt: skip
            self._process = self._launch(binaries / "postgres")
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()  # a server that failed to start leaves nothing behind
            raise
        self.started_in = time.monotonic() - began
        return self

    def create_database(self, name: str = "") -> str:
        """A fresh, empty database; returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are cut, the server checkpoints), then the temp dir
        goes. Idempotent."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _prepare(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            account = pwd.getpwnam(self._user)
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)

    def _run(self, *command: object) -> None:
        done = subprocess.run(
            [str(part) for part in command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.base_dir,
            timeout=120,
            **self._as_server_user(),
        )
        if done.returncode != 0:
            name = Path(str(command[0])).name
            raise PostgresNodeError(f"{name} failed: {(done.stderr or done.stdout).strip()}")

    def _launch(self, postgres: Path) -> subprocess.Popen[bytes]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "on",
            "max_connections": "300",  # every store keeps a small pool; tests open many stores
        }
        options = [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]
        with open(self.log_file, "ab") as output:
            return subprocess.Popen(
                [str(postgres), "-D", str(self.data_dir), *options],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=True,
                **self._as_server_user(),
            )

    def _wait_ready(self, deadline: float) -> None:
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError as err:
                if self._process is not None and self._process.poll() is not None:
                    raise PostgresNodeError(f"the server exited:\n{self._log_tail()}") from err
                if time.monotonic() > deadline:
                    raise PostgresNodeError(f"no connection: {err}\n{self._log_tail()}") from err
                time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-_LOG_TAIL:])
        except OSError:
            return "(no server log)"

    def _as_server_user(self) -> dict:
        """`subprocess` options that make a child switch to the server's account, if not ours."""
        if self._user is None:
            return {}
        return {"user": self._user, "group": self._user, "extra_groups": []}


def _pg_config_bindir() -> Path | None:
    if not (pg_config := shutil.which("pg_config")):
        return None
    done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
