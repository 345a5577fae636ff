"""The sim fleet at scale: overlapping port ranges, shards, the server's heartbeat interval, and a
log line that says why a call failed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from coldplate import protocol
from coldplate.agent.daemon import Agent
from coldplate.agent.fleet import DEMO_FLEET, FleetError, load_fleet, parse_shard, shard
from coldplate.agent.runtimes.sim import SimRuntime
from tests.conftest import Fleet

BEAT_ACK = {"status": "online", "server_time": "2026-01-01T00:00:00Z"}  # protocol.HeartbeatAck


def test_ten_thousand_hosts_fit_the_port_space_with_overlapping_ranges() -> None:
    specs = load_fleet(DEMO_FLEET, hosts=10_000)
    assert len(specs) == 10_000 and len({s.info.name for s in specs}) == 10_000
    assert all(1 <= s.info.port_range[0] <= s.info.port_range[1] <= 65535 for s in specs)
    ash = [s.info.port_range for s in specs if s.info.name.startswith("ash-h100-")]
    assert len(ash) > 1000 and len(set(ash)) == 1  # separate machines: the same range on each


def test_shards_split_the_fleet_exactly_once() -> None:
    specs = load_fleet(DEMO_FLEET, hosts=1000)
    parts = [shard(specs, i, 3) for i in range(3)]
    assert sorted(s.info.name for part in parts for s in part) == sorted(s.info.name for s in specs)
    assert {len(p) for p in parts} == {333, 334}
    assert len({s.info.region for s in parts[2]}) == 3  # every shard gets a mix of groups
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "x/2", "1", "-1/2"):
        with pytest.raises(FleetError):
            parse_shard(bad)


def test_hosts_with_overlapping_port_ranges_register(client: TestClient, fleet: Fleet) -> None:
    """Before: each host got its own 1,000-port block and the 46th passed 65535 (422 forever)."""
    for spec in load_fleet(DEMO_FLEET, hosts=60):
        body = protocol.Registration.model_validate({**spec.info.model_dump(), "join_token": fleet.join_token})
        response = client.post("/v1/agent/register", json=body.model_dump(mode="json", exclude_none=True),
                               headers={"Authorization": ""})  # a join token alone, not the client's admin key
        assert response.status_code == 201, response.text
        assert response.json()["heartbeat_interval_seconds"] == 60.0
    assert len(client.get("/v1/hostnodes").json()["data"]) == 60


def _agent(handler: Any, **kwargs: Any) -> tuple[Agent, httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    spec = load_fleet(DEMO_FLEET)[0].info
    return Agent(server_url="http://cp", join_token="cpj", spec=spec, runtime=SimRuntime(), client=client,
                 poll_wait=0.01, retry_delay=0.01, **kwargs), client


async def _run_until(agent: Agent, until: Any) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    for _ in range(300):
        if until():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task


async def test_a_failed_call_logs_its_cause_in_the_message(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(422, json={"code": "validation_error", "detail": "port_range.1: must be <= 65535"})

    agent, client = _agent(handler)
    with caplog.at_level(logging.WARNING, logger="coldplate.agent.daemon"):
        await _run_until(agent, lambda: calls >= 3)
    await client.aclose()
    messages = [r.getMessage() for r in caplog.records if "agent call failed" in r.getMessage()]
    assert messages, caplog.text
    assert "POST /v1/agent/register answered 422" in messages[0]
    assert "port_range.1: must be <= 65535" in messages[0]


async def test_the_agent_heartbeats_at_the_interval_the_server_names() -> None:
    beats = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal beats
        if request.url.path == "/v1/agent/register":
            return httpx.Response(201, json={"hostnode_id": "hn_1", "agent_token": "t",
                                             "heartbeat_interval_seconds": 0.05})
        if request.url.path == "/v1/agent/heartbeat":
            beats += 1
            return httpx.Response(200, json={**BEAT_ACK, "heartbeat_interval_seconds": 0.02})
        await asyncio.sleep(0.05)
        return httpx.Response(200, json={"version": 0, "assignments": []})

    agent, client = _agent(handler)
    assert agent.heartbeat_interval == 5.0  # until the server says otherwise
    await _run_until(agent, lambda: beats >= 5)  # at 5 s each, this would take 20 s
    assert agent.heartbeat_interval == 0.02
    fixed, fixed_client = _agent(handler, heartbeat_interval=0.03)
    await _run_until(fixed, lambda: fixed.token is not None)
    assert fixed.heartbeat_interval == 0.03  # an interval given by the operator stays
    await client.aclose()
    await fixed_client.aclose()


async def test_after_a_server_restart_the_agent_heartbeats_at_once() -> None:
    """Seen again within a retry of the server's return, not a whole heartbeat interval later."""
    beats: list[float] = []
    polls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        if request.url.path == "/v1/agent/register":
            return httpx.Response(201, json={"hostnode_id": "hn_1", "agent_token": "t"})
        if request.url.path == "/v1/agent/heartbeat":
            beats.append(asyncio.get_running_loop().time())
            return httpx.Response(200, json=BEAT_ACK)
        polls += 1
        if polls == 3:  # the server restarts under the long-poll
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        await asyncio.sleep(0.02)
        return httpx.Response(200, json={"version": polls, "assignments": []})

    agent, client = _agent(handler, heartbeat_interval=60.0)
    await _run_until(agent, lambda: len(beats) >= 2)
    await client.aclose()
    assert len(beats) == 2 and beats[1] - beats[0] < 2.0


