"""How the Bolt app meets Slack: Socket Mode when SLACK_APP_TOKEN is set, else HTTP on $PORT
(with /healthz), until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

from cheroot import wsgi
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.wsgi import SlackRequestHandler

log = logging.getLogger(__name__)
# slack_sdk replaces a Socket Mode connection after 4 pings without a pong: every 3 s, a dead
# socket is replaced within about 15 s (Bolt's default of 10 s took 40-50 s, while every slash
# command sent to it was lost).
SOCKET_PING_EVERY = 3.0


def serve(app: Any, app_token: str, port: int, check: Callable[[], None]) -> None:
    """Serve `app` until a signal; `check` raises to stop sooner (RabbitMQ refused our login)."""
    if app_token:
        _serve_socket_mode(app, app_token, check)
    else:
        _serve_http(app, port, check)


def _serve_socket_mode(app: Any, app_token: str, check: Callable[[], None]) -> None:
    handler = SocketModeHandler(app, app_token, ping_interval=SOCKET_PING_EVERY)
    handler.connect()
    log.info("listening to Slack in Socket Mode")
    try:
        _wait_for_signal(check)
    finally:
        handler.close()


def _serve_http(app: Any, port: int, check: Callable[[], None]) -> None:
    server = wsgi.Server(("0.0.0.0", port), with_healthz(SlackRequestHandler(app)), numthreads=16)
    server.prepare()
    log.info("listening for Slack on http://0.0.0.0:%d/slack/events", server.bind_addr[1])
    threading.Thread(target=server.serve, name="http", daemon=True).start()
    try:
        _wait_for_signal(check)
    finally:
        server.stop()


def with_healthz(inner: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        return inner(environ, start_response)

    return wsgi_app


def _wait_for_signal(check: Callable[[], None]) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):  # a signal delivered to another thread does not interrupt a wait
        check()
    log.info("stopping")
