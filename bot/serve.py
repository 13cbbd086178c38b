"""How the Bolt app meets Slack: Socket Mode when SLACK_APP_TOKEN is set, else HTTP on $PORT,
until SIGTERM or SIGINT. In both modes $PORT answers `GET /healthz` and `GET /metrics`, served by
bot/http.py (one event loop for every socket, a pool of threads for the app). Over HTTP, a signed
request whose body cannot be parsed gets 400, a forged one 401, before Bolt sees either. In Socket
Mode with an alert channel, a canary (bot/canary.py) finds a socket that went silent."""

from __future__ import annotations

import io
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from slack_bolt import BoltContext, BoltRequest, BoltResponse
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.adapter.wsgi.http_request import WsgiHttpRequest
from slack_bolt.request.internals import build_context
from slack_sdk.signature import SignatureVerifier

from bot.canary import Canary, CanaryPlan
from bot.http import Server
from core import shutdown

log = logging.getLogger(__name__)
# slack_sdk replaces a Socket Mode connection after 4 pings without a pong: every 3 s, a dead
# socket is replaced within about 15 s (Bolt's default of 10 s took 40-50 s, while every slash
# command sent to it was lost).
SOCKET_PING_EVERY = 3.0
# How long the bot waits, when it stops, for slack_sdk's Socket Mode client to close. Its close()
# joins the thread that reads the socket, and that join can hang (a known race with a session
# that starts as it closes): the process exits anyway, the socket closing with it.
SOCKET_CLOSE_WITHIN = 5.0


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
    signing_secret: str | None = None,
) -> None:
    """Serve `app` until a signal; `check` raises to stop sooner (RabbitMQ refused our login);
    `beat` is told every few seconds how the bot's side of Slack stands (the pm's checks read
    it); `canary`: how to find a Socket Mode connection gone silent (Socket Mode only);
    `signing_secret`: what HTTP requests are signed with (by default the one `app` verifies)."""
    if app_token:
        _serve_socket_mode(app, app_token, port, check, metrics, beat, canary)
    else:
        if canary is not None:
            log.info("no canary over HTTP: it watches a Socket Mode connection")
        if signing_secret is None:  # Bolt keeps it without a public name
            signing_secret = str(getattr(app, "_signing_secret", "") or "")
        _serve_http(app, port, check, metrics, beat, signing_secret)


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
        if not close_within(handler.close, SOCKET_CLOSE_WITHIN):
            log.warning(
                "the Socket Mode client did not close within %.0f s: exiting without it",
                SOCKET_CLOSE_WITHIN,
            )
        if server is not None:
            server.stop()


def close_within(close: Callable[[], None], seconds: float) -> bool:
    """Run `close` on a daemon thread; whether it returned within `seconds` (an error it raised
    is logged and counts as returned: there is nothing more to close)."""

    def run() -> None:
        try:
            close()
        except Exception:
            log.exception("closing the Socket Mode client failed")

    closer = threading.Thread(target=run, name="close-socket-mode", daemon=True)
    closer.start()
    closer.join(seconds)
    return not closer.is_alive()


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
    app: Any,
    port: int,
    check: Callable[[], None],
    metrics: Metrics | None,
    beat: Beat | None,
    signing_secret: str,
) -> None:
    bolt = checked_bodies(FormsAsSent(app, EVENTS_PATH), signing_secret)
    server = _start(port, with_ops(bolt, metrics))
    log.info("listening for Slack on http://0.0.0.0:%d%s", server.port, EVENTS_PATH)
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


def _start(port: int, wsgi_app: Callable[..., Iterable[bytes]]) -> Server:
    return Server(wsgi_app, "0.0.0.0", port).start()


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


WsgiApp = Callable[..., Iterable[bytes]]
EVENTS_PATH = "/slack/events"
TEXT = "text/plain; charset=utf-8"
INVALID = json.dumps({"error": "invalid request"}).encode()  # what Bolt itself answers a forgery


def checked_bodies(inner: WsgiApp, signing_secret: str, path: str = EVENTS_PATH) -> WsgiApp:
    """`inner` (Bolt's WSGI handler), behind a check of each POST to `path`: a request that is
    not signed with `signing_secret` gets 401 before anything is said about its body; a signed
    one whose body Bolt could not parse gets 400 with what is wrong (Bolt would raise: a 500 with
    no body). Without a secret (verification off) only the body is checked."""
    verifier = SignatureVerifier(signing_secret) if signing_secret else None

    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != path:
            return inner(environ, start_response)
        body = _body(environ)
        if verifier is not None and not _signed(verifier, body, environ):
            return _answer(start_response, "401 Unauthorized", "application/json", INVALID)
        problem = body_problem(body, environ.get("CONTENT_TYPE", ""))
        if problem is not None:
            return _answer(start_response, "400 Bad Request", TEXT, problem.encode() + b"\n")
        environ["wsgi.input"] = io.BytesIO(body)  # read once here: Bolt reads it again
        return inner(environ, start_response)

    return wsgi_app


class FormsAsSent(SlackRequestHandler):
    """Bolt's WSGI handler, reading every form as Slack sent it. Bolt (1.x) takes a form body
    in which the letters "payload" appear anywhere for an interaction, finds no `payload` field
    in a slash command that merely mentions the word, and reads it as {}: `/aico task fix the
    payload parser` reached no listener and Slack showed the user an error."""

    def dispatch(self, request: WsgiHttpRequest) -> BoltResponse:
        bolt = BoltRequest(
            body=request.get_body(), query=request.query_string, headers=request.get_headers()
        )
        if not bolt.body and "payload" in bolt.raw_body and not bolt.raw_body.startswith("{"):
            fields = dict(parse_qsl(bolt.raw_body, keep_blank_values=True))
            if "payload" not in fields and bolt.content_type != "application/json":
                bolt.body = fields
                bolt.context = build_context(BoltContext({}), fields)
        return self.app.dispatch(bolt)


def _body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    return stream.read(length) if stream is not None and length > 0 else b""


def _signed(verifier: SignatureVerifier, body: bytes, environ: dict[str, Any]) -> bool:
    timestamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP")
    signature = environ.get("HTTP_X_SLACK_SIGNATURE")
    try:
        return verifier.is_valid(body, timestamp, signature)
    except ValueError:  # a timestamp that is not a number, a body that is not UTF-8
        return False


def body_problem(body: bytes, content_type: str) -> str | None:
    """What keeps Bolt from reading `body`, or None. Bolt decodes it as UTF-8, then parses JSON
    when the content type says so or the body starts with `{`, else a form, whose `payload`
    field (interactions) is JSON; each JSON must be an object."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    if not text:
        return None
    if content_type.split(";")[0] == "application/json" or text.startswith("{"):
        return _json_problem(text, "the body")
    if "payload" in text:
        payload = dict(parse_qsl(text, keep_blank_values=True)).get("payload")
        if payload is not None:
            return _json_problem(payload, "the form's payload")
    return None


def _json_problem(text: str, what: str) -> str | None:
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"{what} is not valid JSON: {exc}"
    return None if isinstance(value, dict) else f"{what} is not a JSON object"


def _not_found(_environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    return _answer(start_response, "404 Not Found", "text/plain", b"not found")


def _wait_for_signal(check: Callable[[], None], tick: Callable[[], None]) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if shutdown.requested():  # it came while the bot started, and did not end it
        stop.set()
    tick()
    while not stop.wait(0.5):  # a signal delivered to another thread does not interrupt a wait
        check()
        tick()
    log.info("stopping")
