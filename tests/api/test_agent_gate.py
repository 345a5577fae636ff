"""The agents' calls in groups, on threads of their own: a burst of heartbeats and token checks is a
few transactions, not one each, and it never queues a user's request behind it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence

import httpx
import pytest
from anyio import CapacityLimiter

from coldplate.api.agent_gate import AgentGate
from coldplate.api.app import create_app
from coldplate.api.batcher import Batcher
from coldplate.services import hostnodes
from coldplate.services.errors import Unauthorized
from coldplate.state import AppState
from tests.api.test_wakeups import _register, _running
from tests.conftest import ADMIN_KEY
from tests.statements import Statements

# --- the Batcher on its own ---------------------------------------------------------------------


class Recorder:
    """Work that doubles each number, fails for a negative one (the whole group, for -1000), and
    records each group it is given; it blocks while `gate` is clear, so that a test can make calls
    arrive during a group."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.groups.append(list(items))
        self.gate.wait(10)
        if -1000 in items:
            raise RuntimeError("the whole group failed")
        return [ValueError(f"negative: {i}") if i < 0 else 2 * i for i in items]


async def _first_group_held(work: Recorder) -> tuple[Batcher[int, int], asyncio.Task[int]]:
    """A batcher whose first group (the call 1) is in its worker thread, held there by `work.gate`."""
    batcher = Batcher(work, limiter=CapacityLimiter(2))
    work.gate.clear()
    first = asyncio.create_task(batcher.submit(1))
    while not work.groups:
        await asyncio.sleep(0.01)
    return batcher, first


def test_a_lone_call_runs_at_once_as_a_group_of_one() -> None:
    work = Recorder()

    async def main() -> None:
        batcher = Batcher(work, limiter=CapacityLimiter(2))
        assert await asyncio.wait_for(batcher.submit(21), 5) == 42
        assert await asyncio.wait_for(batcher.submit(5), 5) == 10

    asyncio.run(main())
    assert work.groups == [[21], [5]]


def test_calls_arriving_while_a_group_runs_go_together_as_the_next() -> None:
    work = Recorder()

    async def main() -> None:
        batcher, first = await _first_group_held(work)
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(2, 302)]
        await asyncio.sleep(0.1)
        work.gate.set()
        assert await first == 2
        assert await asyncio.gather(*rest) == [2 * i for i in range(2, 302)]
        assert batcher.groups == 2

    asyncio.run(main())
    assert work.groups == [[1], list(range(2, 302))]


def test_a_group_is_at_most_max_group_calls() -> None:
    work = Recorder()

    async def main() -> None:
        batcher = Batcher(work, limiter=CapacityLimiter(1), max_group=100)
        assert await asyncio.gather(*(batcher.submit(i) for i in range(250))) == [2 * i for i in range(250)]

    asyncio.run(main())
    assert [len(g) for g in work.groups] == [100, 100, 50]


def test_one_calls_error_is_its_own_and_a_failed_group_fails_only_its_callers() -> None:
    work = Recorder()

    async def main() -> None:
        batcher = Batcher(work, limiter=CapacityLimiter(2))
        answers = await asyncio.gather(batcher.submit(1), batcher.submit(-1), batcher.submit(3),
                                       return_exceptions=True)
        assert answers[0] == 2 and answers[2] == 6
        assert isinstance(answers[1], ValueError) and "negative: -1" in str(answers[1])
        failed = await asyncio.gather(batcher.submit(-1000), batcher.submit(4), return_exceptions=True)
        assert all(isinstance(a, RuntimeError) for a in failed)
        assert await batcher.submit(7) == 14  # the next group is not affected

    asyncio.run(main())


def test_a_caller_that_went_away_is_left_out_of_the_next_group() -> None:
    work = Recorder()

    async def main() -> None:
        batcher, first = await _first_group_held(work)
        gone = asyncio.create_task(batcher.submit(2))
        stays = asyncio.create_task(batcher.submit(3))
        await asyncio.sleep(0.05)
        gone.cancel()
        work.gate.set()
        assert (await first, await stays) == (2, 6)
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(main())
    assert work.groups == [[1], [3]]


# --- through the app ----------------------------------------------------------------------------


def _beat(client: httpx.AsyncClient, token: str) -> Awaitable[httpx.Response]:
    return client.post("/v1/agent/heartbeat", json={"metrics": []}, headers={"Authorization": f"Bearer {token}"})


Call = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


