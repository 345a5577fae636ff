"""Concurrent requests through the app on SQLite and PostgreSQL: the headline races of issue 7."""

from __future__ import annotations

from collections import Counter

from fastapi.testclient import TestClient

from tests.conftest import Fleet, auth
from tests.threads import at_once


def create(client: TestClient, key: str, name: str) -> str:
    response = client.post("/v1/instances", json={"name": name, "gpu": "h100"}, headers=auth(key))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_concurrent_posts_with_one_idempotency_key_all_replay_the_201(client: TestClient, fleet: Fleet,
                                                                      project_key: str) -> None:
    fleet.host("h1", count=8)
    headers = {**auth(project_key), "Idempotency-Key": "create-once"}
    body = {"name": "once", "gpu": "h100"}
    responses = at_once([lambda: client.post("/v1/instances", json=body, headers=headers)] * 24)
    assert Counter(r.status_code for r in responses) == {201: 24}, [r.text for r in responses if r.status_code != 201]
    assert len({r.json()["id"] for r in responses}) == 1
    listed = client.get("/v1/instances", headers=auth(project_key)).json()["data"]
    assert [i["name"] for i in listed] == ["once"]
    assert client.get("/v1/hostnodes").json()["data"][0]["gpus_free"] == 7


def test_two_starts_at_once_one_wins_the_other_is_409_and_no_gpu_leaks(client: TestClient, fleet: Fleet,
                                                                      project_key: str) -> None:
    host = fleet.host("h1", count=2)
    for trial in range(6):
        iid = create(client, project_key, f"s{trial}")
        fleet.report(host, iid, "starting"), fleet.report(host, iid, "ready")
        assert client.post(f"/v1/instances/{iid}/stop", headers=auth(project_key)).status_code == 200
        assert fleet.report(host, iid, "stopped").status_code == 200
        start = f"/v1/instances/{iid}/start"
        responses = at_once([lambda: client.post(start, headers=auth(project_key))] * 2)  # noqa: B023
        assert sorted(r.status_code for r in responses) == [200, 409]
        assert [r.json()["code"] for r in responses if r.status_code == 409] == ["invalid_state"]
        node = client.get(f"/v1/hostnodes/{host}").json()
        assert node["gpus_free"] == 1, node  # one GPU for the one started instance, not two
        assert client.post(f"/v1/instances/{iid}/terminate", headers=auth(project_key)).status_code == 200
        fleet.report(host, iid, "terminated")
        assert client.get(f"/v1/hostnodes/{host}").json()["gpus_free"] == 2


def test_terminate_racing_a_failure_report_ends_terminated(client: TestClient, fleet: Fleet,
                                                           project_key: str) -> None:
    host = fleet.host("h1", count=8)
    for trial in range(8):
        iid = create(client, project_key, f"t{trial}")
        fleet.report(host, iid, "starting")
        terminate, report = at_once([
            lambda: client.post(f"/v1/instances/{iid}/terminate", headers=auth(project_key)),  # noqa: B023
            lambda: fleet.report(host, iid, "failed", failure_reason="oom"),  # noqa: B023
        ])
        assert terminate.status_code == 200 and report.status_code == 200, (terminate.text, report.text)
        fleet.report(host, iid, "terminated")  # the agent finishes a drain if one is left
        inst = client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()
        assert inst["status"] == "terminated", inst
    assert client.get(f"/v1/hostnodes/{host}").json()["gpus_free"] == 8


def test_concurrent_renames_to_one_name_one_wins_the_other_is_name_taken(client: TestClient, fleet: Fleet,
                                                                         project_key: str) -> None:
    fleet.host("h1", count=8)
    for trial in range(4):
        a, b = create(client, project_key, f"a{trial}"), create(client, project_key, f"b{trial}")
        responses = at_once([
            lambda: client.patch(f"/v1/instances/{a}", json={"name": f"same{trial}"},  # noqa: B023
                                 headers=auth(project_key)),
            lambda: client.patch(f"/v1/instances/{b}", json={"name": f"same{trial}"},  # noqa: B023
                                 headers=auth(project_key)),
        ])
        assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
        assert [r.json()["code"] for r in responses if r.status_code == 409] == ["name_taken"]


def test_concurrent_extends_all_count_and_charge_once_each(client: TestClient, fleet: Fleet,
                                                           project_key: str) -> None:
    """Extend reads the instance locked (in transact): on PostgreSQL, two extends that both read
    `duration_hours` unlocked lost one of the two updates or wrote the same reservation piece twice."""
    host = fleet.host("h1", price="3.60")
    iid = client.post("/v1/instances", json={"name": "r", "gpu": "h100", "duration_hours": 1},
                      headers=auth(project_key)).json()["id"]
    fleet.report(host, iid, "starting"), fleet.report(host, iid, "ready")
    responses = at_once([lambda: client.post(f"/v1/instances/{iid}/extend", json={"hours": 1},
                                             headers=auth(project_key))] * 6)
    assert Counter(r.status_code for r in responses) == {200: 6}, [r.text for r in responses if r.status_code != 200]
    assert sorted(r.json()["duration_hours"] for r in responses) == [2, 3, 4, 5, 6, 7]
    inst = client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()
    assert inst["duration_hours"] == 7 and inst["cost_so_far"] == "25.200000"
    usage = client.get("/v1/usage", params={"instance_id": iid}, headers=auth(project_key)).json()["data"]
    assert [(u["kind"], u["seconds"]) for u in usage] == [("reservation", 3600)] * 7
