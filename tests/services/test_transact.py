"""AppState.transact and the instance version guard, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from coldplate.db.tables import Hostnode, Instance
from coldplate.services import actions, hostnodes, instances, join_tokens, projects
from coldplate.services.errors import Conflict, InvalidState
from coldplate.services.instances import InstanceRequest
from coldplate.state import AppState
from tests.hosts import host_info


def _host(session: Session, state: AppState, name: str) -> str:
    _, token = join_tokens.create(session, clock=state.clock, name=name)
    spec = host_info(name, gpus=2, vcpus=32, memory_gb=256, disk_gb=1000, ports=(30000, 30099), price="0.000001",
                     spot="0.000001", address="10.0.0.1")
    host, _ = hostnodes.register(session, clock=state.clock, join_token=token, spec=spec, credential=None)
    return host.id


def _instance(state: AppState) -> tuple[str, str]:
    with state.tx() as session:
        host_id = _host(session, state, "h1")
        project = projects.create_project(session, clock=state.clock, name="p")
        inst = instances.create(session, clock=state.clock, project_id=project.id,
                                req=InstanceRequest(name="a", gpu="h100"))
        return inst.id, host_id


def test_a_write_from_a_stale_read_fails_instead_of_undoing_a_newer_one(state: AppState) -> None:
    instance_id, _ = _instance(state)
    with state.read() as session:  # a read, then the transaction ends: the object lives on, detached
        inst = session.get(Instance, instance_id)
    assert inst is not None and inst.version == 1
    with state.tx() as session:  # meanwhile a terminate commits
        actions.terminate(session, clock=state.clock,
                          inst=instances.get(session, project_id=None, ref=instance_id, for_update=True))
    with pytest.raises(StaleDataError), state.tx() as stale:  # the old read goes on as if nothing happened
        stale.add(inst)
        inst.status = "ready"
    with state.read() as session:
        fresh = session.get(Instance, instance_id)
        assert fresh is not None and fresh.status == "draining" and fresh.version > 1


def test_transact_retries_a_lost_compare_and_set_and_gives_up_after_its_attempts(state: AppState) -> None:
    calls: list[int] = []

    def flaky(session: Session) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Conflict("someone else won", param="id")
        return "done"

    assert state.transact(flaky) == "done" and len(calls) == 3

    def never(session: Session) -> str:
        raise Conflict("always lost", param="id")

    with pytest.raises(Conflict):
        state.transact(never, attempts=4)


def test_transact_does_not_retry_what_a_retry_cannot_fix(state: AppState) -> None:
    calls: list[int] = []

    def invalid(session: Session) -> None:
        calls.append(1)
        raise InvalidState("no", param="status")

    with pytest.raises(InvalidState):
        state.transact(invalid)
    assert len(calls) == 1


def test_a_deadlock_is_retried_not_raised(state: AppState) -> None:
    """Two writers lock two hostnodes in opposite orders. PostgreSQL kills one with a deadlock;
    transact runs it again and both commit. (SQLite serialises writers: no deadlock to begin with.)"""
    with state.tx() as session:
        a, b = _host(session, state, "a"), _host(session, state, "b")
    postgres = state.sessions.kw["bind"].dialect.name == "postgresql"
    barrier = threading.Barrier(2)
    attempts: list[str] = []
    errors: list[BaseException] = []

    def writer(first: str, second: str) -> None:
        def fn(session: Session) -> None:
            attempts.append(first)
            bump = update(Hostnode).values(uptime_pct=Hostnode.uptime_pct - 1)
            session.execute(bump.where(Hostnode.id == first))
            if postgres and len(attempts) <= 2:
                barrier.wait(timeout=10)  # both hold their first lock before taking the second
            session.execute(bump.where(Hostnode.id == second))

        try:
            state.transact(fn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=pair) for pair in ((a, b), (b, a))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    if postgres:
        assert len(attempts) == 3  # one of the two ran twice
    with state.read() as session:
        assert sorted(session.scalars(select(Hostnode.uptime_pct))) == [98.0, 98.0]