def _burst(state: AppState, tokens: list[str], call: Call) -> tuple[list[httpx.Response], Statements, AgentGate]:
    """`call` with each token at once through the running app: the answers, in order, the SQL
    they ran, and the app's gate (which counts its groups)."""
    async def main() -> tuple[list[httpx.Response], Statements, AgentGate]:
        async with _running(state) as client:
            gate = client._transport.app.state.agent_gate  # type: ignore[attr-defined]
            with Statements(state) as statements:
                answers = await asyncio.gather(*(call(client, token) for token in tokens))
            return list(answers), statements, gate

    return asyncio.run(main())


def test_a_burst_of_heartbeats_is_written_in_a_few_transactions_and_a_bad_token_fails_alone(state: AppState) -> None:
    hosts = _register(state, 300)
    answers, statements, gate = _burst(state, [token for _, token in hosts] + ["cpa_not_a_token"], _beat)
    assert [a.status_code for a in answers] == [200] * 300 + [401]
    assert answers[-1].headers["content-type"] == "application/problem+json"
    assert all(a.json()["status"] == "online" for a in answers[:300])
    updates = statements.count("UPDATE", "hostnodes")
    assert updates == gate.beats.groups and updates < 30, updates  # not one per heartbeat
    assert sum(1 for s in statements.seen if s.strip().upper() == "COMMIT") <= updates + 1
    with state.read() as session:
        seen = {h.id: h.last_heartbeat_at for h in hostnodes.list_hostnodes(session)}
    assert all(seen[host_id] is not None for host_id, _ in hosts)


def _poll_now(client: httpx.AsyncClient, token: str) -> Awaitable[httpx.Response]:
    return client.get("/v1/agent/assignments", params={"wait": 0}, headers={"Authorization": f"Bearer {token}"})


def test_a_burst_of_polls_checks_its_tokens_and_reads_its_hosts_in_groups(state: AppState) -> None:
    hosts = _register(state, 300)
    polls, statements, gate = _burst(state, [token for _, token in hosts], _poll_now)
    assert all(p.status_code == 200 for p in polls)
    assert statements.count("SELECT", "agent_tasks") == gate.reads.groups < 30
    assert statements.count("SELECT", "hostnodes") <= gate.checks.groups + gate.reads.groups


def test_agent_calls_waiting_for_the_database_do_not_hold_up_a_users_request(state: AppState) -> None:
    """60 registrations and heartbeats stuck behind a held write lock: a user's read still answers.
    They used to wait in the one shared thread pool (40 threads), a user's request behind them."""
    hosts = _register(state, 60)

    async def main() -> None:
        async with _running(state) as client:
            release = threading.Event()
            held = threading.Event()

            def hold_the_writer() -> None:  # another writer that takes its time
                with state.tx():
                    held.set()
                    release.wait(30)

            holder = threading.Thread(target=hold_the_writer)
            holder.start()
            held.wait(5)
            try:
                stuck = [asyncio.create_task(_beat(client, token)) for _, token in hosts]
                await asyncio.sleep(0.3)
                assert not any(t.done() for t in stuck)
                listed = await asyncio.wait_for(
                    client.get("/v1/hostnodes", headers={"Authorization": f"Bearer {ADMIN_KEY}"}), 10)
                assert listed.status_code == 200 and len(listed.json()["data"]) == 60
            finally:
                release.set()
                holder.join()
            assert all(r.status_code == 200 for r in await asyncio.gather(*stuck))

    if state.sessions.kw["bind"].dialect.name != "sqlite":
        pytest.skip("the write lock held here is SQLite's one writer")
    asyncio.run(main())


def test_heartbeats_service_answers_each_token_in_order(state: AppState) -> None:
    hosts = _register(state, 3)
    tokens = [hosts[2][1], "cpa_unknown", hosts[0][1], hosts[2][1]]
    with state.tx() as session:
        beats = hostnodes.heartbeats(session, clock=state.clock, tokens=tokens)
    assert isinstance(beats[1], Unauthorized)
    assert [b.host_id for b in beats if isinstance(b, hostnodes.Beat)] == [hosts[2][0], hosts[0][0], hosts[2][0]]


def test_the_app_made_for_a_new_event_loop_still_answers_agents(state: AppState) -> None:
    """Tests (and a server restarted in-process) run the same app on more than one event loop."""
    [(_, token)] = _register(state, 1)
    app = create_app(state)

    async def once() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cp") as client:
            return (await _beat(client, token)).status_code

    assert asyncio.run(once()) == 200
    assert asyncio.run(once()) == 200
