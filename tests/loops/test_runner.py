"""The runner: one owner per loop and runner, a failing loop does not stop the others, the server's
background tasks run the passes; and two replicas on one database handle every entity once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from coldplate.api.app import create_app
from coldplate.clock import FakeClock
from coldplate.loops import runner
from coldplate.loops.runner import Runner
from coldplate.state import AppState
from tests.loops.conftest import World, run_together


def test_each_loop_of_each_runner_has_its_own_owner(state: AppState) -> None:
    first, second = Runner(state), Runner(state)
    assert set(first.owners) == set(runner.LOOPS) == {"timers", "hosts", "retention", "webhooks", "meter"}
    owners = list(first.owners.values()) + list(second.owners.values())
    assert len(set(owners)) == len(owners)


def test_a_failing_loop_is_logged_and_the_others_still_run(state: AppState, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def broken(app: AppState, owner: str) -> int:
        raise RuntimeError("injected")

    def fine(app: AppState, owner: str) -> int:
        seen.append(owner)
        return 7

    loops = Runner(state, {"broken": broken, "fine": fine})
    with caplog.at_level(logging.ERROR, logger="coldplate.loops.runner"):
        assert loops.run_pass() == {"broken": None, "fine": 7}
    assert seen == [loops.owners["fine"]]
    assert [(r.getMessage(), getattr(r, "loop", None)) for r in caplog.records] == [("loop pass failed", "broken")]


def test_the_server_background_runs_the_loops(state: AppState, world: World, clock: FakeClock) -> None:
    """create_app(background=start_all), as server.py does: a due instance expires without a test call."""
    state.settings.loop_interval_s = 0.05
    host = world.host("h1")
    iid = world.instance("i", host_id=host, max_hours=1)
    clock.advance(3600)
    world.heartbeat(host)
    with TestClient(create_app(state, background=runner.start_all)):
        deadline = time.monotonic() + 20
        while world.get(iid).status_reason != "expired" and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for another thread's pass, not for a timer
    assert world.get(iid).status == "draining" and world.get(iid).status_reason == "expired"


DUE, LOST_HOSTS, PER_LOST_HOST = 200, 50, 2


def test_two_replicas_handle_every_entity_exactly_once(state: AppState, world: World, clock: FakeClock,
                                                       replica: Callable[[], AppState],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Two AppStates (two replicas, each its own pool) run every loop at once against one database:
    200 due instances and 50 lost hosts (100 instances) are each handled once, with no errors."""
    healthy = [world.host(f"ok-{n}") for n in range(DUE // 8)]
    due = {world.instance(f"due-{n}", host_id=healthy[n // 8], max_hours=0.01) for n in range(DUE)}
    lost_hosts = [world.host(f"lost-{n}") for n in range(LOST_HOSTS)]
    on_lost = {world.instance(f"lost-{n}-{k}", host_id=host) for n, host in enumerate(lost_hosts)
               for k in range(PER_LOST_HOST)}
    replicas = [Runner(state), Runner(replica())]

    def run_pass_together() -> list[dict[str, object | None]]:
        results = run_together([r.run_pass for r in replicas])
        return [r for r in results if isinstance(r, dict)]

    with caplog.at_level(logging.WARNING):
        clock.advance(40)  # the instances are due, every host is silent; the healthy ones report in
        world.heartbeat(*healthy)
        first = run_pass_together()
        clock.advance(121)  # the lost hosts' grace runs out
        world.heartbeat(*healthy)
        second = run_pass_together()

    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert all(None not in result.values() for result in first + second)
    assert sum(int(str(r["timers"])) for r in first) == DUE  # the passes' own counts add up
    assert sum(r["hosts"][0] for r in first) == LOST_HOSTS  # type: ignore[index]
    assert sum(r["hosts"][1] for r in second) == LOST_HOSTS * PER_LOST_HOST  # type: ignore[index]
    expired = world.count(lambda e: e.instance_id, reason="expired")
    assert expired == dict.fromkeys(due, 1)
    host_lost = world.count(lambda e: e.instance_id, reason="host_lost")
    assert host_lost == dict.fromkeys(on_lost, 1)
    offline = world.count(lambda e: str(e.data["hostnode_id"]), type="hostnode.offline")
    assert offline == dict.fromkeys(lost_hosts, 1)
    for iid in due:
        assert world.get(iid).status == "draining"
    for iid in on_lost:
        inst = world.get(iid)
        assert inst.status == "failed" and inst.lease_owner is None
