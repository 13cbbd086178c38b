"""Health checks and their alerts: one alert per change of state, never one per failed probe;
flapping summarised; a recovery resolves the alert it ends; Slack being away loses nothing."""

from __future__ import annotations

import pytest

from core.domain.health import CONFIRM, FLAP_CHANGES, FLAP_WINDOW, Level, Probe, judge
from core.usecases.alerts import AlertDesk
from core.usecases.health import Health

DOWN, OK = Probe("broker", Level.DOWN, "RabbitMQ is not reachable"), Probe("broker", Level.OK)


def run(probes: list[Probe], start: float = 0.0, step: float = 10.0):
    state, alerts = None, []
    for i, probe in enumerate(probes):
        verdict = judge(state, probe, start + i * step)
        state, alerts = verdict.state, alerts + verdict.alerts
    return state, alerts


def test_one_failed_probe_is_no_alert_and_a_confirmed_outage_is_one():
    assert run([OK, DOWN, OK])[1] == []  # a blip
    state, alerts = run([OK] + [DOWN] * 10)
    assert [a.kind for a in alerts] == ["down"] and state.level is Level.DOWN
    assert "RabbitMQ is not reachable" in alerts[0].text()


def test_a_recovery_is_one_alert_that_says_how_long_it_lasted():
    _, alerts = run([OK] + [DOWN] * CONFIRM + [DOWN] * 10 + [OK] * 5)
    down, back = alerts
    assert back.kind == "recovered" and back.raised_at == down.at
    assert back.open_for == back.at - down.at == 10 * (CONFIRM + 10)
    assert "recovered after" in back.text()


def test_flapping_is_one_alert_and_one_more_when_it_settles():
    flaps = ([DOWN] * CONFIRM + [OK] * CONFIRM) * 6
    settle = [OK] * int(FLAP_WINDOW / 10 + 2)
    _, alerts = run([OK, *flaps, *settle])
    kinds = [a.kind for a in alerts]
    assert kinds.count("flapping") == 1 and kinds[-1] == "settled"
    assert len(kinds) == FLAP_CHANGES - 1 + 2  # the changes before it was flapping, then 2


@pytest.fixture
def desk(store, slack):
    return AlertDesk(store, slack, "C0ALERTS")


def test_an_alert_waits_while_slack_is_away_and_is_posted_once_when_it_is_back(desk, slack):
    slack.fail_next("post", count=3)
    desk.say("k1", "broker is down")

    for _ in range(3):
        assert desk.flush() == 0
    assert desk.flush() == 1 and desk.flush() == 0
    assert [m["text"] for m in slack.messages("C0ALERTS")] == ["broker is down"]


def test_the_same_happening_is_one_alert(desk, slack):
    desk.say("k1", "worker died")
    desk.say("k1", "worker died")
    desk.flush()
    assert len(slack.messages("C0ALERTS")) == 1


def test_a_recovery_updates_the_alert_it_resolves_in_place(desk, slack):
    desk.say("k1", "broker is down")
    desk.flush()
    desk.say("k2", "broker recovered", resolves="k1", resolution="resolved after 2 min")
    desk.flush()

    first, second = slack.messages("C0ALERTS")
    assert "resolved after 2 min" in first["text"] and second["text"] == "broker recovered"


def test_a_post_whose_answer_was_lost_is_found_not_repeated(desk, slack):
    slack.lose_answer_next("post")
    desk.say("k1", "broker is down")
    desk.flush()  # posted, but the answer never came
    desk.flush()
    assert len(slack.messages("C0ALERTS")) == 1


def test_checks_record_each_change_and_a_new_leader_goes_on_from_it(store, slack):
    desk = AlertDesk(store, slack, "C0ALERTS")
    now = [0.0]
    level = [Level.OK]

    def broker() -> Probe:
        return Probe("broker", level[0], "RabbitMQ")

    checks = Health(store, desk, {"broker": broker}, clock=lambda: now[0])
    checks.run()
    level[0] = Level.DOWN
    for _ in range(CONFIRM):
        now[0] += 10
        checks.run()
    desk.flush()

    # A pm elected now reads the open alert from the store, and resolves it
    successor = Health(store, desk, {"broker": broker}, clock=lambda: now[0])
    level[0] = Level.OK
    for _ in range(CONFIRM):
        now[0] += 10
        successor.run()
    desk.flush()
    down, back = slack.messages("C0ALERTS")
    assert "broker is down" in down["text"] and "resolved after 20 s" in down["text"]
    assert "broker recovered after 20 s" in back["text"]


def test_a_probe_that_fails_says_down_and_why(store, slack):
    def broken() -> Probe:
        raise TimeoutError("no answer in 5 s")

    checks = Health(store, AlertDesk(store, slack, ""), {"store": broken})
    (probe,) = checks.run()
    assert probe.level is Level.DOWN and "no answer in 5 s" in probe.detail
