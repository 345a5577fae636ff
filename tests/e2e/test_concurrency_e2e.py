"""Concurrent writers against a real `coldplate server` process (uvicorn, real HTTP connections) on
SQLite and PostgreSQL: the test acts as the agent of one registered host."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ADMIN, _wait, free_port, free_port_block
from tests.threads import at_once


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    port = free_port()
    env = {**os.environ, "COLDPLATE_ADMIN_KEY": ADMIN, "COLDPLATE_DATABASE_URL": db_url}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "coldplate", "server", "--port", str(port),
                             "--data-dir", str(tmp_path / "data")], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 30, "server")
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30,
                          limits=limits) as client:
            yield client
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
    assert b"Traceback" not in (tmp_path / "server.log").read_bytes(), "the server logged an unhandled error"




def register(api: httpx.Client) -> tuple[str, dict[str, str]]:
    token = api.post("/v1/join-tokens", json={"name": "e2e"}).json()["token"]
    low = free_port_block(20)
    body = {"join_token": token, "name": "h1", "region": "eu", "location": {"city": "Berlin", "country": "DE"},
            "gpu": {"model": "H100", "count": 8}, "vcpus": 128, "memory_gb": 1024, "disk_gb": 4000,
            "port_range": [low, low + 19], "prices": {"gpu_per_hour": "2.00", "spot_gpu_per_hour": "1.00"}}
    data = api.post("/v1/agent/register", json=body).json()
    return data["hostnode_id"], {"Authorization": f"Bearer {data['agent_token']}"}


def test_concurrent_writers_through_a_real_server(api: httpx.Client) -> None:
    host, agent = register(api)

    # 48 POSTs with one Idempotency-Key: one instance, 48 identical 201s
    headers = {"Idempotency-Key": "e2e-once"}
    body = {"name": "once", "gpu": "h100"}
    created = at_once([lambda: api.post("/v1/instances", json=body, headers=headers)] * 48)
    assert Counter(r.status_code for r in created) == {201: 48}, [r.text for r in created if r.status_code != 201]
    assert len({r.json()["id"] for r in created}) == 1
    iid = created[0].json()["id"]

    def report(status: str, **extra: Any) -> httpx.Response:
        return api.post(f"/v1/agent/instances/{iid}/transition", json={"status": status, **extra}, headers=agent)

    assert report("starting").status_code == 200 and report("ready").status_code == 200
    assert api.post(f"/v1/instances/{iid}/stop").status_code == 200
    assert report("stopped").status_code == 200

    # two starts at once: one 200, one 409, one GPU taken
    starts = at_once([lambda: api.post(f"/v1/instances/{iid}/start")] * 2)
    assert sorted(r.status_code for r in starts) == [200, 409]
    assert api.get(f"/v1/hostnodes/{host}").json()["gpus_free"] == 7

    # a terminate racing the agent's failure report: the terminate answered 200, so it ends terminated
    assert report("starting").status_code == 200
    terminate, failed = at_once([lambda: api.post(f"/v1/instances/{iid}/terminate"),
                                 lambda: report("failed", failure_reason="oom")])
    assert terminate.status_code == 200 and failed.status_code == 200, (terminate.text, failed.text)
    report("terminated")  # if the terminate came first, the agent finishes its drain
    assert api.get(f"/v1/instances/{iid}").json()["status"] == "terminated"
    assert api.get(f"/v1/hostnodes/{host}").json()["gpus_free"] == 8
