"""The agent against a stand-in server (httpx.MockTransport): a peer the unit test replaces.
The real server is exercised by tests/e2e."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from coldplate import protocol
from coldplate.agent.daemon import QUIET_START_S, Agent
from coldplate.agent.fleet import FleetError, load_fleet
from coldplate.agent.retention import WorkspaceRetention
from coldplate.agent.runtimes.base import Assignment
from coldplate.agent.runtimes.sim import SimRuntime

SPEC = protocol.HostInfo.model_validate({
    "name": "h", "region": "eu", "gpu": {"model": "H100", "count": 8}, "vcpus": 64, "memory_gb": 512, "disk_gb": 1000,
    "port_range": (20000, 20999), "prices": {"gpu_per_hour": "2", "spot_gpu_per_hour": "1"}})


class StandInServer:
    """Answers the agent protocol from a script of assignment lists; records every call. Like the
    server, it records what the agent reports: within the same round an instance reported stopped
    is listed stopped, and one reported terminated is no longer listed."""

    def __init__(self, rounds: list[list[dict[str, Any]]], advance_when: Callable[[], bool] | None = None) -> None:
        self.rounds = rounds
        self.advance_when = advance_when  # past the first round only once this holds (None: at once)
        self.registrations = 0
        self.valid_token: str | None = None
        self.reports: list[tuple[str, str]] = []
        self.unauthorized = 0
        self.calls = 0
        self.position = 0  # like the server's version, it never goes back
        self.applied: dict[str, tuple[int, str]] = {}  # instance → (round, status) it was reported in

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls += 1
        if path == "/v1/agent/register":
            self.registrations += 1
            self.valid_token = f"cpa_{self.registrations}"
            return httpx.Response(201, json=protocol.Registered(hostnode_id="hn_1",
                                                                 agent_token=self.valid_token).model_dump())
        if request.headers.get("Authorization") != f"Bearer {self.valid_token}":
            self.unauthorized += 1
            return httpx.Response(401, json={"code": "unauthorized"})
        if path == "/v1/agent/heartbeat":
            protocol.Heartbeat.model_validate_json(request.content)
            ack = protocol.HeartbeatAck(status="online", server_time="2026-11-25T00:00:00Z")
            return httpx.Response(200, json=ack.model_dump())
        if path == "/v1/agent/assignments":
            since = int(request.url.params["since"])
            ahead = min(since + 1, len(self.rounds) - 1)
            if self.position > 0 or self.advance_when is None or self.advance_when():
                self.position = max(self.position, ahead)
            index = self.position
            if index <= since:  # nothing new: a long-poll waits
                await asyncio.sleep(float(request.url.params["wait"]))
            listed = []
            for a in self.rounds[index]:
                at, status = self.applied.get(a["instance_id"], (-1, ""))
                if status == "terminated":
                    continue
                listed.append({**a, "status": status} if at == index and status == "stopped" else a)
            return httpx.Response(200, json={"version": index, "assignments": listed})
        if path.endswith("/transition"):
            report = protocol.TransitionReport.model_validate_json(request.content)
            self.reports.append((path.split("/")[4], report.status))
            if report.status in ("stopped", "terminated"):
                self.applied[path.split("/")[4]] = (self.position, report.status)
            return httpx.Response(200, json={})
        return httpx.Response(404)


def assignment(status: str, desired: str) -> dict[str, Any]:
    return {"instance_id": "inst_1", "name": "a", "desired": desired, "status": status, "image": "busybox",
            "gpu_indices": [0], "grace_seconds": 1, "force": False, "surprise_field": 1}


async def run_agent(server: StandInServer, runtime: SimRuntime, until: Any,
                    retention: WorkspaceRetention | None = None) -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(server.handler))
    agent = Agent(server_url="http://cp", join_token="cpj", spec=SPEC, runtime=runtime, client=client,
                  heartbeat_interval=0.01, poll_wait=0.01, retry_delay=0.01, retention=retention)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    for _ in range(500):
        if until():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    await client.aclose()


async def test_converges_start_then_stop() -> None:
    """A start done within QUIET_START_S is reported `ready` alone (the server records `starting`)."""
    server = StandInServer([[assignment("provisioning", "running")], [assignment("draining", "stopped")]],
                           advance_when=lambda: ("inst_1", "ready") in server.reports)
    runtime = SimRuntime()
    await run_agent(server, runtime, lambda: ("inst_1", "stopped") in server.reports)
    assert server.reports[:2] == [("inst_1", "ready"), ("inst_1", "stopped")]
    assert runtime.instances == {"inst_1": "exited"}


async def test_a_start_longer_than_the_quiet_window_says_starting_first() -> None:
    server = StandInServer([[assignment("provisioning", "running")]])
    slow = SimRuntime(start_delay_s=QUIET_START_S + 0.1)
    await run_agent(server, slow, lambda: ("inst_1", "ready") in server.reports)
    assert server.reports == [("inst_1", "starting"), ("inst_1", "ready")]


async def test_terminate_deletes() -> None:
    server = StandInServer([[assignment("provisioning", "running")], [assignment("draining", "terminated")]])
    runtime = SimRuntime()
    await run_agent(server, runtime, lambda: ("inst_1", "terminated") in server.reports)
    assert runtime.instances == {}


async def test_start_failure_is_reported() -> None:
    server = StandInServer([[assignment("provisioning", "running")]])
    await run_agent(server, SimRuntime(failure_rate=1.0), lambda: ("inst_1", "failed") in server.reports)
    assert ("inst_1", "ready") not in server.reports


async def test_concurrent_loops_register_once() -> None:
    """Heartbeat and poll loops start together; a second registration would rotate the token
    and make the first loop's calls fail with 401 (seen in `coldplate up --demo`)."""
    server = StandInServer([[]])
    await run_agent(server, SimRuntime(), lambda: server.calls >= 20)
    assert server.registrations == 1
    assert server.unauthorized == 0


