"""How the Bolt app meets Slack: Socket Mode when SLACK_APP_TOKEN is set, else HTTP on $PORT,
until SIGTERM or SIGINT. In both modes $PORT answers `GET /healthz` and `GET /metrics`. In Socket
Mode with an alert channel, a canary (bot/canary.py) finds a socket that went silent."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from cheroot import wsgi
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.canary import Canary, CanaryPlan

log = logging.getLogger(__name__)
# slack_sdk replaces a Socket Mode connection after 4 pings without a pong: every 3 s, a dead
# socket is replaced within about 15 s (Bolt's default of 10 s took 40-50 s, while every slash
# command sent to it was lost).
SOCKET_PING_EVERY = 3.0


Metrics = Callable[[], bytes]  # the Prometheus exposition, collected when asked
Beat = Callable[[dict[str, Any]], None]  # tells the store how the bot stands
BEAT_EVERY = 5.0


def serve(
    app: Any,
    app_token: str,
    port: int,
    check: Callable[[], None],
    metrics: Metrics | None = None,
    beat: Beat | None = None,
    canary: CanaryPlan | None = None,
) -> None:
    """Serve `app` until a signal; `check` raises to stop sooner (RabbitMQ refused our login);
    `beat` is told every few seconds how the bot's side of Slack stands (the pm's checks read
    it); `canary`: how to find a Socket Mode connection gone silent (Socket Mode only)."""
    if app_token:
        _serve_socket_mode(app, app_token, port, check, metrics, beat, canary)
    else:
        if canary is not None:
            log.info("no canary over HTTP: it watches a Socket Mode connection")
        _serve_http(app, port, check, metrics, beat)


def _serve_socket_mode(
    app: Any,
    app_token: str,
    port: int,
    check: Callable[[], None],
    metrics: Metrics | None,
    beat: Beat | None,
    plan: CanaryPlan | None,
) -> None:
    handler = SocketModeHandler(app, app_token, ping_interval=SOCKET_PING_EVERY)
    canary = _canary(plan, handler) if plan is not None else None
    handler.connect()
    log.info("listening to Slack in Socket Mode")
    if canary is not None:
        canary.start()
    try:
        server = _start(port, with_ops(_not_found, metrics))
    except OSError as exc:  # Slack's side works without it: say so, and go on
        log.warning("no /healthz and /metrics on port %d: %s", port, exc)
        server = None

    def state() -> dict[str, Any]:
        connected = {"mode": "socket", "connected": bool(handler.client.is_connected())}
        return connected | (canary.state() if canary is not None else {})

    try:
        _wait_for_signal(check, _beating(beat, state))
    finally:
        if canary is not None:
            canary.stop()
        handler.close()
        if server is not None:
            server.stop()


def _canary(plan: CanaryPlan, handler: SocketModeHandler) -> Canary:
    """A canary that hears every event the handler's socket delivers, beside Bolt (which drops
    the app's own messages before any listener sees them), and reconnects the way slack_sdk
    answers Slack's own `disconnect`: a new URL from apps.connections.open, a new connection,
    the old one closed."""
    client = handler.client
    canary = Canary(plan, lambda: client.connect_to_new_endpoint(force=True))

    def on_request(_client: Any, request: Any) -> None:
        if request.type == "events_api":
            canary.heard(request.payload.get("event") or {})

    client.socket_mode_request_listeners.append(on_request)
    return canary


def _serve_http(
    app: Any, port: int, check: Callable[[], None], metrics: Metrics | None, beat: Beat | None
) -> None:
    server = _start(port, with_ops(SlackRequestHandler(app), metrics))
    log.info("listening for Slack on http://0.0.0.0:%d/slack/events", server.bind_addr[1])
    try:
        _wait_for_signal(check, _beating(beat, lambda: {"mode": "http", "connected": True}))
    finally:
        server.stop()


def _beating(beat: Beat | None, state: Callable[[], dict[str, Any]]) -> Callable[[], None]:
    """What the wait loop calls twice a second: `beat(state())` every BEAT_EVERY seconds."""
    last = [float("-inf")]

    def tick() -> None:
        if beat is None or time.monotonic() - last[0] < BEAT_EVERY:
            return
        last[0] = time.monotonic()
        try:
            beat(state())
        except Exception as exc:  # the store is away: the pm's check says so
            log.warning("bot heartbeat not recorded: %s", exc)

    return tick


def _start(port: int, wsgi_app: Callable[..., Iterable[bytes]]) -> wsgi.Server:
    server = wsgi.Server(("0.0.0.0", port), wsgi_app, numthreads=16)
    server.prepare()
    threading.Thread(target=server.serve, name="http", daemon=True).start()
    return server


def with_ops(
    inner: Callable[..., Iterable[bytes]], metrics: Metrics | None = None
) -> Callable[..., Iterable[bytes]]:
    """`inner`, with `GET /healthz` (for load balancers) and `GET /metrics` (for Prometheus)."""

    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == "/healthz":
            return _answer(start_response, "200 OK", "text/plain", b"ok")
        if path == "/metrics" and metrics is not None:
            try:
                body = metrics()
            except Exception as exc:  # the store is away: say so, the bot goes on
                log.warning("metrics not collected: %s", exc)
                return _answer(start_response, "503 Service Unavailable", "text/plain", b"")
            return _answer(start_response, "200 OK", METRICS_TYPE, body)
        return inner(environ, start_response)

    return wsgi_app


METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _answer(start_response: Callable[..., Any], status: str, kind: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


def _not_found(_environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    return _answer(start_response, "404 Not Found", "text/plain", b"not found")


def _wait_for_signal(check: Callable[[], None], tick: Callable[[], None]) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    tick()
    while not stop.wait(0.5):  # a signal delivered to another thread does not interrupt a wait
        check()
        tick()
    log.info("stopping")
