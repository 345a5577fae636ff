"""A hostnode says what isolates its instances and which limits it enforces (issue 9), through
the agent's registration, in the hostnode view and in offers; on SQLite and PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Fleet


def test_registration_reports_the_sandbox_and_limits(client: TestClient, fleet: Fleet) -> None:
    boxed = fleet.host("boxed", isolation={"sandbox": "bubblewrap", "enforced_limits": ["vcpus", "memory_gb"]})
    bare = fleet.host("bare", price="1.00", isolation={"sandbox": "none"})
    legacy = fleet.host("legacy", price="3.00")  # an agent from before issue 9 says nothing
    remapped = fleet.host("remapped", price="4.00",
                          isolation={"sandbox": "docker", "enforced_limits": ["vcpus", "userns", "pids"]})
    views = {h: client.get(f"/v1/hostnodes/{h}").json() for h in (boxed, bare, legacy, remapped)}
    assert (views[remapped]["sandbox"], views[remapped]["enforced_limits"]) == ("docker",
                                                                               ["pids", "userns", "vcpus"])
    assert (views[boxed]["sandbox"], views[boxed]["enforced_limits"]) == ("bubblewrap", ["memory_gb", "vcpus"])
    assert (views[bare]["sandbox"], views[bare]["enforced_limits"]) == ("none", [])
    assert (views[legacy]["sandbox"], views[legacy]["enforced_limits"]) == (None, [])
    offers = client.get("/v1/offers", params={"gpu": "h100"}).json()["data"]
    assert {o["hostnode_name"]: o["sandbox"] for o in offers} == {"bare": "none", "boxed": "bubblewrap",
                                                                   "legacy": None, "remapped": "docker"}


def test_a_re_registration_updates_what_it_reports(client: TestClient, fleet: Fleet) -> None:
    host = fleet.host("h", isolation={"sandbox": "none"})
    fleet._ports -= 100  # the same host again, with bubblewrap installed meanwhile
    assert fleet.host("h", isolation={"sandbox": "bubblewrap", "enforced_limits": ["pids"]}) == host
    assert client.get(f"/v1/hostnodes/{host}").json()["sandbox"] == "bubblewrap"


def test_an_unknown_sandbox_or_limit_names_the_field(client: TestClient, fleet: Fleet) -> None:
    base = {"join_token": fleet.join_token, "name": "x", "region": "eu", "gpu": {"model": "H100", "count": 1},
            "vcpus": 8, "memory_gb": 64, "disk_gb": 100, "port_range": [40000, 40100],
            "prices": {"gpu_per_hour": "2", "spot_gpu_per_hour": "1"}}
    for isolation, param in (({"sandbox": "chroot"}, "isolation.sandbox"),
                             ({"sandbox": "docker", "enforced_limits": ["gpus"]}, "isolation.enforced_limits.0"),
                             ({"enforced_limits": []}, "isolation.sandbox")):
        response = client.post("/v1/agent/register", json={**base, "isolation": isolation})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["param"] == param, response.json()
