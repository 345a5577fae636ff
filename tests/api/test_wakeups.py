"""The agent long-poll's wake-up path: idle waits cost nothing, one change wakes one host, and on
PostgreSQL another replica's commit wakes it too, through a dropped or stalled listener."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url, text

from coldplate import protocol
from coldplate.api.app import create_app
from coldplate.api.auth import agent_host
from coldplate.clock import FakeClock
from coldplate.pg_wakeups import PgListener, libpq_url, notify_keys
from coldplate.server import build_state
from coldplate.services import capacity, hostnodes, join_tokens, projects
from coldplate.state import AppState, Settings
from coldplate.wakeups import Signals
from tests.conftest import PG_URL, _fresh_postgres
from tests.hosts import host_info
from tests.statements import Statements


def _register(state: AppState, count: int) -> list[tuple[str, str]]:
    """`count` hosts registered through the service: (hostnode id, agent token)."""
    with state.tx() as session:
        _, join = join_tokens.create(session, clock=state.clock, name="t")
        out = []
        for i in range(count):
            spec = host_info(f"h{i}", vcpus=64, memory_gb=512, disk_gb=4000, ports=(20000, 20999))
            host, token = hostnodes.register(session, clock=state.clock, join_token=join, spec=spec, credential=None)
            out.append((host.id, token))
        return out


def _bump(state: AppState, host_id: str) -> None:
    with state.tx() as session:
        capacity.bump_assignments(session, host_id)


@asynccontextmanager
async def _running(state: AppState) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (signals bound, listener started), called over ASGI."""
    app = create_app(state)
    async with app.router.lifespan_context(app):
        if state.listener is not None:  # its connection resets the signals: a read the tests would count
            await _until(state.listener.connected.is_set)
        limits = httpx.Limits(max_connections=None)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cp",
                                     timeout=60, limits=limits) as client:
            yield client


def _poll(client: httpx.AsyncClient, token: str, since: int, wait: float = 30, server_id: str | None = None) -> Any:
    params: dict[str, Any] = {"since": since, "wait": wait}
    if server_id is not None:
        params["server_id"] = server_id
    return client.get("/v1/agent/assignments", params=params, headers={"Authorization": f"Bearer {token}"})


async def _until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_thundering_herd_one_change_wakes_one_of_1000_and_idle_polls_read_nothing(state: AppState) -> None:
    hosts = _register(state, 1000)

    async def main() -> None:
        async with _running(state) as client:
            first = await _poll(client, hosts[0][1], since=-1, wait=0)
            version = first.json()["version"]
            polls = [asyncio.create_task(_poll(client, token, since=version)) for _, token in hosts]
            await _until(lambda: state.signals.waiting() == 1000 and all(
                state.signals.known(host_id) is not None for host_id, _ in hosts), timeout=120)
            await asyncio.sleep(0.2)  # the last reads' transactions end
            with Statements(state) as statements:
                await asyncio.sleep(1.5)  # the old long-poll re-read each host every second
                assert statements.seen == [], "an idle long-poll touched the database"
                _bump(state, hosts[417][0])
                changed = statements.seen[:]
                woken = await asyncio.wait_for(polls[417], timeout=10)
                await asyncio.sleep(0.3)
                reads = statements.seen[len(changed):]
            assert woken.status_code == 200 and woken.json()["version"] == version + 1
            assert sum(p.done() for p in polls) == 1
            assert len(reads) <= 4, reads  # one host's read: the host, its assignments, its tasks
            with Statements(state) as statements:
                state.signals.close()  # answer the other 999 now, from what they remember
                rest = await asyncio.gather(*polls)
            assert statements.count("SELECT", "instances") == 0, "a shutdown re-read the hosts' assignments"
            assert all(r.status_code == 200 and r.json()["version"] == version for r in rest[:417])

    asyncio.run(main())


def test_asking_again_with_the_same_version_waits_without_a_read(state: AppState) -> None:
    [(host_id, token)] = _register(state, 1)

    async def main() -> None:
        async with _running(state) as client:
            version = (await _poll(client, token, since=-1, wait=0)).json()["version"]
            assert (await _poll(client, token, since=version, wait=0.2)).json()["version"] == version
            with Statements(state) as statements:
                poll = asyncio.create_task(_poll(client, token, since=version, wait=0.5))
                await asyncio.sleep(0.2)
                assert not [s for s in statements.seen if "instances" in s]
                _bump(state, host_id)
                assert (await poll).json()["version"] == version + 1  # the remembered version was forgotten

    asyncio.run(main())


