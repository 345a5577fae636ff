"""Real processes: `coldplate server` on a fresh SQLite data dir and `coldplate agent --runtime sim`."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ADMIN = "cp_e2e_admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_block(size: int) -> int:
    """The first of `size` consecutive ports that are free now, below the kernel's ephemeral range
    (where any outgoing connection may take a port: seen failing a test as 'address already in use')."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        start = rng.randrange(10_000, low - size)
        sockets = []
        try:
            for port in range(start, start + size):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no block of {size} free ports found")


@dataclass
class Cluster:
    url: str
    admin_key: str
    join_token: str
    data_dir: Path


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def agent_env(server: Cluster) -> dict[str, str]:
    """An agent's environment: the join token travels here, never on its command line (`ps`)."""
    return {**os.environ, "COLDPLATE_JOIN_TOKEN": server.join_token}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Cluster]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "COLDPLATE_ADMIN_KEY": ADMIN}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "coldplate", "server", "--port", str(port),
                             "--data-dir", str(tmp_path / "data")], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 30, "server")
        token = httpx.post(f"{url}/v1/join-tokens", json={"name": "e2e"},
                           headers={"Authorization": f"Bearer {ADMIN}"}).json()["token"]
        yield Cluster(url=url, admin_key=ADMIN, join_token=token, data_dir=tmp_path)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@pytest.fixture
def sim_agent(server: Cluster, tmp_path: Path) -> Iterator[Cluster]:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "hosts:\n"
        "  - {name_prefix: e2e-h100, count: 2, region: eu, city: Frankfurt, country: DE, gpu: H100, gpu_count: 8,"
        " vcpus: 128, memory_gb: 1024, disk_gb: 8000, gpu_price: '2.20', spot_price: '1.10', start_delay_s: 0.05,"
        " failure_rate: 0, port_base: 31000}\n")
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "coldplate", "agent", "--server", server.url, "--runtime", "sim",
                             "--fleet", str(fleet), "--data-dir", str(tmp_path / "sim-agent")],
                            env=agent_env(server), stdout=log, stderr=subprocess.STDOUT)
    try:
        headers = {"Authorization": f"Bearer {server.admin_key}"}
        _wait(lambda: len(httpx.get(f"{server.url}/v1/hostnodes", headers=headers).json()["data"]) == 2, 30,
              "two simulated hosts to register")
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
