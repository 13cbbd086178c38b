"""The App Home's buttons: scale the pool (+1, -1, auto), run the recovery, retry a dead-lettered
task (admins only), and refresh (anyone). A click from the Home has no response_url, so its
answer is the Home itself, published again with a line on top saying what was done (or why it
was refused). Acked at once; the one service call and the publish run off the ack path."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from bot.listeners.commands.aico import control
from bot.listeners.events.app_home import Run, in_background, publish
from bot.usecases import UseCases
from core.domain import pool as pool_domain
from core.errors import InvalidInput
from core.slack import blocks, home
from core.usecases.status import pool_state

log = logging.getLogger(__name__)

Act = Callable[[UseCases, str, str], str]  # (services, user, the button's value) -> the notice
ADMINS_ONLY = "Only admins (`AICO_ADMINS`) can use the ops console's buttons."


def scale_by(delta: int) -> Act:
    def act(services: UseCases, user: str, _value: str) -> str:
        if services.pool is None:
            return blocks.refused("The pool is not run from here.")
        workers = max(0, min(pool_domain.MAX_PIN, desired(services) + delta))
        log.info("pool: pinned to %d from the app home by %s", workers, user)
        return services.pool.pin(workers, by=user)

    return act


def desired(services: UseCases) -> int:
    """The workers wanted now: the pin if there is one, else the policy's last target (else 0)."""
    state = pool_state(services.tasks, time.time())
    if state.pin is not None:
        return state.pin.workers
    return state.desired or 0


def scale_auto(services: UseCases, user: str, _value: str) -> str:
    if services.pool is None:
        return blocks.refused("The pool is not run from here.")
    log.info("pool: handed back to the policy from the app home by %s", user)
    return services.pool.auto(by=user)


def recover(services: UseCases, user: str, _value: str) -> str:
    if services.recover is None:
        return blocks.refused("Recovery is not run from here.")
    log.info("recovery asked from the app home by %s", user)
    services.recover.ask(user, "")  # no response_url: the outcome shows on the Home
    return (
        ":recycle: Recovery asked: the elected `aico pm` runs the checks, the sweep and the "
        "store's upkeep within seconds; *Refresh* shows its last run at the bottom."
    )


def retry(services: UseCases, user: str, value: str) -> str:
    return control(services, "retry", value, user)


def refresh(services: UseCases, user: str, _value: str) -> str:
    return ""


ACTS: dict[str, Act] = {
    home.SCALE_UP_ACTION: scale_by(+1),
    home.SCALE_DOWN_ACTION: scale_by(-1),
    home.SCALE_AUTO_ACTION: scale_auto,
    home.RECOVER_ACTION: recover,
    home.RETRY_ACTION: retry,
}


def answer(services: UseCases, client: Any, action_id: str, user: str, value: str) -> None:
    """Do what the button says (if `user` may), then publish their Home with the outcome."""
    act = ACTS.get(action_id, refresh)
    if action_id in ACTS and user not in services.admins:
        notice = blocks.refused(ADMINS_ONLY)
    else:
        try:
            notice = act(services, user, value)
        except InvalidInput as exc:
            notice = blocks.refused(str(exc))
    publish(services, client, user, home.notice_at(notice, time.time()) if notice else "")


def make_handler(services: UseCases, run: Run = in_background):
    def handle_home_button(ack: Any, body: dict[str, Any], action: dict[str, Any], client: Any):
        ack()
        user = body["user"]["id"]
        run(answer, services, client, action["action_id"], user, str(action.get("value", "")))

    return handle_home_button


def register(app: Any, services: UseCases) -> None:
    handler = make_handler(services)
    for action_id in (*home.ADMIN_ACTIONS, home.RETRY_ACTION, home.REFRESH_ACTION):
        app.action(action_id)(handler)
