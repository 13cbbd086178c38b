"""A local Slack Socket Mode server (plain ws://) for the real slack_sdk / Bolt clients.

Wire it to FakeSlack so ``apps.connections.open`` hands out its URL::

    fake_slack.socket_mode_url = sm.url
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class FakeSocketMode:
    """Sends envelopes to connected Socket Mode clients and collects their acks."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, app_id: str = "A0AICO"):
        self.host, self.port, self.app_id = host, port, app_id
        self.connects = 0
        self._frames: list[dict[str, Any]] = []
        self._sent: list[dict[str, Any]] = []
        self._conns: list[ServerConnection] = []
        self._pending: dict[str, concurrent.futures.Future[dict[str, Any]]] = {}
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeSocketMode:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="FakeSocketMode", daemon=True
        )
        self._thread.start()
        self._server = self._run(self._open())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _open(self) -> Server:
        return await serve(self._session, self.host, self.port)

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        loop.close()
        self._fail_pending()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _fail_pending(self) -> None:
        with self._cond:
            pending, self._pending = list(self._pending.values()), {}
        for future in pending:
            if not future.done():
                future.set_exception(ConnectionError("FakeSocketMode stopped"))

    def __enter__(self) -> FakeSocketMode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float = 5.0) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("FakeSocketMode is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ------------------------------------------------------------------ views

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/link/?ticket=fake-ticket&app_id={self.app_id}"

    @property
    def connections(self) -> int:
        with self._cond:
            return len(self._conns)

    @property
    def frames(self) -> list[dict[str, Any]]:
        """Every JSON frame received from clients (acks), oldest first."""
        with self._cond:
            return list(self._frames)

    @property
    def sent(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._sent)

    def wait_connected(self, timeout: float = 5.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._conns, timeout):
                raise TimeoutError(f"no Socket Mode client connected within {timeout}s")

    # ------------------------------------------------------------------ server side

    async def _session(self, ws: ServerConnection) -> None:
        await ws.send(json.dumps(self._hello()))
        with self._cond:
            self._conns.append(ws)
            self.connects += 1
            self._cond.notify_all()
        try:
            async for raw in ws:
                self._on_frame(raw)
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                self._conns.remove(ws)
                self._cond.notify_all()

    def _hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "num_connections": len(self._conns) + 1,
            "debug_info": {
                "host": "applink-fake",
                "build_number": 10,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }

    def _on_frame(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            frame = {"raw": raw if isinstance(raw, str) else raw.decode("utf-8", "replace")}
        with self._cond:
            self._frames.append(frame)
            future = self._pending.pop(str(frame.get("envelope_id")), None)
            self._cond.notify_all()
        if future is not None and not future.done():
            future.set_result(frame)

    # ------------------------------------------------------------------ test side

    def push_envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool = False,
        timeout: float = 5.0,
        **extra: Any,
    ) -> str:
        """Send an envelope to the newest connection without waiting; returns envelope_id."""
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": accepts_response_payload,
            **extra,
        }
        self.wait_connected(timeout)
        with self._cond:
            ws = self._conns[-1]
            self._pending[envelope_id] = concurrent.futures.Future()
            self._sent.append(envelope)
        self._run(ws.send(json.dumps(envelope)), timeout)
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The ack frame's ``payload`` (``{}`` for a bare ack) for a pushed envelope."""
        with self._cond:
            future = self._pending.get(envelope_id)
            done = next((f for f in self._frames if f.get("envelope_id") == envelope_id), None)
        if done is not None:
            return done.get("payload") or {}
        if future is None:
            raise KeyError(f"unknown envelope_id {envelope_id}")
        try:
            frame = future.result(timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no ack for envelope {envelope_id} within {timeout}s; "
                f"{len(self.frames)} frame(s) received, {self.connections} connection(s)"
            ) from None
        return frame.get("payload") or {}

    def send_envelope(
        self, kind: str, payload: dict[str, Any], timeout: float = 5.0, **options: Any
    ) -> dict[str, Any]:
        envelope_id = self.push_envelope(kind, payload, timeout=timeout, **options)
        return self.wait_ack(envelope_id, timeout)

    def send_slash_command(self, fields: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Deliver a slash command; returns the ack payload (e.g. ``{"text": ...}``)."""
        return self.send_envelope(
            "slash_commands", dict(fields), timeout, accepts_response_payload=True
        )

    def send_event(self, event_body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Deliver an Events API body (``{"type": "event_callback", "event": ...}``)."""
        return self.send_envelope(
            "events_api", event_body, timeout, retry_attempt=0, retry_reason=""
        )

    def send_interactive(self, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Deliver an interaction payload (block_actions, view_submission...)."""
        accepts = payload.get("type") != "block_actions"
        return self.send_envelope("interactive", payload, timeout, accepts_response_payload=accepts)

    def ping_clients(self) -> None:
        """Send a websocket ping on every connection (the client's pending read returns)."""
        with self._cond:
            conns = list(self._conns)
        for ws in conns:
            with contextlib.suppress(Exception):
                self._run(self._ping(ws))

    @staticmethod
    async def _ping(ws: ServerConnection) -> None:
        await ws.ping()  # sends now; the returned pong waiter is deliberately not awaited

    def close_client(self, client: Any, timeout: float = 5.0) -> None:
        """``client.close()`` for slack_sdk's built-in SocketModeClient or a Bolt
        SocketModeHandler, minus its stalls: close() waits for the reader thread's blocking
        recv (3 s socket timeout on ws://) and for the processor's ``message_queue.get(timeout=1)``,
        so keep pinging (ends the recv) and queueing None (ignored, ends the get) until it returns.
        """
        inner = getattr(client, "client", client)  # a Bolt handler wraps the SocketModeClient
        queue = getattr(inner, "message_queue", None)
        closer = threading.Thread(target=client.close, name="close-socket-mode", daemon=True)
        closer.start()
        deadline = time.monotonic() + timeout
        while closer.is_alive() and time.monotonic() < deadline:
            self.ping_clients()
            if queue is not None:
                queue.put(None)
            closer.join(0.05)
        if closer.is_alive():
            raise TimeoutError(f"{client!r}.close() did not return within {timeout}s")

    def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask every client to reconnect, as Slack does before recycling a socket."""
        frame = {
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "applink-fake"},
            "connection_info": {"app_id": self.app_id},
        }
        with self._cond:
            conns = list(self._conns)
        for ws in conns:
            self._run(ws.send(json.dumps(frame)))
