"""The pool's control as the elected pm runs it: a decision recorded when it changes something,
an admin's pin, each host's share, the lead passed on when the leader's broker link ends."""

from __future__ import annotations

import time

import pytest

from core.domain import events, pool
from core.domain.pool import Host
from core.domain.scaling import Decision, Load
from core.usecases.leadership import Leadership
from core.usecases.scaling import PoolScaler, pool_state
from tests.twins.broker import MemoryBroker, MemoryNode

ME = Host("h1:1", minimum=1, maximum=4)


class Scripted:
    """A policy that wants what the test says, and remembers what it was shown."""

    name = "scripted"

    def __init__(self) -> None:
        self.want, self.held, self.loads = 1, "", []

    def decide(self, load: Load) -> Decision:
        self.loads.append(load)
        return Decision(load.at, self.name, load.workers, self.want, f"want {self.want}", self.held)


@pytest.fixture
def policy() -> Scripted:
    return Scripted()


@pytest.fixture
def queue() -> dict[str, int]:
    return {"ready": 0}


@pytest.fixture
def scaler(store, policy, queue) -> PoolScaler:
    bounds: list[tuple[int, int]] = []

    def make(low: int, high: int) -> Scripted:
        bounds.append((low, high))
        return policy

    scaler = PoolScaler(store, ME, make, lambda q: (queue["ready"], 1), slots=8, clock=lambda: 1e9)
    scaler.bounds_asked = bounds  # type: ignore[attr-defined]
    return scaler


def test_the_first_decision_is_recorded_with_its_reason_and_inputs(scaler, store, policy, queue):
    queue["ready"] = 12
    policy.want = 3

    scaler.decide([])

    got = store.latest(pool.DECISION)
    assert (got.type, got.data["target"], got.data["reason"]) == (pool.SCALED, 3, "want 3")
    assert got.data["shares"] == {"h1:1": 3}
    assert got.data["inputs"]["queued"] == 12 and policy.loads[-1].queued == 12


def test_a_decision_that_changes_nothing_is_not_recorded_again(scaler, store, policy):
    policy.want = 2
    scaler.decide([])
    first = store.latest(pool.DECISION).version

    for _ in range(5):
        scaler.decide([])

    assert store.latest(pool.DECISION).version == first
    policy.want = 3
    scaler.decide([])
    assert store.latest(pool.DECISION).version == first + 1
    assert policy.loads[-1].workers == 2  # the policy is told the pool it asked for


def test_a_hold_is_recorded_once_when_it_begins(scaler, store, policy):
    scaler.decide([])
    policy.held = "host saturated: CPU 99%"
    scaler.decide([])
    scaler.decide([])

    got = store.latest(pool.DECISION)
    assert got.version == 2 and got.data["held"] == "host saturated: CPU 99%"


def test_an_admins_pin_wins_over_the_policy_within_the_hosts_bounds(scaler, store, policy):
    policy.want = 1
    store.record(pool.PIN, pool.PINNED, {"workers": 9, "by": "UADMIN"})

    scaler.decide([])

    got = store.latest(pool.DECISION).data
    assert (got["target"], got["pinned"]) == (4, True)  # the host allows 4 at most
    assert "UADMIN" in got["reason"] and "4" in got["reason"]

    store.record(pool.PIN, pool.UNPINNED, {"by": "UADMIN"})
    scaler.decide([])
    assert store.latest(pool.DECISION).data["target"] == 1


def test_the_target_is_shared_out_among_the_hosts_within_their_bounds(scaler, store, policy):
    other = Host("h2:7", minimum=0, maximum=2)
    policy.want = 5

    scaler.decide([other])

    assert store.latest(pool.DECISION).data["shares"] == {"h1:1": 3, "h2:7": 2}
    assert scaler.bounds_asked[-1] == (1, 6)  # the cluster's bounds: the sums of the hosts'


