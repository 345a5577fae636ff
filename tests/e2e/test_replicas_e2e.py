"""Two `coldplate server` processes (two replicas, each running every loop) on one PostgreSQL
database: each instance that expires is terminated by exactly one of them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PG_URL, _fresh_postgres
from tests.e2e.conftest import _wait, free_port

ADMIN = "cp_e2e_admin"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}
INSTANCES = 24


@pytest.fixture
def pg_database() -> Iterator[str]:
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("COLDPLATE_TEST_POSTGRES_URL must be set in CI")
        pytest.skip("COLDPLATE_TEST_POSTGRES_URL is not set")
    yield from _fresh_postgres()


def _start_server(url: str, data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "COLDPLATE_ADMIN_KEY": ADMIN, "COLDPLATE_DATABASE_URL": url}
    proc = subprocess.Popen([sys.executable, "-m", "coldplate", "server", "--port", str(port), "--data-dir",
                             str(data_dir)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    _wait(lambda: httpx.get(f"{base}/healthz", timeout=1).status_code == 200, 30, "a server")
    return proc, base


def test_two_server_processes_expire_each_instance_once(pg_database: str, tmp_path: Path) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for n in range(2):  # one after the other: the first one migrates the database
            proc, base = _start_server(pg_database, tmp_path / f"data-{n}", tmp_path / f"server-{n}.log")
            procs.append(proc)
            bases.append(base)
        token = httpx.post(f"{bases[0]}/v1/join-tokens", json={"name": "e2e"}, headers=HEADERS).json()["token"]
        for h in range(INSTANCES // 8):
            registered = httpx.post(f"{bases[h % 2]}/v1/agent/register", json={
                "join_token": token, "name": f"h{h}", "region": "eu",
                "location": {"city": "Frankfurt", "country": "DE"}, "gpu": {"model": "H100", "count": 8},
                "vcpus": 256, "memory_gb": 2048, "disk_gb": 8000, "port_range": [20000 + 100 * h, 20099 + 100 * h],
                "heartbeat_timeout_seconds": 600, "prices": {"gpu_per_hour": "2.00", "spot_gpu_per_hour": "1.00"}})
            assert registered.status_code == 201, registered.text
        ids = []
        for n in range(INSTANCES):
            created = httpx.post(f"{bases[n % 2]}/v1/instances", headers=HEADERS, json={
                "name": f"short-{n}", "gpu": "h100", "max_hours": 0.0005})  # 1.8 s
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])

        def all_expired() -> bool:
            return all(httpx.get(f"{bases[0]}/v1/instances/{i}", headers=HEADERS).json()["status_reason"] == "expired"
                       for i in ids)

        _wait(all_expired, 30, "both replicas' timers to expire every instance")
        for iid in ids:
            events = httpx.get(f"{bases[1]}/v1/instances/{iid}/events", headers=HEADERS).json()["data"]
            assert [e["reason"] for e in events].count("expired") == 1, events
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
    for n in range(2):
        log = (tmp_path / f"server-{n}.log").read_text()
        assert "Traceback" not in log and "ERROR" not in log, log