async def test_a_new_server_id_in_the_poll_answer_triggers_a_heartbeat() -> None:
    """A restarted server answers polls at once (no failure seen): its new id says it restarted."""
    beats = 0
    polls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal beats, polls
        if request.url.path == "/v1/agent/register":
            return httpx.Response(201, json={"hostnode_id": "hn_1", "agent_token": "t"})
        if request.url.path == "/v1/agent/heartbeat":
            beats += 1
            return httpx.Response(200, json=BEAT_ACK)
        polls += 1
        await asyncio.sleep(0.02)
        return httpx.Response(200, json={"version": polls, "assignments": [],
                                         "server_id": "old" if polls < 5 else "new"})

    agent, client = _agent(handler, heartbeat_interval=60.0)
    await _run_until(agent, lambda: polls >= 10)
    await client.aclose()
    assert beats == 2  # the first, and the one for the new server


async def test_long_polls_go_through_a_pool_of_their_own() -> None:
    """A sim fleet's agents share connections; in one pool a poll queued behind other hosts'
    heartbeats for the connection of the next poll to return, and missed its wake-ups for up to a
    whole poll. Polls go through `poll_client`; registration, heartbeats and reports do not."""
    seen: dict[str, list[str]] = {"polls": [], "calls": []}

    def handler(pool: str) -> Any:
        def answer(request: httpx.Request) -> httpx.Response:
            seen[pool].append(request.url.path)
            if request.url.path.endswith("/register"):
                return httpx.Response(201, json={"hostnode_id": "hn_1", "agent_token": "cpa_t"})
            if request.url.path.endswith("/assignments"):
                return httpx.Response(200, json={"version": 1, "server_id": "s", "assignments": [], "tasks": []})
            return httpx.Response(200, json={"status": "online", "server_time": "2026-01-01T00:00:00Z"})
        return answer

    calls = httpx.AsyncClient(transport=httpx.MockTransport(handler("calls")))
    polls = httpx.AsyncClient(transport=httpx.MockTransport(handler("polls")))
    spec = load_fleet(DEMO_FLEET)[0].info
    agent = Agent(server_url="http://cp", join_token="cpj", spec=spec, runtime=SimRuntime(), client=calls,
                  poll_client=polls)
    await agent._poll_once()
    await agent._heartbeat_once()
    assert seen["polls"] == ["/v1/agent/assignments"]
    assert seen["calls"] == ["/v1/agent/register", "/v1/agent/heartbeat"]