def test_a_deadline_with_nothing_changed_answers_without_a_read(state: AppState) -> None:
    [(host_id, token)] = _register(state, 1)

    async def main() -> None:
        async with _running(state) as client:
            first = (await _poll(client, token, since=-1, wait=0)).json()
            with Statements(state) as statements:
                again = await _poll(client, token, since=first["version"], wait=0.3)
            assert again.status_code == 200 and again.json() == first
            assert statements.count("SELECT", "instances") == 0 and statements.count("SELECT", "agent_tasks") == 0
            assert statements.count("SELECT", "hostnodes") == 1  # the token: nothing else

    asyncio.run(main())


def test_a_polls_deadline_counts_from_its_arrival_not_from_its_token_check(state: AppState) -> None:
    [(host_id, token)] = _register(state, 1)
    app = create_app(state)

    def queued_token_check() -> str:  # a worker thread that was busy for a while
        time.sleep(0.6)
        return host_id

    app.dependency_overrides[agent_host] = queued_token_check

    async def main() -> None:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://cp", timeout=10) as client:
            version = (await _poll(client, token, since=-1, wait=0)).json()["version"]
            started = time.monotonic()
            answer = await _poll(client, token, since=version, wait=0.8)
            took = time.monotonic() - started
        assert answer.status_code == 200 and answer.json()["version"] == version
        assert 0.75 < took < 1.2, took  # 0.8 s after arrival; 1.4 s if the wait began after the check

    asyncio.run(main())


def test_a_poll_naming_another_server_is_answered_at_once(state: AppState) -> None:
    """An agent whose last answer came from a server that has since restarted learns of the new one
    now (and heartbeats there), not a whole poll later."""
    [(_, token)] = _register(state, 1)

    async def main() -> None:
        async with _running(state) as client:
            first = (await _poll(client, token, since=-1, wait=0)).json()
            started = time.monotonic()
            mine = await _poll(client, token, since=first["version"], wait=0.5, server_id=first["server_id"])
            assert time.monotonic() - started >= 0.45  # the same server: it waits
            started = time.monotonic()
            other = await _poll(client, token, since=first["version"], wait=20, server_id="restarted")
            assert time.monotonic() - started < 5
            assert mine.status_code == other.status_code == 200 and other.json()["server_id"] == first["server_id"]

    asyncio.run(main())


def test_a_version_read_before_a_commit_is_not_remembered_after_it() -> None:
    signals = Signals()
    signals.subscribe("hn_1")
    stamp = signals.stamp()
    signals.notify({"hn_1"})  # a commit lands while the read is in flight
    signals.remember("hn_1", 3, stamp)
    assert signals.known("hn_1") is None
    stamp = signals.stamp()
    signals.remember("hn_1", 4, stamp)
    assert signals.known("hn_1") == 4
    signals.reset()
    assert signals.known("hn_1") is None


# PostgreSQL: two replicas on one database.

needs_pg = pytest.mark.skipif(not PG_URL, reason="COLDPLATE_TEST_POSTGRES_URL is not set")


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("COLDPLATE_TEST_POSTGRES_URL is not set")
    yield from _fresh_postgres()


@pytest.fixture
def replicas(pg_url: str) -> Iterator[tuple[AppState, AppState]]:
    clock = FakeClock()
    settings = Settings(run_loops=False)
    a = build_state(pg_url, clock=clock, settings=settings)
    b = build_state(pg_url, clock=clock, settings=settings)
    with a.tx() as session:
        projects.ensure_admin(session, clock=clock, key="cp_admin")
    yield a, b
    for s in (a, b):
        s.sessions.kw["bind"].dispose()