async def test_lost_token_re_registers() -> None:
    server = StandInServer([[]])
    agent_done = asyncio.Event()

    async def revoke_then_wait() -> None:
        await asyncio.sleep(0.05)
        server.valid_token = "revoked"
        await asyncio.sleep(0.1)
        agent_done.set()

    revoker = asyncio.create_task(revoke_then_wait())
    await run_agent(server, SimRuntime(), agent_done.is_set)
    await revoker
    assert server.registrations == 2


async def test_sim_runtime_exit_codes() -> None:
    runtime = SimRuntime()
    spec = Assignment.model_validate(assignment("provisioning", "running"))
    await runtime.start(spec)
    assert await runtime.running() == {"inst_1"}
    assert (await runtime.stop("inst_1", grace_seconds=1, force=True)).exit_message == "killed by signal 9 (SIGKILL)"
    await runtime.start(spec)
    assert (await runtime.stop("inst_1", grace_seconds=1, force=False)).exit_code == 0


def test_bad_fleet_file(tmp_path: Path) -> None:
    bad = tmp_path / "f.yaml"
    bad.write_text("hosts:\n  - {name_prefix: x}\n")
    with pytest.raises(FleetError):
        load_fleet(bad)


async def test_lost_ready_report_is_sent_again() -> None:
    """The `ready` report failed on the network: the server still says `starting`; the agent must
    not leave the instance there (found by review: it stayed in `starting` for good)."""
    server = StandInServer([[assignment("provisioning", "running")], [assignment("starting", "running")]])
    original = server.handler
    failed: list[bool] = []

    async def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/transition") and b'"ready"' in request.content and not failed:
            failed.append(True)
            raise httpx.ConnectError("network down")
        return await original(request)

    server.handler = flaky  # type: ignore[method-assign]
    await run_agent(server, SimRuntime(), lambda: ("inst_1", "ready") in server.reports)
    assert ("inst_1", "ready") in server.reports and failed == [True]


