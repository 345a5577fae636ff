"""Hostile input over the agent protocol, on SQLite and PostgreSQL: whatever an agent sends is a
4xx problem naming the field, nothing half-written, and another tenant's instance on the same
host still starts, lists and terminates afterwards."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from coldplate import protocol
from tests.api.hostile import DEEP, HUGE, OVERSIZE, World, assert_problem, assert_unharmed, send, world
from tests.conftest import Fleet, auth

NUL, SURROGATE = "a\x00b", "\ud800"


def registration(join_token: str, **fields: Any) -> dict[str, Any]:
    body = {"join_token": join_token, "name": "evil-host", "region": "eu", "gpu": {"model": "H100", "count": 1},
            "vcpus": 8, "memory_gb": 64, "disk_gb": 100, "port_range": [40000, 40099],
            "prices": {"gpu_per_hour": "1.00", "spot_gpu_per_hour": "0.50"}}
    protocol.Registration.model_validate({**body, "join_token": "cpj"})  # only `fields` make it hostile
    return {**body, **fields}


def metric(values: dict[str, Any], instance_id: str = "inst_x") -> dict[str, Any]:
    return {"metrics": [{"instance_id": instance_id, "values": values}]}


# (method, path, JSON body, expected status, field named); `{iid}` is an instance on the host,
# `{jt}` the join token; register runs without credentials, the rest with the host's agent token.
Case = tuple[str, str, Any, int, str | None]
REGISTER: list[Case] = [
    ("POST", "/v1/agent/register", registration("{jt}", name=NUL), 422, "name"),
    ("POST", "/v1/agent/register", registration("{jt}", name=SURROGATE), 422, "name"),
    ("POST", "/v1/agent/register", registration("{jt}", region=NUL), 422, "region"),
    ("POST", "/v1/agent/register", registration("{jt}", region="r" * 21), 422, "region"),
    ("POST", "/v1/agent/register", registration("{jt}", address="a" * 201), 422, "address"),
    ("POST", "/v1/agent/register", registration("{jt}", location={"city": NUL}), 422, "location.city"),
    ("POST", "/v1/agent/register", registration("{jt}", vcpus=HUGE), 422, "vcpus"),
    ("POST", "/v1/agent/register", registration("{jt}", memory_gb=HUGE), 422, "memory_gb"),
    ("POST", "/v1/agent/register", registration("{jt}", disk_gb=2**31), 422, "disk_gb"),
    ("POST", "/v1/agent/register", registration("{jt}", gpu={"model": "H100", "count": 1, "memory_mb": HUGE}), 422,
     "gpu.memory_mb"),
    ("POST", "/v1/agent/register", registration("{jt}", gpu={"model": NUL, "count": 1}), 422, "gpu.model"),
    ("POST", "/v1/agent/register", registration("{jt}", gpu={"uuids": [SURROGATE]}), 422, "gpu.uuids.0"),
    ("POST", "/v1/agent/register", registration("{jt}", uptime_pct=float("nan")), 422, "uptime_pct"),
    ("POST", "/v1/agent/register", registration("{jt}", port_range=[1, HUGE]), 422, "port_range"),
    ("POST", "/v1/agent/register", registration("{jt}", prices={"gpu_per_hour": "NaN"}), 422, "prices"),
    ("POST", "/v1/agent/register", registration(NUL), 422, "join_token"),
    ("POST", "/v1/agent/register", registration("cpj_wrong"), 401, None),
    ("POST", "/v1/agent/register", registration("{jt}", vcpus="many"), 422, "vcpus"),
    ("POST", "/v1/agent/register", registration("{jt}", extra_field=1), 422, "extra_field"),
]
HEARTBEAT: list[Case] = [
    ("POST", "/v1/agent/heartbeat", metric({"gpu_util_pct": float("nan")}), 422, "metrics.0.values"),
    ("POST", "/v1/agent/heartbeat", metric({"gpu_util_pct": float("inf")}), 422, "metrics.0.values"),
    ("POST", "/v1/agent/heartbeat", metric({"gpu_util_pct": float("-inf")}), 422, "metrics.0.values"),
    ("POST", "/v1/agent/heartbeat", metric({NUL: 1.0}), 422, "metrics.0.values"),
    ("POST", "/v1/agent/heartbeat", metric({f"m{i}": 1.0 for i in range(33)}), 422, "metrics.0.values"),
    ("POST", "/v1/agent/heartbeat", metric({"x": 1.0}, instance_id=NUL), 422, "metrics.0.instance_id"),
    ("POST", "/v1/agent/heartbeat", {"metrics": [{"instance_id": "i", "values": {}}] * 1001}, 422, "metrics"),
    ("POST", "/v1/agent/heartbeat", {"metrics": "lots"}, 422, "metrics"),
    ("POST", "/v1/agent/heartbeat", {"instances": [{"id": NUL, "status": "running"}]}, 422, "instances"),
]
REPORTS: list[Case] = [
    ("POST", "/v1/agent/instances/{iid}/transition", {"status": "failed", "exit_code": HUGE}, 422, "exit_code"),
    ("POST", "/v1/agent/instances/{iid}/transition", {"status": "failed", "exit_code": 2**31}, 422, "exit_code"),
    ("POST", "/v1/agent/instances/{iid}/transition", {"status": "failed", "failure_reason": NUL}, 422,
     "failure_reason"),
    ("POST", "/v1/agent/instances/{iid}/transition", {"status": "failed", "exit_message": SURROGATE}, 422,
     "exit_message"),
    ("POST", "/v1/agent/instances/{iid}/transition", {"status": "failed", "failure_reason": "x" * 1001}, 422,
     "failure_reason"),
    ("POST", "/v1/agent/instances/{iid}/transition", {"status": "exploded"}, 422, "status"),
    ("POST", "/v1/agent/instances/%00/transition", {"status": "ready"}, 422, "instance_id"),
    ("POST", "/v1/agent/tasks/%00/result", {"exit_code": 0}, 422, "task_id"),
    ("POST", "/v1/agent/tasks/task_x/result", {"stdout": NUL}, 422, "stdout"),
    ("POST", "/v1/agent/tasks/task_x/result", {"stderr": SURROGATE}, 422, "stderr"),
    ("POST", "/v1/agent/tasks/task_x/result", {"exit_code": HUGE}, 422, "exit_code"),
    ("POST", "/v1/agent/tasks/task_x/result", {"stdout": "x" * (protocol.MAX_TASK_OUTPUT_CHARS + 1)}, 422, "stdout"),
    ("POST", "/v1/agent/tasks/task_x/result", {"lines": ["x"] * (protocol.MAX_LOG_LINES + 1)}, 422, "lines"),
    ("POST", "/v1/agent/tasks/task_x/result", {"lines": [NUL]}, 422, "lines.0"),
    ("GET", f"/v1/agent/assignments?since={HUGE}&wait=0", None, 422, "since"),
    ("GET", "/v1/agent/assignments?since=-1&wait=nan", None, 422, "wait"),
    ("GET", "/v1/agent/assignments?since=-1&wait=inf", None, 422, "wait"),
]
FAMILIES = {"register": REGISTER, "heartbeat": HEARTBEAT, "reports": REPORTS}


def _agent_headers(w: World) -> dict[str, str]:
    return auth(w.fleet.tokens[w.host])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hostile_agent_messages_are_refused_naming_the_field(client: TestClient, fleet: Fleet, family: str) -> None:
    w = world(client, fleet)
    hosts_before = client.get("/v1/hostnodes").json()["data"]
    for method, path, body, status, param in FAMILIES[family]:
        if isinstance(body, dict) and body.get("join_token") == "{jt}":
            body = {**body, "join_token": fleet.join_token}
        # register: with no credential of its own (the client's default admin key would admit any name;
        # a bearer the server does not know counts as none)
        headers = auth("cp_unknown") if path.endswith("/register") else _agent_headers(w)
        response = send(client, method, path.replace("{iid}", w.instance), body, headers=headers)
        assert_problem(response, status, param)
    assert client.get("/v1/hostnodes").json()["data"] == hosts_before  # no host half-registered or changed
    events = client.get(f"/v1/instances/{w.instance}/events", headers=auth(w.attacker)).json()["data"]
    assert [e["to_status"] for e in events if e["to_status"]] == ["provisioning"]  # no transition half-applied
    assert_unharmed(w)


def test_oversize_and_deep_agent_bodies(client: TestClient, fleet: Fleet) -> None:
    w = world(client, fleet)
    headers = _agent_headers(w)
    huge_output = '{"stdout": "' + "x" * OVERSIZE + '"}'
    assert_problem(send(client, "POST", "/v1/agent/tasks/task_x/result", raw=huge_output, headers=headers), 413)
    assert_problem(send(client, "POST", "/v1/agent/heartbeat", raw='{"metrics": ' + DEEP + "}", headers=headers),
                   (400, 422))
    assert_problem(send(client, "POST", "/v1/agent/heartbeat", raw='{"metrics": [{"instance_id": "i", "values": '
                                                                       '{"x": NaN}}]}', headers=headers), 422)
    assert_problem(send(client, "POST", "/v1/agent/heartbeat", raw='{"metrics": [{"instance_id": "i", "values": '
                                                                       '{"x": 1e309}}]}', headers=headers), 422)
    assert_problem(send(client, "POST", "/v1/agent/register", raw="[" * 5000), (400, 422))
    for bad in (b"Bearer cpa_forged", b"Bearer", b"Basic eA==", b"Bearer " + b"\xe9" * 100):
        response = client.post("/v1/agent/heartbeat", json={}, headers={"Authorization": bad})  # type: ignore[dict-item]
        assert_problem(response, 401)
    assert_unharmed(w)


def test_an_agents_oversize_output_is_fitted_to_the_protocol(client: TestClient, fleet: Fleet) -> None:
    """The agent trims what it sends rather than having the whole result refused."""
    fitted = protocol.fitted_result(stdout="a\x00" + "x" * (protocol.MAX_TASK_OUTPUT_CHARS * 2), stderr="\ud800",
                                    lines=["l" * protocol.MAX_LOG_LINE_CHARS] * (protocol.MAX_LOG_LINES + 5))
    assert fitted.stdout is not None and len(fitted.stdout) == protocol.MAX_TASK_OUTPUT_CHARS
    assert fitted.stdout.endswith("x") and "\x00" not in (fitted.stderr or "")
    assert len(fitted.model_dump_json(exclude_none=True).encode()) <= protocol.MAX_TASK_RESULT_BYTES
    assert fitted.lines and len(fitted.lines) < protocol.MAX_LOG_LINES
    protocol.TaskResult.model_validate(fitted.model_dump())  # what the server will accept
