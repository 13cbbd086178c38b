"""A local Slack Socket Mode server (plain ws://) for the real slack_sdk / Bolt clients.

Wire it to FakeSlack so ``apps.connections.open`` hands out its URL::

    fake_slack.socket_mode_url = sm.url

Where Slack's behaviour is documented or reported, the fake follows it:

* an envelope must be acknowledged within 3 seconds (docs.slack.dev, "Using Socket Mode":
  acknowledge each envelope by its ``envelope_id``); an ``events_api`` envelope that is not is
  delivered again, with ``retry_attempt`` counting up and a ``retry_reason``, up to 3 retries as
  the Events API does ("Slack's API server delivers to any of the active connections and does
  retries for Events API messages": a Slack SDK maintainer, github.com/slackapi/bolt-python/
  issues/1071). Slash commands and interactions are not retried: Slack shows the user that the
  app did not answer. The fake retries at once on each timeout, where Slack spaces its later
  retries out; each copy gets an envelope_id of its own, the payload (event_id) stays the same.
* ``disconnect`` frames (reasons ``warning``, ``refresh_requested``, ``link_disabled``) ask the
  client to open a new connection; Slack then drops the old socket.
* a socket can go mute (:meth:`FakeSocketMode.go_silent`): open at TCP level, but nothing comes
  back, pongs included, as when a NAT or proxy silently drops a connection. Only the client's
  own keepalive can notice (slack_sdk's built-in client: no pong for 4 x ``ping_interval``).
* a socket can go deaf (:meth:`FakeSocketMode.go_deaf`): alive, answering pings and taking acks,
  but Slack's side routes no envelope to it any more: the silent socket bolt-python users report
  most, which no keepalive notices. An envelope with no other live connection to go to is lost
  (:attr:`FakeSocketMode.lost`); an ``events_api`` one is delivered again after ``ack_timeout``,
  as above, once a live connection is there.
* Slack sends the app its own posts back as ``message`` events when it is subscribed to them in
  a channel it is in (bolt-python drops them by default: "Resulting in an infinite loop by
  responding to the app's own message events is a common pitfall", a Slack SDK maintainer,
  github.com/slackapi/bolt-python/issues/307). :meth:`FakeSocketMode.attach` wires a
  :class:`~aico.fakes.slack.FakeSlack` so that its ``chat.postMessage`` posts and
  ``chat.delete`` deletions (``message_deleted``) reach the socket as ``events_api`` envelopes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from aico.fakes.slack import FakeSlack

ACK_TIMEOUT = 3.0  # seconds Slack waits for an envelope's ack
MAX_RETRIES = 3  # Events API deliveries after the first
RETRIED_KINDS = frozenset({"events_api"})
DISCONNECT_REASONS = ("warning", "refresh_requested", "link_disabled")


@dataclass
class _Delivery:
    """One envelope as the test pushed it, and every copy of it the server sent."""

    kind: str
    payload: dict[str, Any]
    options: dict[str, Any]
    ids: list[str]
    future: concurrent.futures.Future[dict[str, Any]] = field(
        default_factory=concurrent.futures.Future
    )
    retries: int = 0


class FakeSocketMode:
    """Sends envelopes to connected Socket Mode clients and collects their acks.

    ``ack_timeout`` (seconds, None: never) is how long an envelope waits for its ack before it
    counts as timed out (:attr:`timed_out`) and, for ``events_api``, is delivered again.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        app_id: str = "A0AICO",
        ack_timeout: float | None = ACK_TIMEOUT,
    ):
        self.host, self.port, self.app_id = host, port, app_id
        self.ack_timeout = ack_timeout
        self.connects = 0
        self._frames: list[dict[str, Any]] = []
        self._dropped: list[dict[str, Any]] = []
        self._sent: list[dict[str, Any]] = []
        self._timed_out: list[str] = []
        self._conns: list[ServerConnection] = []
        self._muted: set[ServerConnection] = set()
        self._deaf: set[ServerConnection] = set()
        self._lost: list[dict[str, Any]] = []
        self._deliveries: dict[str, _Delivery] = {}
        self._drop_acks = 0
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

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
        # No server keepalive pings: they would close a muted connection by themselves.
        return await serve(self._session, self.host, self.port, ping_interval=None)

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
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with self._cond:
            muted = list(self._muted)
        for ws in muted:  # a mute socket would never finish a close handshake
            ws.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _fail_pending(self) -> None:
        with self._cond:
            pending, self._deliveries = list(self._deliveries.values()), {}
        for delivery in pending:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                delivery.future.set_exception(ConnectionError("FakeSocketMode stopped"))

    def __enter__(self) -> FakeSocketMode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float = 5.0) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("FakeSocketMode is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the server's loop without waiting for it (cancelled by stop())."""

        async def start() -> None:
            task = asyncio.get_running_loop().create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._run(start())

    # ------------------------------------------------------------------ views

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/link/?ticket=fake-ticket&app_id={self.app_id}"

    @property
    def connections(self) -> int:
        """Open connections, mute ones included (they stay open at TCP level)."""
        with self._cond:
            return len(self._conns)

    @property
    def live_connections(self) -> int:
        """Open connections that are neither mute nor deaf: the ones envelopes go to."""
        with self._cond:
            return len(self._live())

    @property
    def deaf_connections(self) -> int:
        """Open connections that answer pings and take acks but get no envelope."""
        with self._cond:
            return len(self._deaf)

    @property
    def frames(self) -> list[dict[str, Any]]:
        """Every JSON frame received from clients (acks), oldest first."""
        with self._cond:
            return list(self._frames)

    @property
    def dropped(self) -> list[dict[str, Any]]:
        """Acks the server threw away (:meth:`drop_acks`), as if they never arrived."""
        with self._cond:
            return list(self._dropped)

    @property
    def sent(self) -> list[dict[str, Any]]:
        """Every envelope sent, redeliveries included, oldest first."""
        with self._cond:
            return list(self._sent)

    @property
    def lost(self) -> list[dict[str, Any]]:
        """Envelopes Slack had no live connection for (:meth:`deliver_event`): never sent."""
        with self._cond:
            return list(self._lost)

    @property
    def timed_out(self) -> list[str]:
        """envelope_ids of the copies that got no ack within ``ack_timeout``."""
        with self._cond:
            return list(self._timed_out)

    def copies(self, envelope_id: str) -> list[dict[str, Any]]:
        """Every copy sent of the envelope ``envelope_id`` (the first, then its redeliveries)."""
        with self._cond:
            delivery = self._deliveries.get(envelope_id)
            ids = set(delivery.ids) if delivery else set()
            return [e for e in self._sent if e["envelope_id"] in ids]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Re-check ``predicate()`` on every connection, frame or delivery; its truthy value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (value := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"FakeSocketMode.wait_for: {getattr(predicate, '__qualname__', predicate)}"
                        f" still {value!r} after {timeout}s ({self.connects} connects, "
                        f"{len(self._conns)} open, {len(self._muted)} mute, "
                        f"{len(self._deaf)} deaf)"
                    )
                self._cond.wait(remaining)
            return value

    def wait_connected(self, timeout: float = 5.0) -> None:
        """Until a client is connected on a socket that is neither mute nor deaf."""
        try:
            self.wait_for(self._live, timeout)
        except TimeoutError:
            raise TimeoutError(f"no Socket Mode client connected within {timeout}s") from None

    def wait_connects(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` connections were made in all (reconnects included)."""
        self.wait_for(lambda: self.connects >= count, timeout)

    def _live(self) -> list[ServerConnection]:
        return [ws for ws in self._conns if ws not in self._muted and ws not in self._deaf]

    def _answering(self) -> list[ServerConnection]:
        """Connections whose frames the server reads (deaf ones too): they answer pings."""
        return [ws for ws in self._conns if ws not in self._muted]

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
                self._muted.discard(ws)
                self._deaf.discard(ws)
                self._cond.notify_all()

    def _hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "num_connections": len(self._live()) + 1,
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
        envelope_id = str(frame.get("envelope_id"))
        with self._cond:
            delivery = self._deliveries.get(envelope_id)
            if delivery is not None and self._drop_acks > 0:
                self._drop_acks -= 1
                self._dropped.append(frame)
                return
            self._frames.append(frame)
            self._cond.notify_all()
        if delivery is not None:  # the first ack of any copy answers the envelope
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                delivery.future.set_result(frame)

    async def _watch(self, delivery: _Delivery) -> None:
        """Time the envelope's ack; deliver an events_api envelope again while it has none."""
        while self.ack_timeout is not None:
            await asyncio.sleep(self.ack_timeout)
            with self._cond:
                if delivery.future.done():
                    return
                if delivery.ids[-1] not in self._timed_out:
                    self._timed_out.append(delivery.ids[-1])
                    self._cond.notify_all()
                if delivery.kind not in RETRIED_KINDS or delivery.retries >= MAX_RETRIES:
                    return
                live = self._live()
                if not live:
                    continue  # no one to deliver to: try again after another timeout
                ws = live[-1]
                delivery.retries += 1
                envelope = self._envelope(
                    delivery, retry_attempt=delivery.retries, retry_reason="timeout"
                )
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(envelope))

    def _envelope(self, delivery: _Delivery, sent: bool = True, **retry: Any) -> dict[str, Any]:
        """A new copy of ``delivery`` with an envelope_id of its own (lock held); ``sent``: it
        goes to a connection (else it is :attr:`lost`)."""
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "payload": delivery.payload,
            "type": delivery.kind,
            **delivery.options,
            **retry,
        }
        delivery.ids.append(envelope_id)
        self._deliveries[envelope_id] = delivery
        (self._sent if sent else self._lost).append(envelope)
        self._cond.notify_all()
        return envelope

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
        """Send an envelope to the newest live connection without waiting; returns envelope_id."""
        options = {"accepts_response_payload": accepts_response_payload, **extra}
        delivery = _Delivery(kind, payload, options, ids=[])
        with self._cond:
            self.wait_connected(timeout)
            ws = self._live()[-1]
            envelope = self._envelope(delivery)
        self._run(ws.send(json.dumps(envelope)), timeout)
        self._spawn(self._watch(delivery))
        return envelope["envelope_id"]

    def wait_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The ack frame's ``payload`` (``{}`` for a bare ack) for a pushed envelope; an ack of
        any of its copies counts."""
        with self._cond:
            delivery = self._deliveries.get(envelope_id)
        if delivery is None:
            raise KeyError(f"unknown envelope_id {envelope_id}")
        try:
            frame = delivery.future.result(timeout)
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

    def deliver_event(self, event_body: dict[str, Any]) -> str:
        """Deliver an Events API body as Slack does on its own (not on a test's request): to the
        newest live connection without waiting for the ack, or, with none live, to no one (it is
        :attr:`lost`, then delivered again after ``ack_timeout`` like any unacked event).
        Returns the envelope_id."""
        options = {"accepts_response_payload": False, "retry_attempt": 0, "retry_reason": ""}
        delivery = _Delivery("events_api", event_body, options, ids=[])
        with self._cond:
            live = self._live()
            envelope = self._envelope(delivery, sent=bool(live))
        if live:
            self._spawn(self._send(live[-1], envelope))
        self._spawn(self._watch(delivery))
        return str(envelope["envelope_id"])

    @staticmethod
    async def _send(ws: ServerConnection, envelope: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(envelope))

    def attach(self, slack: FakeSlack) -> None:
        """Be ``slack``'s Socket Mode server: ``apps.connections.open`` hands out :attr:`url`,
        and the Events API bodies ``slack`` makes for the app (its own posts coming back as
        ``message`` events, see :attr:`FakeSlack.on_event`) are delivered here."""
        slack.socket_mode_url = self.url
        slack.on_event.append(self._relay)

    def _relay(self, event_body: dict[str, Any]) -> None:
        if self._loop is not None:  # a stopped server delivers nothing, as Slack's side away
            self.deliver_event(event_body)

    def drop_acks(self, count: int = 1) -> None:
        """Throw away the next ``count`` acks, as if they never reached Slack in time: the
        envelopes time out (and events_api ones are delivered again)."""
        with self._cond:
            self._drop_acks += count

    def ping_clients(self) -> None:
        """Send a websocket ping on every connection that is not mute, deaf ones included (the
        client's pending read returns)."""
        with self._cond:
            conns = self._answering()
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

    def send_disconnect(
        self, reason: str = "refresh_requested", close_after: float | None = None
    ) -> None:
        """Send every live connection Slack's ``disconnect`` frame (docs.slack.dev, "Using Socket
        Mode", disconnect events): ``warning`` (the connection closes soon), ``refresh_requested``
        (Slack recycles the socket: open a new one), ``link_disabled`` (Socket Mode was turned
        off for the app). ``close_after``: also close those connections that many seconds later,
        as Slack does once it has asked (None: leave them to the client)."""
        if reason not in DISCONNECT_REASONS:
            raise ValueError(f"Slack sends no disconnect with reason {reason!r}")
        frame = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}
        with self._cond:
            conns = self._live()
        for ws in conns:
            self._run(ws.send(json.dumps(frame)))
            if close_after is not None:
                self._spawn(self._close_later(ws, close_after))

    @staticmethod
    async def _close_later(ws: ServerConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        await ws.close(1001, "refresh")

    def go_silent(self) -> int:
        """Make the open connections mute: they stay open at TCP level, but the server reads
        nothing from them (no pongs, no acks) and sends them nothing (no envelopes). Connections
        made later behave normally. Returns how many went mute."""
        with self._cond:
            conns = self._answering()
            self._muted.update(conns)
            self._cond.notify_all()
        for ws in conns:
            self._run(self._pause(ws))
        return len(conns)

    def speak_again(self) -> None:
        """Un-mute the mute connections: what they sent meanwhile is read now (a client that
        gave up on one has closed it, and it goes away)."""
        with self._cond:
            conns, self._muted = list(self._muted), set()
            self._cond.notify_all()
        for ws in conns:
            with contextlib.suppress(Exception):
                self._run(self._resume(ws))

    def go_deaf(self) -> int:
        """Make the live connections deaf: they stay open, answer pings (pongs flow) and take
        acks, but no envelope is routed to them any more, as when Slack's side stops routing
        events to a connection. Connections made later behave normally. Returns how many went
        deaf."""
        with self._cond:
            conns = self._live()
            self._deaf.update(conns)
            self._cond.notify_all()
        return len(conns)

    @staticmethod
    async def _pause(ws: ServerConnection) -> None:
        ws.transport.pause_reading()

    @staticmethod
    async def _resume(ws: ServerConnection) -> None:
        ws.transport.resume_reading()
