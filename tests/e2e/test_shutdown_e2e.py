"""SIGTERM with agents long-polling: the server answers them and exits at once, without errors."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import _wait, free_port


def test_sigterm_answers_long_polls_and_exits_cleanly(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "coldplate", "server", "--port", str(port), "--data-dir",
                             str(tmp_path)], env={**os.environ, "COLDPLATE_ADMIN_KEY": "cp_admin"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 30, "server")
        token = httpx.post(f"{url}/v1/join-tokens", json={}, headers={"Authorization": "Bearer cp_admin"}).json()
        agent = httpx.post(f"{url}/v1/agent/register", json={
            "join_token": token["token"], "name": "a", "region": "eu", "vcpus": 1, "memory_gb": 1, "disk_gb": 1,
            "port_range": [1000, 1001], "prices": {"gpu_per_hour": "1", "spot_gpu_per_hour": "1"}}).json()
        answers: list[int] = []

        def long_poll() -> None:
            answers.append(httpx.get(f"{url}/v1/agent/assignments", params={"since": 99, "wait": 30}, timeout=40,
                                     headers={"Authorization": f"Bearer {agent['agent_token']}"}).status_code)

        poller = threading.Thread(target=long_poll)
        poller.start()
        time.sleep(0.5)
        started = time.monotonic()
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
        poller.join(timeout=10)
        assert time.monotonic() - started < 1.5  # not the graceful-shutdown timeout
        assert answers == [200]
        assert "Traceback" not in output and "ERROR" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()


def _up_with_agents(tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    import psutil

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "coldplate", "up", "--demo", "--port", str(port), "--data-dir",
                             str(tmp_path)], env={**os.environ, "COLDPLATE_ADMIN_KEY": "cp_admin"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    _wait(lambda: len(httpx.get(f"{url}/v1/hostnodes", headers={"Authorization": "Bearer cp_admin"},
                                timeout=2).json()["data"]) >= 13, 60, "the local agent and the demo fleet")
    children = [c.pid for c in psutil.Process(proc.pid).children()]
    assert len(children) == 2
    return proc, children


def _gone(pids: list[int], timeout: float = 15) -> bool:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.2)
    for pid in pids:  # do not leave them behind for the next test
        with contextlib.suppress(Exception):
            os.kill(pid, signal.SIGKILL)
    return False


def test_up_stops_its_agents_on_sigterm(tmp_path: Path) -> None:
    """Found by hand: uvicorn re-raises the SIGTERM after shutdown, which killed `up` before it
    stopped its agents; they went on retrying a server that was gone."""
    proc, children = _up_with_agents(tmp_path)
    proc.terminate()
    proc.wait(timeout=20)
    assert _gone(children)


def test_up_agents_die_with_it_when_it_is_killed(tmp_path: Path) -> None:
    proc, children = _up_with_agents(tmp_path)
    proc.kill()
    proc.wait(timeout=20)
    assert _gone(children)


def test_up_exits_cleanly_while_an_agent_finishes_a_stop(tmp_path: Path, busybox_image: str,
                                                          docker_client: Any) -> None:
    """Found by hand: `up` printed a traceback when its docker agent was still inside a 60 s stop."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "coldplate", "up", "--port", str(port), "--data-dir",
                             str(tmp_path)], env={**os.environ, "COLDPLATE_ADMIN_KEY": "cp_admin"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer cp_admin"}
    try:
        _wait(lambda: len(httpx.get(f"{url}/v1/hostnodes", headers=headers, timeout=2).json()["data"]) == 1, 60,
              "the local agent")
        inst = httpx.post(f"{url}/v1/instances", headers=headers, json={
            "name": "stubborn", "gpu": "cpu", "vcpus": 1, "memory_gb": 1, "image": busybox_image,
            "cmd": ["sleep", "1000"]}).json()  # PID 1 without a handler: SIGTERM does nothing, the grace runs out
        assert httpx.get(f"{url}/v1/instances/{inst['id']}/wait", params={"timeout": 60}, headers=headers,
                         timeout=70).status_code == 200
        httpx.post(f"{url}/v1/instances/{inst['id']}/terminate", headers=headers, json={"grace_seconds": 30})
        time.sleep(1)
        proc.terminate()
        output = proc.communicate(timeout=40)[0].decode()
        assert "Traceback" not in output, output
        assert "finishing a stop in progress" in output
    finally:
        if proc.poll() is None:
            proc.kill()
        for child in psutil_children_of(tmp_path):
            child.kill()
        for container in docker_client.containers.list(all=True, filters={"label": "coldplate.instance"}):
            container.remove(force=True)
        for volume in docker_client.volumes.list(filters={"label": "coldplate.instance"}):
            volume.remove(force=True)


def psutil_children_of(data_dir: Path) -> list[Any]:
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if str(data_dir) in " ".join(p.info["cmdline"] or [])]
