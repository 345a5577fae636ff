"""What the hostile-input suites share: a world with a host, an attacker's project and a second
tenant's, a way to send raw bytes, and the check that the second tenant is unharmed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response

from coldplate.services.errors import CODES
from tests.conftest import Fleet, auth

PROBLEM = "application/problem+json"
HUGE = 2**70  # past 64 bits
OVERSIZE = 3 * 1024 * 1024  # past the 2 MiB body limit
DEEP = "[" * 100_000 + "]" * 100_000


@dataclass
class World:
    client: TestClient
    fleet: Fleet
    host: str
    attacker: str  # a project key
    tenant: str  # another project's key
    instance: str  # one of the attacker's instances on the host


def key_for(client: TestClient, name: str) -> str:
    project = client.post("/v1/projects", json={"name": name}).json()
    return str(client.post(f"/v1/projects/{project['id']}/keys", json={"name": "k"}).json()["key"])


def world(client: TestClient, fleet: Fleet) -> World:
    host = fleet.host("shared-host")
    attacker, tenant = key_for(client, "attacker"), key_for(client, "tenant")
    created = client.post("/v1/instances", json={"name": "mine", "gpu": "h100"}, headers=auth(attacker))
    assert created.status_code == 201, created.text
    return World(client, fleet, host, attacker, tenant, created.json()["id"])


def send(client: TestClient, method: str, path: str, body: Any = None, *, raw: str | bytes | None = None,
         headers: dict[str, str] | None = None) -> Response:
    """`body` as JSON (Python's encoder writes a lone surrogate as the escape `\\ud800`, NaN as `NaN`),
    or `raw` bytes as they are."""
    content = raw if raw is not None else (None if body is None else json.dumps(body))
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return client.request(method, path, content=content, headers=all_headers)


def assert_problem(response: Response, status: int | tuple[int, ...], param: str | None = None) -> None:
    """A 4xx problem document with a registered code; with `param`, naming that field (a prefix)."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["code"] in CODES and CODES[problem["code"]].status == response.status_code
    assert problem["type"] == CODES[problem["code"]].type_uri(problem["code"])
    if param is not None:
        assert str(problem.get("param", "")).startswith(param), problem


def assert_unharmed(w: World) -> None:
    """The other tenant's instance on the same host starts (the agent reads and reports it), lists
    and terminates; the attacker's own project still lists, and the host's assignments still read."""
    client, fleet = w.client, w.fleet
    created = client.post("/v1/instances", json={"name": "victim", "gpu": "h100", "hostnode_id": w.host,
                                                 "env": {"A": "1"}, "labels": {"team": "b"}}, headers=auth(w.tenant))
    assert created.status_code == 201, created.text
    iid = created.json()["id"]
    assert iid in {a["instance_id"] for a in fleet.assignments(w.host)["assignments"]}
    for status in ("starting", "ready"):
        assert fleet.report(w.host, iid, status).status_code == 200
    listed = client.get("/v1/instances", headers=auth(w.tenant))
    assert listed.status_code == 200 and [i["status"] for i in listed.json()["data"]] == ["ready"]
    assert client.post(f"/v1/instances/{iid}/terminate", headers=auth(w.tenant)).json()["status"] == "draining"
    draining = {a["instance_id"]: a["status"] for a in fleet.assignments(w.host)["assignments"]}
    assert draining[iid] == "draining"
    assert fleet.report(w.host, iid, "terminated").status_code == 200
    assert client.get(f"/v1/instances/{iid}", headers=auth(w.tenant)).json()["status"] == "terminated"
    assert client.get("/v1/instances", headers=auth(w.attacker)).status_code == 200
    assert fleet.heartbeat(w.host).status_code == 200