@needs_pg
def test_a_commit_on_another_replica_wakes_the_long_poll(replicas: tuple[AppState, AppState]) -> None:
    a, b = replicas
    [(host_id, token)] = _register(a, 1)

    async def main() -> None:
        async with _running(b) as client:
            assert b.listener is not None
            await _until(b.listener.connected.is_set)
            version = (await _poll(client, token, since=-1, wait=0)).json()["version"]
            known = b.signals.known(host_id)  # b would wait without reading
            assert isinstance(known, protocol.Assignments) and known.version == version
            poll = asyncio.create_task(_poll(client, token, since=version, wait=30))
            await _until(lambda: b.signals.waiting() == 1)
            started = time.monotonic()
            _bump(a, host_id)  # replica a commits; b's process never sees the commit itself
            answer = await asyncio.wait_for(poll, timeout=10)
            assert answer.json()["version"] == version + 1
            assert time.monotonic() - started < 5

    asyncio.run(main())


@needs_pg
def test_a_killed_listener_reconnects_and_loses_no_wake_up(replicas: tuple[AppState, AppState]) -> None:
    a, b = replicas
    [(host_id, token)] = _register(a, 1)

    async def main() -> None:
        async with _running(b) as client:
            listener = b.listener
            assert listener is not None
            await _until(listener.connected.is_set)
            version = (await _poll(client, token, since=-1, wait=0)).json()["version"]
            poll = asyncio.create_task(_poll(client, token, since=version, wait=30))
            await _until(lambda: b.signals.waiting() == 1)
            with a.tx() as session:  # kill b's listening connection, then commit before it is back
                killed = session.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'coldplate-wakeups' AND datname = current_database()")).all()
            assert killed == [(True,)]
            _bump(a, host_id)
            answer = await asyncio.wait_for(poll, timeout=15)
            assert answer.json()["version"] == version + 1
            await _until(lambda: listener.connects >= 2)

    asyncio.run(main())


class _StallingProxy:
    """A TCP proxy whose existing connections can be frozen (bytes stop flowing, sockets stay
    open: a stalled or half-open link); connections opened afterwards flow normally."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.frozen_before = 0
        self.opened = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self.frozen_before = self.opened

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self.server.accept()
            except OSError:
                return
            self.opened += 1
            number = self.opened
            up = socket.create_connection(self.upstream)
            for src, dst in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(src, dst, number), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, number: int) -> None:
        try:
            while True:
                data = src.recv(65536)
                while number <= self.frozen_before:  # frozen: hold the bytes, keep the socket
                    time.sleep(0.05)
                    if self._closed:
                        return
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self.server.close()


@needs_pg
def test_a_stalled_listener_connection_is_replaced_and_loses_no_wake_up(pg_url: str) -> None:
    state = build_state(pg_url, clock=FakeClock(), settings=Settings(run_loops=False))
    engine = state.sessions.kw["bind"]
    direct = make_url(libpq_url(engine))
    proxy = _StallingProxy((direct.host or "127.0.0.1", direct.port or 5432))
    signals = Signals()

    async def main() -> None:
        signals.bind(asyncio.get_running_loop())
        listener = PgListener(url=direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
                              engine=engine, signals=signals, origin="b", ping_s=0.2, dead_after_s=1.0)
        listener.start()
        try:
            await _until(listener.connected.is_set)
            waiter = signals.subscribe("hn_x")
            waiter.clear()
            with engine.begin() as conn:  # a relayed notification arrives while the link flows
                notify_keys(conn, "a", {"hn_x"})
            await asyncio.wait_for(waiter.wait(), timeout=5)
            waiter.clear()
            proxy.freeze()
            with engine.begin() as conn:  # this one is stuck in the frozen link
                notify_keys(conn, "a", {"hn_x"})
            started = time.monotonic()
            await asyncio.wait_for(waiter.wait(), timeout=10)
            assert listener.connects >= 2
            assert time.monotonic() - started < 8
        finally:
            listener.stop()

    try:
        asyncio.run(main())
    finally:
        proxy.close()
        engine.dispose()


def test_the_listener_stops_when_the_apps_run_ends_in_an_error(state: AppState) -> None:
    """Found in CI: a test that failed inside the app's lifespan left its listener thread running;
    once the test's database was dropped it logged a reconnect warning every half second, which
    failed later tests that assert no warnings."""
    if state.sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("the listener runs on PostgreSQL only")
    app = create_app(state)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            assert state.listener is not None
            await _until(state.listener.connected.is_set)
            raise RuntimeError("the app's run ends in an error")

    with pytest.raises(RuntimeError):
        asyncio.run(main())
    assert state.listener is not None and not state.listener._thread.is_alive()
