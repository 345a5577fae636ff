"""More of the agent protocol against a stand-in server (httpx.MockTransport), not the real one:
a refused transition (409) is ignored, one slow start neither blocks another instance nor is
started twice, and network errors are retried. The real server is exercised by tests/e2e."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from coldplate import protocol
from coldplate.agent.daemon import Agent
from coldplate.agent.runtimes.base import Assignment, RuntimeFailure
from coldplate.agent.runtimes.sim import SimRuntime

SPEC = protocol.HostInfo.model_validate({
    "name": "h", "region": "eu", "gpu": {"model": "H100", "count": 8}, "vcpus": 64, "memory_gb": 512, "disk_gb": 1000,
    "port_range": (20000, 20999), "prices": {"gpu_per_hour": "2", "spot_gpu_per_hour": "1"}})


def assignment(instance_id: str, status: str = "provisioning", desired: str = "running") -> dict[str, Any]:
    return {"instance_id": instance_id, "name": instance_id, "desired": desired, "status": status,
            "image": "busybox", "grace_seconds": 1, "force": False}


class Server:
    """Every poll answers at once with the current assignments; transitions update them."""

    def __init__(self, assignments: list[dict[str, Any]], *, refuse: set[str] | None = None,
                 poll_errors: int = 0, lagging: set[str] | None = None) -> None:
        self.assignments = {a["instance_id"]: a for a in assignments}
        self.refuse = refuse or set()
        self.poll_errors = poll_errors
        self.lagging = lagging or set()  # accepted, but the assignments do not show it yet
        self.version = 1
        self.reports: list[tuple[str, str]] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/agent/register":
            return httpx.Response(201, json=protocol.Registered(hostnode_id="hn_1", agent_token="cpa_1").model_dump())
        if path == "/v1/agent/heartbeat":
            protocol.Heartbeat.model_validate_json(request.content)
            return httpx.Response(200, json={"status": "online"})
        if path == "/v1/agent/assignments":
            if self.poll_errors:
                self.poll_errors -= 1
                raise httpx.ConnectError("connection refused", request=request)
            await asyncio.sleep(0.005)
            data = {"version": self.version, "assignments": list(self.assignments.values())}
            return httpx.Response(200, json=data)
        if path.endswith("/transition"):
            report = protocol.TransitionReport.model_validate_json(request.content)
            instance_id, status = path.split("/")[4], report.status
            self.reports.append((instance_id, status))
            if status in self.refuse:
                return httpx.Response(409, json={"code": "invalid_state"})
            if status in ("failed", "terminated"):
                self.assignments.pop(instance_id, None)
            elif instance_id in self.assignments and status not in self.lagging:
                self.assignments[instance_id] = {**self.assignments[instance_id], "status": status}
            self.version += 1
            return httpx.Response(200, json={"status": status})
        return httpx.Response(404)


class SlowSim(SimRuntime):
    """Per-instance start delays; counts concurrent starts of the same instance."""

    def __init__(self, delays: dict[str, float]) -> None:
        super().__init__()
        self.delays = delays
        self.starting: set[str] = set()
        self.starts: dict[str, int] = {}
        self.overlapped = False

    async def start(self, spec: Assignment) -> None:
        if spec.instance_id in self.starting:
            self.overlapped = True
        self.starting.add(spec.instance_id)
        self.starts[spec.instance_id] = self.starts.get(spec.instance_id, 0) + 1
        try:
            await asyncio.sleep(self.delays.get(spec.instance_id, 0.0))
            await super().start(spec)
        finally:
            self.starting.discard(spec.instance_id)


async def run_until(server: Server, runtime: SimRuntime, until: Callable[[], bool]) -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(server.handler))
    agent = Agent(server_url="http://cp", join_token="cpj", spec=SPEC, runtime=runtime, client=client,
                  heartbeat_interval=0.01, poll_wait=0.01, retry_delay=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    for _ in range(500):
        if until():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    await client.aclose()
    assert until()


async def test_slow_start_blocks_nothing_and_is_not_started_twice() -> None:
    """Every poll during the slow start still lists it as `provisioning`; it starts once."""
    server = Server([assignment("inst_slow"), assignment("inst_fast")], lagging={"starting"})
    runtime = SlowSim({"inst_slow": 0.4})
    await run_until(server, runtime, lambda: ("inst_slow", "ready") in server.reports)
    assert server.reports.index(("inst_fast", "ready")) < server.reports.index(("inst_slow", "ready"))
    assert runtime.starts["inst_slow"] == 1 and not runtime.overlapped


async def test_refused_transition_is_ignored() -> None:
    """The server moved on (409): the agent logs it and keeps converging."""
    assignments = [assignment("inst_1"), assignment("inst_2", "draining", "terminated")]
    server = Server(assignments, refuse={"starting"})
    await run_until(server, SimRuntime(), lambda: ("inst_2", "terminated") in server.reports
                    and ("inst_1", "ready") in server.reports)


async def test_network_errors_are_retried() -> None:
    server = Server([assignment("inst_1")], poll_errors=3)
    await run_until(server, SimRuntime(), lambda: ("inst_1", "ready") in server.reports)
    assert server.poll_errors == 0


async def test_sim_runtime_failure_and_delete() -> None:
    runtime = SimRuntime(failure_rate=1.0)
    spec = Assignment.model_validate(assignment("inst_1"))
    with pytest.raises(RuntimeFailure, match="simulated start failure"):
        await runtime.start(spec)
    runtime.failure_rate = 0.0
    await runtime.start(spec)
    await runtime.delete("inst_1")
    assert await runtime.running() == set() and runtime.instances == {}
