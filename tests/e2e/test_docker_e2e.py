"""A real server, a real agent with the docker runtime, real containers: what a user sees."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coldplate import Client
from coldplate.client import Instance
from tests.e2e.conftest import Cluster, _wait, free_port


@pytest.fixture
def docker_agent(server: Cluster, tmp_path: Path, docker_client: Any, busybox_image: str) -> Iterator[Cluster]:
    lo = free_port()
    log = open(tmp_path / "docker-agent.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "coldplate", "agent", "--server", server.url, "--join-token",
                             server.join_token, "--runtime", "docker", "--name", "docker-host", "--region", "eu",
                             "--port-range", f"{lo}-{lo + 20}", "--fake-gpus", "h100-80gb:2", "--gpu-price", "2.00",
                             "--data-dir", str(tmp_path / "agent")], stdout=log, stderr=subprocess.STDOUT)
    try:
        headers = {"Authorization": f"Bearer {server.admin_key}"}
        _wait(lambda: len(httpx.get(f"{server.url}/v1/hostnodes", headers=headers).json()["data"]) == 1, 30,
              "the docker host to register")
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
        for container in docker_client.containers.list(all=True, filters={"label": "coldplate.instance"}):
            container.remove(force=True)


def get_text(url: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response.text
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer"
        time.sleep(0.1)


def test_container_instance_end_to_end(docker_agent: Cluster, busybox_image: str) -> None:
    client = Client(docker_agent.url, docker_agent.admin_key)
    hostnode = client.hostnodes()[0]
    assert hostnode.gpu.type == "h100-80gb" and hostnode.gpu.count == 2
    script = ("date >> /workspace/boots; mkdir -p /www; "
              "trap 'exit 0' TERM; "
              "while true; do cp /workspace/boots /www/boots; echo $CUDA_VISIBLE_DEVICES > /www/gpus; sleep 0.2; "
              "done & httpd -f -p 8080 -h /www & wait")
    inst = client.create_instance(name="web", gpu="h100", image=busybox_image, cmd=["sh", "-c", script],
                                  ports=[{"internal_port": 8080}])
    ready = client.wait_instance(inst.id, status="ready", timeout=60)
    port = _forwarded(ready, 8080)
    assert ready.ip == "127.0.0.1" and ready.ssh_command
    assert get_text(f"http://127.0.0.1:{port}/gpus").strip() == "0"
    assert len(get_text(f"http://127.0.0.1:{port}/boots").splitlines()) == 1

    client.stop_instance(inst.id, grace_seconds=5)
    stopped = client.wait_instance(inst.id, status="stopped", timeout=60)
    assert stopped.model_extra and stopped.model_extra["exit_code"] == 0  # SIGTERM handled within the grace
    client.start_instance(inst.id)
    client.wait_instance(inst.id, status="ready", timeout=60)
    # the file written on the first boot is still in /workspace after stop/start
    deadline = time.monotonic() + 15
    while len(get_text(f"http://127.0.0.1:{port}/boots").splitlines()) != 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)

    client.terminate_instance(inst.id, force=True)
    final = client.wait_instance(inst.id, status="terminated", timeout=60)
    assert final.model_extra and final.model_extra["exit_message"] == "killed by signal 9 (SIGKILL)"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/boots", timeout=1)


def test_bad_image_fails_with_a_readable_reason(docker_agent: Cluster) -> None:
    client = Client(docker_agent.url, docker_agent.admin_key)
    inst = client.create_instance(name="nope", gpu="h100", image="coldplate-test/no-such-image:1")
    failed = client.wait_instance(inst.id, status="failed", timeout=60)
    assert failed.failure_reason and "coldplate-test/no-such-image:1" in failed.failure_reason
    assert failed.status_reason == "failed"


def _forwarded(inst: Instance, internal: int) -> int:
    return next(p["external_port"] for p in inst.ports if p["internal_port"] == internal)