class RecordingRuntime(SimRuntime):
    """The sim runtime, recording purges; a start can be made to hang like a long first boot."""

    def __init__(self, *, hang: bool = False) -> None:
        super().__init__()
        self.hang = hang
        self.purged: list[str] = []
        self.cancelled_starts = 0

    async def start(self, spec: Assignment) -> None:
        if self.hang:
            self.instances[spec.instance_id] = "running"  # the workload runs; its cloud-init has not finished
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled_starts += 1
                raise
        await super().start(spec)

    async def purge(self, instance_id: str) -> None:
        self.purged.append(instance_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_terminated_workspace_is_kept_for_the_retention_period(tmp_path: Path) -> None:
    clock = Clock()
    retention = WorkspaceRetention(tmp_path, days=7, now=clock)
    server = StandInServer([[assignment("provisioning", "running")], [assignment("draining", "terminated")]])
    runtime = RecordingRuntime()
    await run_agent(server, runtime, lambda: ("inst_1", "terminated") in server.reports, retention)
    assert runtime.instances == {} and runtime.purged == []
    assert retention.scheduled() == {"inst_1": clock.now + 7 * 86400}
    clock.now += 7 * 86400 - 1
    server.rounds, server.calls, server.position = [[]], 0, 0
    await run_agent(server, runtime, lambda: server.calls >= 20, retention)  # heartbeats, nothing due
    assert runtime.purged == []
    clock.now += 1
    await run_agent(server, runtime, lambda: runtime.purged == ["inst_1"], retention)
    assert runtime.purged == ["inst_1"] and retention.scheduled() == {}


def test_retention_book_survives_a_restart_and_keeps_the_first_deadline(tmp_path: Path) -> None:
    clock = Clock()
    WorkspaceRetention(tmp_path, days=1, now=clock).keep("inst_a")
    clock.now += 100
    again = WorkspaceRetention(tmp_path, days=1, now=clock)  # a new agent process
    again.keep("inst_a")  # a retried terminate
    assert again.scheduled() == {"inst_a": 1_000_000.0 + 86400}
    assert again.due() == []
    clock.now += 86400
    assert again.due() == ["inst_a"]
    again.forget("inst_a")
    assert WorkspaceRetention(tmp_path, now=clock).scheduled() == {}


async def test_without_retention_the_disk_goes_with_the_instance() -> None:
    server = StandInServer([[assignment("provisioning", "running")], [assignment("draining", "terminated")]])
    runtime = RecordingRuntime()
    await run_agent(server, runtime, lambda: ("inst_1", "terminated") in server.reports)
    assert runtime.purged == ["inst_1"]


async def test_stop_wins_over_a_start_still_booting() -> None:
    """A stop that arrives during a long cloud-init must not wait for it to finish."""
    runtime = RecordingRuntime(hang=True)
    server = StandInServer([[assignment("provisioning", "running")], [assignment("draining", "stopped")]],
                           advance_when=lambda: ("inst_1", "starting") in server.reports)
    await run_agent(server, runtime, lambda: ("inst_1", "stopped") in server.reports)
    # The stand-in never applies reports, so its next answer still says draining and an agent that
    # polls again before the test stops it says `stopped` again: a repeat the server ignores.
    distinct = [r for i, r in enumerate(server.reports) if i == 0 or r != server.reports[i - 1]]
    assert distinct == [("inst_1", "starting"), ("inst_1", "stopped")]
    assert runtime.cancelled_starts == 1 and runtime.instances == {"inst_1": "exited"}


async def test_a_workload_that_ended_by_itself_is_reported_stopped() -> None:
    server = StandInServer([[assignment("ready", "running")]])
    runtime = SimRuntime()
    runtime.instances["inst_1"] = "exited"  # it ran, and ended on its own
    await run_agent(server, runtime, lambda: ("inst_1", "stopped") in server.reports)
    assert server.reports == [("inst_1", "stopped")]


async def test_a_running_workload_is_not_reported_stopped() -> None:
    server = StandInServer([[assignment("ready", "running")]])
    runtime = SimRuntime()
    runtime.instances["inst_1"] = "running"
    await run_agent(server, runtime, lambda: server.calls >= 30)
    assert server.reports == [] and runtime.instances == {"inst_1": "running"}


async def test_a_workload_no_longer_assigned_is_removed() -> None:
    """It failed with host_lost while this host was away: it must not keep running on its GPUs."""
    server = StandInServer([[assignment("ready", "running")]])
    runtime = RecordingRuntime()
    runtime.instances = {"inst_1": "running", "inst_lost": "running"}
    await run_agent(server, runtime, lambda: "inst_lost" in runtime.purged)
    assert runtime.instances == {"inst_1": "running"} and runtime.purged == ["inst_lost"]
    assert server.reports == []  # nothing to tell the server: it had already let it go


async def test_nothing_is_removed_before_the_assignments_are_known() -> None:
    server = StandInServer([[]])
    original = server.handler

    async def slow_assignments(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/agent/assignments":
            await asyncio.sleep(5)  # the first poll has not answered yet
        return await original(request)

    server.handler = slow_assignments  # type: ignore[method-assign]
    runtime = RecordingRuntime()
    runtime.instances = {"inst_1": "running"}
    heartbeats_before = server.calls
    await run_agent(server, runtime, lambda: server.calls >= heartbeats_before + 20)
    assert runtime.instances == {"inst_1": "running"} and runtime.purged == []
