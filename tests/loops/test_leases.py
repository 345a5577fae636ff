"""services/leases.py: claim, hold, steal after the ttl, and the owner-guarded finish."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from coldplate.clock import FakeClock, as_utc
from coldplate.db.tables import Instance
from coldplate.services import leases
from coldplate.state import AppState
from tests.loops.conftest import World, run_together

TTL = timedelta(seconds=60)


def _claim(state: AppState, owner: str, limit: int = 10) -> list[str]:
    with state.tx() as session:
        return leases.claim(session, model=Instance, where=[Instance.status == "provisioning"], owner=owner,
                            now=state.clock.now(), ttl=TTL, limit=limit)


def _finish(state: AppState, owner: str, row_id: str, **values: object) -> bool:
    with state.tx() as session:
        return leases.finish(session, model=Instance, row_id=row_id, owner=owner, values=values)


def test_claim_stamps_owner_and_expiry_and_respects_where_and_limit(state: AppState, world: World,
                                                                     clock: FakeClock) -> None:
    host = world.host("h1")
    ids = sorted(world.instance(f"i{n}", host_id=host) for n in range(3))
    assert _claim(state, "a", limit=2) == ids[:2]
    for iid in ids[:2]:
        inst = world.get(iid)
        assert inst.lease_owner == "a"
        assert inst.lease_expires_at is not None
        assert as_utc(inst.lease_expires_at) == clock.now() + TTL
    assert world.get(ids[2]).lease_owner is None
    assert _claim(state, "b") == [ids[2]]  # only the free row
    assert _claim(state, "c") == []


def test_an_expired_lease_is_stolen_and_the_old_owner_can_no_longer_finish(state: AppState, world: World,
                                                                            clock: FakeClock) -> None:
    iid = world.instance("i", host_id=world.host("h1"))
    assert _claim(state, "a") == [iid]
    clock.advance(59)
    assert _claim(state, "b") == []  # still a's
    clock.advance(1)
    assert _claim(state, "b") == [iid]  # a's time ran out
    assert _finish(state, "a", iid, name="written-by-a") is False
    assert world.get(iid).name == "i" and world.get(iid).lease_owner == "b"
    assert _finish(state, "b", iid, name="written-by-b") is True
    inst = world.get(iid)
    assert inst.name == "written-by-b" and inst.lease_owner is None and inst.lease_expires_at is None
    assert _finish(state, "b", iid) is False  # finished once: the lease is gone
    assert _claim(state, "c") == [iid]  # and the row is free again


def test_owner_ids_are_unique_per_runner() -> None:
    owners = {leases.new_owner("timers") for _ in range(100)}
    assert len(owners) == 100
    assert all(":timers:" in owner for owner in owners)


def test_postgres_claims_skip_rows_another_claim_has_locked(state: AppState, world: World, db_url: str) -> None:
    """Two replicas claiming at once take disjoint rows and neither waits for the other."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: a second claim waits for the first by design")
    host = world.host("h1")
    ids = sorted(world.instance(f"i{n}", host_id=host) for n in range(6))
    held = threading.Event()
    release = threading.Event()
    first: list[str] = []

    def slow_claim() -> None:
        with state.tx() as session:
            first.extend(leases.claim(session, model=Instance, where=[Instance.status == "provisioning"],
                                      owner="a", now=state.clock.now(), ttl=TTL, limit=3))
            held.set()
            release.wait(10)

    thread = threading.Thread(target=slow_claim)
    thread.start()
    assert held.wait(10)
    started = time.monotonic()
    second = _claim(state, "b")
    waited = time.monotonic() - started
    release.set()
    thread.join()
    assert first == ids[:3] and second == ids[3:]
    assert waited < 5  # it skipped the locked rows instead of waiting for them
    with state.read() as session:
        owners = dict(session.execute(select(Instance.id, Instance.lease_owner)).tuples().all())
    assert owners == {**dict.fromkeys(ids[:3], "a"), **dict.fromkeys(ids[3:], "b")}


def test_concurrent_claimers_never_claim_one_row_twice(state: AppState, world: World,
                                                       replica: Callable[[], AppState]) -> None:
    """Two replicas claim small batches as fast as they can until nothing is left: every row
    is claimed by exactly one of them (the work's own re-checks play no part here)."""
    hosts = [world.host(f"h{n}") for n in range(8)]
    ids = {world.instance(f"i{n}", host_id=hosts[n % 8]) for n in range(64)}
    apps = [state, replica()]

    def claimer(app: AppState, owner: str) -> Callable[[], list[str]]:
        def run() -> list[str]:
            got: list[str] = []
            for _ in range(64):  # bounded: a claim that handed out held rows again would never run dry
                batch = _claim(app, owner, limit=3)
                if not batch:
                    break
                got.extend(batch)
            return got
        return run

    a, b = run_together([claimer(apps[0], "a"), claimer(apps[1], "b")])
    assert isinstance(a, list) and isinstance(b, list)
    assert sorted(a + b) == sorted(ids)  # each once: no row in both, none twice in one
    with state.read() as session:
        owners = dict(session.execute(select(Instance.id, Instance.lease_owner)).tuples().all())
    assert owners == {**dict.fromkeys(a, "a"), **dict.fromkeys(b, "b")}
