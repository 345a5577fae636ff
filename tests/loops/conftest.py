"""Builders for loop tests: hostnodes and instances made through the services (the API's own path
below HTTP), events read back from the outbox, and replicas (one AppState each) on one database."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from coldplate.clock import FakeClock
from coldplate.db.tables import Event, Instance
from coldplate.server import build_state
from coldplate.services import hostnodes, instances, join_tokens, projects
from coldplate.services.instances import InstanceRequest
from coldplate.state import AppState, Settings
from tests.hosts import host_info


class World:
    """A project and a join token in one AppState; makes hosts and instances in it."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        with state.tx() as session:
            self.project_id = projects.create_project(session, clock=state.clock, name="loops").id
            self.join_token = join_tokens.create(session, clock=state.clock, name="loops")[1]
        self._ports = 20000
        self.tokens: dict[str, str] = {}  # hostnode id → its agent token

    def host(self, name: str, *, gpus: int = 8, heartbeat_timeout_s: int = 30) -> str:
        spec = host_info(name, gpus=gpus, ports=(self._ports, self._ports + 99),
                         heartbeat_timeout_s=heartbeat_timeout_s)
        self._ports += 100
        with self.state.tx() as session:
            host, token = hostnodes.register(session, clock=self.state.clock, join_token=self.join_token, spec=spec,
                                             credential=None)
        self.tokens[host.id] = token
        return host.id

    def instance(self, name: str, *, host_id: str | None = None, max_hours: float | None = None) -> str:
        req = InstanceRequest(name=name, gpu="h100", hostnode_id=host_id, max_hours=max_hours)
        with self.state.tx() as session:
            return instances.create(session, clock=self.state.clock, project_id=self.project_id, req=req).id

    def heartbeat(self, *host_ids: str) -> None:
        with self.state.tx() as session:
            beats = hostnodes.heartbeats(session, clock=self.state.clock, tokens=[self.tokens[h] for h in host_ids])
        assert [b.host_id for b in beats if isinstance(b, hostnodes.Beat)] == list(host_ids)

    def get(self, instance_id: str) -> Instance:
        with self.state.read() as session:
            inst = session.get(Instance, instance_id)
            assert inst is not None
            return inst

    def events(self, **match: str) -> list[Event]:
        """Outbox events whose columns equal `match` (e.g. reason="expired"), in commit order."""
        query = select(Event).order_by(Event.seq)
        for column, value in match.items():
            query = query.where(getattr(Event, column) == value)
        with self.state.read() as session:
            return list(session.scalars(query))

    def count(self, key: Callable[[Event], str | None], **match: str) -> Counter[str | None]:
        return Counter(key(event) for event in self.events(**match))


@pytest.fixture
def world(state: AppState) -> World:
    return World(state)


@pytest.fixture
def replica(db_url: str, clock: FakeClock) -> Iterator[Callable[[], AppState]]:
    """Makes more AppStates on the test's database (each its own engine and pool: another replica)."""
    made: list[AppState] = []

    def make() -> AppState:
        app = build_state(db_url, clock=clock, settings=Settings(run_loops=False, host_lost_grace_s=120))
        made.append(app)
        return app

    yield make
    for app in made:
        app.sessions.kw["bind"].dispose()


def run_together(jobs: list[Callable[[], object]]) -> list[object]:
    """Run each job in its own thread, all released at once by a barrier; re-raises the first error."""
    barrier = threading.Barrier(len(jobs))
    results: list[object] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = jobs[i]()
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
