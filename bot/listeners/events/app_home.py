"""The App Home tab: opened (`app_home_opened`, tab `home`), it is published for that user with
`views.publish` — the ops console for admins, their own tasks and spend for anyone else.

Bolt acks the event itself; the publish (a status report and a Web API call) runs on a thread of
its own, off the ack path. Nothing can be said to the user there when it fails: it is logged."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bot.usecases import UseCases
from core.domain.budget import USER
from core.domain.stats import start_of_day
from core.domain.task import TaskStatus
from core.slack import home
from core.usecases.alerts import OUTBOX
from core.usecases.operations import ACTIONS

log = logging.getLogger(__name__)

Run = Callable[..., Any]  # runs fn(*args) off the ack path
RECENT_READ = 50  # the latest tasks read to find the latest failures among them
ALERTS_READ = 200  # the latest events of the alert outbox read for its dead letters

_pool: ThreadPoolExecutor | None = None


def in_background(fn: Callable[..., Any], *args: Any) -> None:
    """The default Run: a small pool of threads shared by the Home's listeners."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="app-home")
    _pool.submit(_logged, fn, *args)


def _logged(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # off the ack path: no one to tell but the log
        log.exception("app home: %s failed", getattr(fn, "__name__", fn))


def publish(services: UseCases, client: Any, user: str, notice: str = "") -> None:
    """Build `user`'s Home and publish it (Bolt's WebClient); a failure is logged."""
    try:
        view = home_view(services, user, notice)
        client.views_publish(user_id=user, view=view)
    except Exception as exc:  # off the ack path: no one to tell but the log
        log.warning("app home of %s not published: %s", user, exc)


def home_view(services: UseCases, user: str, notice: str = "") -> dict[str, Any]:
    if user in services.admins:
        return home.admin_home(admin_picture(services), notice)
    return user_view(services, user, notice)


def admin_picture(services: UseCases) -> home.AdminPicture:
    store = services.tasks
    recent = store.recent(RECENT_READ)
    failures = [t for t in recent if t.status is TaskStatus.FAILED]
    dead = [
        home.DeadLetter(d.task_id, d.text, d.at, store.task(d.task_id))
        for d in home.dead_letters(store.tail(OUTBOX, ALERTS_READ))[: home.SHOWN_DEAD]
    ]
    return home.AdminPicture(services.status.report(), failures, dead, store.latest(ACTIONS))


def user_view(services: UseCases, user: str, notice: str = "") -> dict[str, Any]:
    store = services.tasks
    tasks = store.recent(home.SHOWN_TASKS, user=user)
    today = store.summary(start_of_day(), user=user)
    limit = None
    if services.budgets is not None:
        limit = next((x for x in services.budgets.limits(user, "") if x.scope == USER), None)
    return home.user_home(tasks, today, limit, time.time(), notice)


WATCH_FOR = 15 * 60.0  # seconds an admin's Home is kept fresh after they opened it
WATCH_EVERY = 15.0  # seconds between two looks for a change (one publish per Home at most)


class Watcher:
    """Keeps open admins' Homes fresh: every WATCH_EVERY seconds, for each admin who opened the
    Home within WATCH_FOR, the view is built again and published only if what it shows changed
    (the "as of" line aside). At most one publish per Home per look: far inside views.publish's
    tier."""

    def __init__(self, services: UseCases, clock: Callable[[], float] = time.monotonic) -> None:
        self.services, self.clock = services, clock
        self._open: dict[str, tuple[float, Any]] = {}  # admin -> (opened at, client)
        self._shown: dict[str, str] = {}  # admin -> what their Home showed last
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def opened(self, user: str, client: Any, view: dict[str, Any]) -> None:
        if user not in self.services.admins:
            return
        with self._lock:
            self._open[user] = (self.clock(), client)
            self._shown[user] = _content(view)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="home-watch", daemon=True)
                self._thread.start()

    def refresh(self) -> int:
        """One look: publishes the Homes whose content changed; returns how many."""
        now = self.clock()
        with self._lock:
            for user in [u for u, (at, _) in self._open.items() if now - at > WATCH_FOR]:
                del self._open[user]
                self._shown.pop(user, None)
            watched = list(self._open.items())
        if not watched:
            return 0
        picture = admin_picture(self.services)  # one report for every admin watching
        published = 0
        for user, (_, client) in watched:
            view = home.admin_home(picture, "")
            if _content(view) == self._shown.get(user):
                continue
            client.views_publish(user_id=user, view=view)
            self._shown[user] = _content(view)
            published += 1
        return published

    def _run(self) -> None:
        while True:
            time.sleep(WATCH_EVERY)
            try:
                self.refresh()
            except Exception as exc:  # the store or Slack is away: the next look tries again
                log.warning("app home: refresh failed: %s", exc)


_AGO = re.compile(r"\d+(?:\.\d+)? (?:s|min|h) ago")


def _content(view: dict[str, Any]) -> str:
    """What a Home shows, its "as of" lines and how long ago things were aside: a Home is
    published again when something in it changed, not because time passed."""
    blocks = [b for b in view.get("blocks", []) if b.get("type") != "context"]
    return _AGO.sub("", json.dumps(blocks, sort_keys=True))


def make_handler(services: UseCases, run: Run = in_background, watcher: Watcher | None = None):
    def on_home_opened(event: dict[str, Any], client: Any) -> None:
        user = event.get("user")
        if event.get("tab") != "home" or not user:
            return  # the Messages tab, or no one to show it to
        run(_publish_and_watch, services, client, user, watcher)

    return on_home_opened


def _publish_and_watch(services: UseCases, client: Any, user: str, watcher: Watcher | None):
    try:
        view = home_view(services, user)
        client.views_publish(user_id=user, view=view)
    except Exception as exc:  # off the ack path: no one to tell but the log
        log.warning("app home of %s not published: %s", user, exc)
        return
    if watcher is not None:
        watcher.opened(user, client, view)


def register(app: Any, services: UseCases) -> None:
    app.event("app_home_opened")(make_handler(services, watcher=Watcher(services)))
