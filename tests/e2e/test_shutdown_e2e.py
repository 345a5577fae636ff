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