def test_each_pm_runs_its_share_and_its_bounds_until_a_decision_names_it(store, policy):
    leader = PoolScaler(store, ME, lambda lo, hi: policy, lambda q: (0, 0), slots=8)
    follower = PoolScaler(
        store, Host("h2:7", 0, 2), lambda lo, hi: policy, lambda q: (0, 0), slots=8
    )
    assert follower.share(fallback=5) == 2  # no decision yet: what it runs, within its bounds

    policy.want = 4
    leader.decide([Host("h2:7", 0, 2)])

    assert (leader.share(fallback=1), follower.share(fallback=0)) == (2, 2)


def test_shares_go_evenly_and_every_pm_computes_the_same_split():
    hosts = [Host("b", 0, 10), Host("a", 0, 10), Host("c", 2, 3)]
    assert pool.shares(7, hosts) == {"a": 3, "b": 2, "c": 2}
    assert pool.shares(0, hosts) == {"a": 0, "b": 0, "c": 2}  # minimums hold
    assert pool.shares(99, hosts) == {"a": 10, "b": 10, "c": 3}  # and maximums


def test_the_load_counts_arrivals_and_service_times_from_the_store(store, policy):
    now = [1e9]
    scaler = PoolScaler(
        store, ME, lambda lo, hi: policy, lambda q: (0, 0), slots=8, clock=lambda: now[0]
    )
    for task_id in ("a", "b", "c"):
        store.append(task_id, events.SUBMITTED, {"user": "U", "channel": "C", "prompt": "p"})
    now[0] = time.time()

    scaler.decide([])

    load = policy.loads[-1]
    assert load.arrival_rate == pytest.approx(3 / 60, rel=0.01)  # three in the last minute


def test_the_pool_state_shows_leader_decision_pin_and_hosts(scaler, store, policy):
    store.heartbeat("pm:h1:1", {"kind": "pm", "pm": "h1:1", "min": 1, "max": 4, "workers": 2})
    store.heartbeat("h1:55", {"busy": 1, "capacity": 8})  # a task worker is no host
    store.record(pool.PIN, pool.PINNED, {"workers": 2, "by": "UADMIN"})
    scaler.decide([])

    state = pool_state(store, time.time())
    assert [h.id for h in state.hosts] == ["h1:1"] and state.hosts[0].workers == 2
    assert (state.desired, state.pin.workers) == (2, 2)


def test_one_pm_leads_and_another_takes_over_when_its_link_ends(store):
    node = MemoryNode()
    first_link, second_link = MemoryBroker(node, "pm1"), MemoryBroker(node, "pm2")
    elected: list[str] = []
    first = Leadership(first_link, store, "h1:1", on_elected=lambda: elected.append("h1:1"))
    second = Leadership(second_link, store, "h2:2", on_elected=lambda: elected.append("h2:2"))

    assert (first.tick(), second.tick()) == (True, False)
    assert (first.tick(), second.tick()) == (True, False)  # one election, one event
    assert store.latest(pool.LEADER).data == {"leader": "h1:1", "previous": ""}

    first_link.close()  # the leader's process died: its connection ended

    assert second.tick() is True
    got = store.latest(pool.LEADER)
    assert (got.version, got.data["leader"], got.data["previous"]) == (2, "h2:2", "h1:1")
    assert elected == ["h1:1", "h2:2"]
    second_link.close()


def test_a_leader_keeps_the_lead_while_no_broker_answers_and_yields_it_after(store):
    node = MemoryNode()
    first_link, second_link = MemoryBroker(node, "pm1"), MemoryBroker(node, "pm2")
    first, second = Leadership(first_link, store, "h1:1"), Leadership(second_link, store, "h2:2")
    assert (first.tick(), second.tick()) == (True, False)

    # When the broker is away from the leader (restarted, its queue gone) and the other gets it
    first_link.connected.clear()
    node.exclusive.clear()
    assert first.tick() is True  # no broker: the checks that say so keep running
    assert second.tick() is True

    # Then, once the broker answers the first again, it steps down
    first_link.connected.set()
    assert first.tick() is False and first.leader is False
    assert store.latest(pool.LEADER).data["leader"] == "h2:2"
    first_link.close()
    second_link.close()
