"""Hostile input to the public API, on SQLite and PostgreSQL: every case is a 4xx problem naming
the field, nothing is written, and after each family a second tenant's instance on the same host
still starts, lists and terminates (tests/api/hostile.py)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.hostile import DEEP, HUGE, OVERSIZE, World, assert_problem, assert_unharmed, send, world
from tests.conftest import ADMIN_KEY, Fleet, auth

NUL, SURROGATE = "a\x00b", "\ud800"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB test"


def instance(**fields: Any) -> dict[str, Any]:
    return {"name": "evil", "gpu": "h100", **fields}


# (method, path, JSON body, expected status, field named); `{iid}` is the attacker's instance.
Case = tuple[str, str, Any, int, str | None]
FAMILIES: dict[str, list[Case]] = {
    "nul": [
        ("POST", "/v1/instances", instance(image=NUL), 422, "image"),
        ("POST", "/v1/instances", instance(hostnode_id=NUL), 422, "hostnode_id"),
        ("POST", "/v1/instances", instance(ssh_key_ids=[NUL]), 422, "ssh_key_ids.0"),
        ("POST", "/v1/instances", instance(env={"E": NUL}), 422, "env.E"),
        ("POST", "/v1/instances", instance(labels={NUL: "x"}), 422, "labels"),
        ("POST", "/v1/instances", instance(cmd=["sh", NUL]), 422, "cmd.1"),
        ("POST", "/v1/instances", instance(region=NUL), 422, "region"),
        ("POST", "/v1/ssh-keys", {"name": NUL, "public_key": KEY}, 422, "name"),
        ("POST", "/v1/projects", {"name": NUL}, 422, "name"),
        ("POST", "/v1/join-tokens", {"name": NUL}, 422, "name"),
        ("PATCH", "/v1/instances/{iid}", {"labels": {"k": NUL}}, 422, "labels.k"),
        ("GET", "/v1/instances/%00", None, 422, "ref"),
        ("GET", "/v1/instances/%00/events", None, 422, "ref"),
        ("POST", "/v1/instances/%00/terminate", None, 422, "ref"),
        ("GET", "/v1/hostnodes/%00", None, 422, "host_id"),
        ("DELETE", "/v1/ssh-keys/%00", None, 422, "key_id"),
        ("GET", "/v1/instances?label=a%3D%00", None, 422, "label"),
        ("GET", "/v1/instances?cursor=%00", None, 422, "cursor"),
        ("GET", "/v1/instances?status=%00", None, 422, "status"),
        ("GET", "/v1/offers?gpu=%00", None, 422, "gpu"),
        ("POST", "/v1/instances/{iid}/exec", {"cmd": ["sh", NUL]}, 422, "cmd"),
        ("POST", "/v1/projects/%00/keys", {"name": "k"}, 422, "project_id"),
        ("POST", "/v1/projects/prj_admin/keys", {"name": "k", "scopes": [NUL]}, 422, "scopes.0"),
        ("DELETE", "/v1/keys/%00", None, 422, "key_id"),
    ],
    "surrogate": [
        ("POST", "/v1/instances", instance(env={"E": SURROGATE}), 422, "env.E"),
        ("POST", "/v1/instances", instance(labels={"k": SURROGATE}), 422, "labels.k"),
        ("POST", "/v1/instances", instance(labels={SURROGATE: "v"}), 422, "labels"),
        ("POST", "/v1/instances", instance(image=SURROGATE), 422, "image"),
        ("POST", "/v1/instances", instance(cloud_init={"runcmd": [SURROGATE]}), 422, "cloud_init"),
        ("POST", "/v1/ssh-keys", {"name": SURROGATE, "public_key": KEY}, 422, "name"),
        ("POST", "/v1/projects", {"name": SURROGATE}, 422, "name"),
        ("PATCH", "/v1/instances/{iid}", {"labels": {"k": SURROGATE}}, 422, "labels.k"),
        ("POST", "/v1/instances/{iid}/exec", {"cmd": SURROGATE}, 422, "cmd"),
    ],
    "overlong": [
        ("POST", "/v1/instances", instance(env={f"E{i}": "x" for i in range(129)}), 422, "env"),
        ("POST", "/v1/instances", instance(env={"E": "x" * (32 * 1024 + 1)}), 422, "env.E"),
        ("POST", "/v1/instances", instance(env={f"E{i}": "x" * 30_000 for i in range(3)}), 422, "env"),
        ("POST", "/v1/instances", instance(env={"E" * 300: "x"}), 422, "env"),
        ("POST", "/v1/instances", instance(labels={f"k{i}": "v" for i in range(65)}), 422, "labels"),
        ("POST", "/v1/instances", instance(labels={"k": "v" * 257}), 422, "labels.k"),
        ("POST", "/v1/instances", instance(cmd=["x" * (8 * 1024 + 1)]), 422, "cmd.0"),
        ("POST", "/v1/instances", instance(cmd=["x" * 8000] * 9), 422, "cmd"),
        ("POST", "/v1/instances", instance(entrypoint=["x"] * 257), 422, "entrypoint"),
        ("POST", "/v1/instances", instance(name="n" * 64), 422, "name"),
        ("POST", "/v1/instances", instance(image="i" * 501), 422, "image"),
        ("POST", "/v1/ssh-keys", {"name": "k" * 201, "public_key": KEY}, 422, "name"),
        ("POST", "/v1/ssh-keys", {"name": "k", "public_key": KEY + "A" * 16384}, 422, "public_key"),
        ("POST", "/v1/projects", {"name": "p" * 201}, 422, "name"),
        ("GET", "/v1/instances/" + "a" * 101, None, 422, "ref"),
    ],
    "paths": [
        ("POST", "/v1/instances", instance(volumes=[{"name": "v", "mount_path": path}]), 422, "volumes.0.mount_path")
        for path in ("//etc", "//workspace", "//proc/x", "//dev/x", "/data/../etc", "///sys/kernel")
    ] + [
        ("POST", "/v1/instances", instance(cloud_init={"write_files": [{"path": "//x\x00"}]}), 422, "cloud_init"),
    ],
    "numbers": [
        ("POST", "/v1/instances", instance(vcpus=HUGE), 422, "vcpus"),
        ("POST", "/v1/instances", instance(memory_gb=HUGE), 422, "memory_gb"),
        ("POST", "/v1/instances", instance(disk_gb=HUGE), 422, "disk_gb"),
        ("POST", "/v1/instances", instance(gpu_count=HUGE), 422, "gpu_count"),
        ("POST", "/v1/instances", instance(duration_hours=-HUGE), 422, "duration_hours"),
        ("POST", "/v1/instances", instance(max_hours=float("nan")), 422, "max_hours"),
        ("POST", "/v1/instances", instance(max_hours=float("inf")), 422, "max_hours"),
        ("POST", "/v1/instances", instance(max_price_per_hour="1e400"), 422, "max_price_per_hour"),
        ("POST", "/v1/instances", instance(ports=[{"internal_port": HUGE}]), 422, "ports.0.internal_port"),
        ("POST", "/v1/instances/{iid}/stop", {"grace_seconds": HUGE}, 422, "grace_seconds"),
        ("POST", "/v1/instances/{iid}/exec", {"cmd": "true", "timeout": float("nan")}, 422, "timeout"),
        ("GET", "/v1/instances?limit=" + str(HUGE), None, 422, "limit"),
        ("GET", "/v1/instances/{iid}/wait?timeout=nan", None, 422, "timeout"),
        ("GET", "/v1/offers?gpu=h100&gpu_count=" + str(HUGE), None, 422, "gpu_count"),
        ("GET", "/v1/instances/{iid}/logs?tail=" + str(HUGE), None, 422, "tail"),
        ("PATCH", "/v1/hostnodes/{host}", {"prices": {"gpu_per_hour": "NaN"}}, 422, "prices.gpu_per_hour"),
        ("PATCH", "/v1/hostnodes/{host}", {"prices": {"gpu_per_hour": "1e30"}}, 422, "prices.gpu_per_hour"),
        ("PATCH", "/v1/hostnodes/{host}", {"prices": {"gpu_per_hour": -1}}, 422, "prices.gpu_per_hour"),
    ],
    "types": [
        ("POST", "/v1/instances", instance(name=123), 422, "name"),
        ("POST", "/v1/instances", instance(env=["E=1"]), 422, "env"),
        ("POST", "/v1/instances", instance(env={"E": 1}), 422, "env.E"),
        ("POST", "/v1/instances", instance(labels=None), 422, "labels"),
        ("POST", "/v1/instances", instance(cmd="sleep 1"), 422, "cmd"),
        ("POST", "/v1/instances", instance(unknown=True), 422, "unknown"),
        ("POST", "/v1/instances", [1, 2], 422, None),
        ("POST", "/v1/instances", "string", 422, None),
        ("PATCH", "/v1/instances/{iid}", {"name": {"a": 1}}, 422, "name"),
        ("POST", "/v1/projects", {"name": ["p"]}, 422, "name"),
        ("GET", "/v1/instances/{iid}/metrics?since=yesterday", None, 422, "since"),
        ("PATCH", "/v1/hostnodes/{host}", {"status": "exploded"}, 422, "status"),
    ],
}


def _run(w: World, case: Case) -> None:
    method, path, body, status, param = case
    admin = path.startswith(("/v1/projects", "/v1/join-tokens", "/v1/keys", "/v1/hostnodes")) and method != "GET"
    headers = auth(ADMIN_KEY if admin else w.attacker)
    response = send(w.client, method, path.replace("{iid}", w.instance).replace("{host}", w.host), body,
                    headers=headers)
    assert_problem(response, status, param)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hostile_fields_are_refused_naming_the_field(client: TestClient, fleet: Fleet, family: str) -> None:
    w = world(client, fleet)
    for case in FAMILIES[family]:
        _run(w, case)
    listed = client.get("/v1/instances", headers=auth(w.attacker)).json()["data"]
    assert [i["name"] for i in listed] == ["mine"]  # nothing refused was written
    assert_unharmed(w)


def test_oversize_deep_and_malformed_bodies(client: TestClient, fleet: Fleet) -> None:
    w = world(client, fleet)
    headers = auth(w.attacker)
    big = '{"name": "big", "gpu": "h100", "env": {"E": "' + "x" * OVERSIZE + '"}}'
    assert_problem(send(client, "POST", "/v1/instances", raw=big, headers=headers), 413)
    chunks = (b"x" * 65536 for _ in range(OVERSIZE // 65536 + 2))  # no Content-Length: counted as it streams
    streamed = client.post("/v1/instances", content=chunks, headers={**headers, "Content-Type": "application/json"})
    assert_problem(streamed, 413)
    assert_problem(send(client, "POST", "/v1/instances", raw="{" + DEEP, headers=headers), (400, 422))
    assert_problem(send(client, "POST", "/v1/instances", raw=DEEP, headers=headers), (400, 422))
    assert_problem(send(client, "POST", "/v1/instances", raw=b"\xff\xfe{", headers=headers), (400, 422))
    assert_problem(send(client, "POST", "/v1/instances", raw='{"name": NaN}', headers=headers), 422, "name")
    assert_problem(send(client, "POST", "/v1/instances", raw='{"name": "x",', headers=headers), 422)
    bad_length = {**headers, "Content-Length": "12abc"}
    assert_problem(send(client, "POST", "/v1/instances", raw="{}", headers=bad_length), 400)
    assert [i["name"] for i in client.get("/v1/instances", headers=headers).json()["data"]] == ["mine"]
    assert_unharmed(w)


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer cp_nope", "Bearer " + "x" * 10_000,
    "Token cp_test_admin_key", "Bearer cp_test_admin_key extra",
])
def test_malformed_credentials_are_401(client: TestClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    client.headers.pop("Authorization")
    for method, path in (("GET", "/v1/instances"), ("POST", "/v1/instances"), ("GET", "/v1/agent/assignments"),
                         ("POST", "/v1/projects")):
        assert_problem(client.request(method, path, headers=headers, json={}), 401)
