"""No silent fallback (issue 9): a process-runtime agent on a host without bubblewrap refuses to
start workloads, readably, unless it was started with --unsandboxed, and then the hostnode and
its offers say `sandbox: none`. Real server, real agent processes; "without bubblewrap" is a PATH
that lacks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from coldplate import Client
from tests.e2e.conftest import Cluster, _wait, agent_env, free_port_block
from tests.e2e.test_runtimes_e2e import kill_adoptable_workloads


def agent(server: Cluster, tmp_path: Path, name: str, *flags: str) -> subprocess.Popen[bytes]:
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    for tool in ("sh", "sleep", "cat", "echo"):
        found = shutil.which(tool)
        if found and not (tools / tool).exists():
            (tools / tool).symlink_to(found)
    lo = free_port_block(10)
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "coldplate", "agent", "--server", server.url,
                             "--runtime", "process", "--name", name, "--region", "eu",
                             "--port-range", f"{lo}-{lo + 9}", "--data-dir", str(tmp_path / name),
                             "--heartbeat-interval", "0.5", *flags],
                            env={**agent_env(server), "PATH": str(tools)}, stdout=log, stderr=subprocess.STDOUT)


def test_without_bubblewrap_only_an_unsandboxed_agent_runs_workloads(server: Cluster, tmp_path: Path) -> None:
    client = Client(server.url, server.admin_key)
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    strict = agent(server, tmp_path, "strict")
    try:
        _wait(lambda: len(client.hostnodes()) == 1, 30, "the strict host to register")
        refused = client.create_instance(name="refused", gpu="cpu", vcpus=1, memory_gb=1, cmd=["sleep", "600"])
        failed = client.wait_instance(refused.id, status="failed", timeout=60)
        assert failed.failure_reason is not None
        assert failed.failure_reason.startswith("bubblewrap (bwrap) is not installed on this host")
        assert "--unsandboxed" in failed.failure_reason
        host = httpx.get(f"{server.url}/v1/hostnodes", headers=headers).json()["data"][0]
        assert host["sandbox"] == "bubblewrap"  # what it would use; it runs nothing without it
    finally:
        strict.terminate()
        strict.wait(timeout=15)
    admin = httpx.patch(f"{server.url}/v1/hostnodes/{host['id']}", json={"status": "maintenance"}, headers=headers)
    assert admin.status_code == 200

    loose = agent(server, tmp_path, "loose", "--unsandboxed")
    try:
        _wait(lambda: len(client.hostnodes()) == 2, 30, "the unsandboxed host to register")
        views = {h["name"]: h for h in httpx.get(f"{server.url}/v1/hostnodes", headers=headers).json()["data"]}
        assert views["loose"]["sandbox"] == "none"
        assert {h.name: h.sandbox for h in client.hostnodes()} == {"strict": "bubblewrap", "loose": "none"}
        assert [o.sandbox for o in client.offers(gpu="cpu")] == ["none"]  # the SDK reads it too
        offers = httpx.get(f"{server.url}/v1/offers", params={"gpu": "cpu"}, headers=headers).json()["data"]
        assert [(o["hostnode_name"], o["sandbox"]) for o in offers] == [("loose", "none")]
        ran = client.create_instance(name="ran", gpu="cpu", vcpus=1, memory_gb=1,
                                     cmd=["sh", "-c", "echo unsandboxed > $WORKSPACE/out; sleep 600"])
        client.wait_instance(ran.id, status="ready", timeout=60)
        assert client.exec_instance(ran.id, "cat $WORKSPACE/out").stdout == "unsandboxed\n"
        client.terminate_instance(ran.id, force=True)
        client.wait_instance(ran.id, status="terminated", timeout=60)
    finally:
        loose.terminate()
        loose.wait(timeout=15)
        kill_adoptable_workloads(tmp_path / "loose")
