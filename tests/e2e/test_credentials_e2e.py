"""Agent credentials through real processes: join tokens from the CLI and SDK, an agent that takes
its join token from the environment or a 0600 file (never argv) and keeps its agent token in a 0600
file, a restart that needs no join token, and `coldplate up` leaving its data directory private."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from coldplate import AsyncClient
from coldplate.cli.main import app
from tests.e2e.conftest import Cluster, _wait, free_port, free_port_block


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def agent_cmd(server: Cluster, data_dir: Path, port_lo: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "coldplate", "agent", "--server", server.url, "--runtime", "sim", "--name",
            "e2e-sim", "--fake-gpus", "h100-80gb:1", "--port-range", f"{port_lo}-{port_lo + 9}",
            "--data-dir", str(data_dir), "--heartbeat-interval", "0.5", *extra]


def env_without_token() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "COLDPLATE_JOIN_TOKEN"}


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def hostnodes(server: Cluster) -> list[dict[str, object]]:
    data: list[dict[str, object]] = httpx.get(f"{server.url}/v1/hostnodes", timeout=5,
                                              headers={"Authorization": f"Bearer {server.admin_key}"}).json()["data"]
    return data


def test_join_tokens_from_cli_and_sdk_and_an_agent_that_keeps_its_token(
        server: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        processes: list[subprocess.Popen[bytes]]) -> None:
    monkeypatch.setenv("COLDPLATE_URL", server.url)
    monkeypatch.setenv("COLDPLATE_API_KEY", server.admin_key)
    cli = CliRunner()
    created = cli.invoke(app, ["join-tokens", "create", "--name", "rack-1", "--max-uses", "1",
                               "--expires-in-hours", "2", "--json"])
    assert created.exit_code == 0, created.output
    token = json.loads(created.output)
    secret = token["token"]
    assert secret.startswith("cpj_") and token["max_uses"] == 1 and token["state"] == "active"
    table = cli.invoke(app, ["join-tokens", "list"])
    assert table.exit_code == 0 and "rack-1" in table.output and secret not in table.output

    port_lo = free_port_block(10)
    data_dir = tmp_path / "agent"
    # a secret on the command line is refused before anything is sent
    argv = subprocess.run(agent_cmd(server, data_dir, port_lo, "--join-token", secret), env=env_without_token(),
                          capture_output=True, timeout=60)
    assert argv.returncode != 0 and b"COLDPLATE_JOIN_TOKEN" in argv.stderr
    token_file = tmp_path / "join-token"
    token_file.write_text(secret + "\n")
    token_file.chmod(0o644)
    loose = subprocess.run(agent_cmd(server, data_dir, port_lo, "--join-token-file", str(token_file)),
                           env=env_without_token(), capture_output=True, timeout=60)
    assert loose.returncode != 0 and b"chmod 600" in loose.stderr
    assert hostnodes(server) == []

    token_file.chmod(0o600)
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
    first = subprocess.Popen(agent_cmd(server, data_dir, port_lo, "--join-token-file", str(token_file)),
                             env=env_without_token(), stdout=log, stderr=subprocess.STDOUT)
    processes.append(first)
    _wait(lambda: len(hostnodes(server)) == 1, 30, "the agent to register")
    host_id = hostnodes(server)[0]["id"]
    kept = data_dir / "agent-tokens" / "e2e-sim"
    _wait(kept.exists, 10, "the agent token file")
    agent_token = kept.read_text().strip()
    assert mode(kept) == 0o600 and mode(kept.parent) == 0o700
    arguments = " ".join(psutil.Process(first.pid).cmdline())
    assert secret not in arguments and agent_token not in arguments

    output = cli.invoke(app, ["join-tokens", "list", "--json"]).output
    listed = {t["id"]: t for t in json.loads(output)}
    assert (listed[token["id"]]["uses"], listed[token["id"]]["state"]) == (1, "used_up")
    assert secret not in output and all(t["token"] is None for t in listed.values())
    assert cli.invoke(app, ["join-tokens", "revoke", token["id"]]).exit_code == 0

    # restarted with no join token at all (and the old one revoked): its kept token re-registers it
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=15)
    before = hostnodes(server)[0]["last_heartbeat_at"]
    second = subprocess.Popen(agent_cmd(server, data_dir, port_lo), env=env_without_token(), stdout=log,
                              stderr=subprocess.STDOUT)
    processes.append(second)
    _wait(lambda: hostnodes(server)[0]["last_heartbeat_at"] != before, 30, "the restarted agent's heartbeat")
    assert [h["id"] for h in hostnodes(server)] == [host_id]
    assert kept.read_text().strip() == agent_token

    async def revoked_state() -> str:
        async with AsyncClient(server.url, server.admin_key) as client:
            return (await client.get_join_token(token["id"])).state

    assert asyncio.run(revoked_state()) == "revoked"
    log.close()


def test_up_leaves_its_data_dir_private_and_no_secret_in_ps(tmp_path: Path,
                                                             processes: list[subprocess.Popen[bytes]]) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # as an older version left it
    port = free_port()
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer cp_up_admin"}
    up = subprocess.Popen([sys.executable, "-m", "coldplate", "up", "--port", str(port), "--data-dir", str(data_dir)],
                          env={**os.environ, "COLDPLATE_ADMIN_KEY": "cp_up_admin"}, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    processes.append(up)
    _wait(lambda: len(httpx.get(f"{url}/v1/hostnodes", headers=headers, timeout=2).json()["data"]) == 1, 60,
          "the local agent")
    kept = data_dir / "agent-tokens" / f"local-{os.uname().nodename}"
    _wait(lambda: kept.exists() and (data_dir / "ssh_host_ed25519_key").exists(), 10, "the agent's files")
    tokens = list((data_dir / "agent-tokens").iterdir())
    assert mode(data_dir) == 0o700
    for path in [data_dir / "coldplate.db", data_dir / "coldplate.db-wal", data_dir / "coldplate.db-shm",
                 data_dir / "admin-key", data_dir / "ssh_host_ed25519_key", *tokens]:
        assert mode(path) == 0o600, path
    assert len(tokens) == 1 and mode(data_dir / "agent-tokens") == 0o700

    agents = psutil.Process(up.pid).children()
    assert len(agents) == 1
    join_token = agents[0].environ()["COLDPLATE_JOIN_TOKEN"]
    secrets = [join_token, tokens[0].read_text().strip(), "cp_up_admin"]
    for proc in [psutil.Process(up.pid), *agents]:
        arguments = " ".join(proc.cmdline())
        assert not [s for s in secrets if s in arguments], arguments
    up.terminate()
    up.wait(timeout=30)
    deadline = time.monotonic() + 15
    while agents[0].is_running() and agents[0].status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.1)
