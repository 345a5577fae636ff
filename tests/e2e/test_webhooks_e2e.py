"""At least once through real processes: `coldplate server` is killed with SIGKILL while the
receiver holds one of its deliveries open; after a restart every event arrives, each under one
`webhook-id` however often it was sent, each verified by `standardwebhooks`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from coldplate.cli.main import app
from tests.e2e.conftest import Cluster, _wait, free_port
from tests.webhook_receiver import receiving

ADMIN = "cp_e2e_admin"
H = {"Authorization": f"Bearer {ADMIN}"}


def _start(port: int, data: Path, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "coldplate", "server", "--port", str(port), "--data-dir", str(data),
         "--allow-private-webhooks", "--webhook-lease-seconds", "2"],
        env={**os.environ, "COLDPLATE_ADMIN_KEY": ADMIN}, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    _wait(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200, 30, "server")
    return proc


def _make_events(url: str, prefix: str, count: int) -> int:
    """Label changes on one instance: an `instance.updated` event per request (plus its create),
    until the server is killed under it. Returns how many requests it made."""
    try:
        inst = httpx.post(f"{url}/v1/instances", json={"name": prefix, "gpu": "cpu"}, headers=H).json()
        for n in range(count):
            httpx.patch(f"{url}/v1/instances/{inst['id']}", json={"labels": {"n": str(n)}},
                        headers=H).raise_for_status()
    except httpx.TransportError:
        return n
    return count


def test_sigkill_mid_dispatch_loses_no_event(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data, log = tmp_path / "data", tmp_path / "server.log"
    proc = _start(port, data, log)
    killed_at: list[int] = []
    try:
        with receiving() as receiver:
            secret = httpx.post(f"{url}/v1/webhooks", json={"url": receiver.url}, headers=H).json()["secret"]
            token = httpx.post(f"{url}/v1/join-tokens", json={}, headers=H).json()["token"]
            httpx.post(f"{url}/v1/agent/register", json={
                "join_token": token, "name": "cpu-host", "region": "eu", "vcpus": 64, "memory_gb": 256,
                "disk_gb": 1000, "port_range": [31000, 31099],
                "prices": {"gpu_per_hour": "0", "spot_gpu_per_hour": "0"}}).raise_for_status()

            def kill_on_tenth(count: int) -> None:
                if count == 10 and not killed_at:
                    killed_at.append(count)
                    os.kill(proc.pid, signal.SIGKILL)  # the server waits for this answer: mid-dispatch
                    proc.wait()

            receiver.on_received = kill_on_tenth
            writer = threading.Thread(target=lambda: _make_events(url, "before", 40))
            writer.start()
            writer.join(timeout=60)
            _wait(lambda: bool(killed_at), 30, "the kill")
            in_flight = receiver.received[9].webhook_id
            proc = _start(port, data, log)
            assert _make_events(url, "after", 5) == 5
            all_events = httpx.get(f"{url}/v1/events", params={"limit": 1000}, headers=H).json()["data"]
            wanted = {e["id"] for e in all_events}

            def delivered() -> set[str]:
                return {json.loads(r.body)["id"] for r in list(receiver.received)}

            _wait(lambda: delivered() >= wanted, 60, "every event after the restart")
            # the delivery the kill interrupted is sent again once its lease (2 s) has run out
            _wait(lambda: [r.webhook_id for r in list(receiver.received)].count(in_flight) >= 2, 30,
                  "the interrupted delivery sent again")
            ids_by_event: dict[str, set[str]] = defaultdict(set)
            for received in list(receiver.received):
                payload = received.verify(secret)
                ids_by_event[payload["id"]].add(received.webhook_id)
            assert all(len(ids) == 1 for ids in ids_by_event.values())  # a repeat carries the same webhook-id
            assert [r.webhook_id for r in receiver.received].count(in_flight) >= 2  # it was sent again
            # at least ten events were delivered before the kill and six made after the restart
            assert len(wanted) >= 10 + 6 and any(e["type"] == "hostnode.registered" for e in all_events)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)


def test_cli_webhooks_and_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(port, tmp_path / "data", tmp_path / "server.log")
    monkeypatch.setenv("COLDPLATE_URL", url)
    monkeypatch.setenv("COLDPLATE_API_KEY", ADMIN)
    cli = CliRunner()

    def run(*args: str) -> Any:
        result = cli.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return json.loads(result.output) if "--json" in args else result.output

    try:
        with receiving() as receiver:
            created = cli.invoke(app, ["webhooks", "create", receiver.url, "--event-type", "instance.lifecycle",
                                       "--description", "ops"])
            assert created.exit_code == 0 and "signing secret (shown once): whsec_" in created.output
            secret = created.output.split("signing secret (shown once): ")[1].split()[0]
            (hook,) = run("webhooks", "list", "--json")
            assert hook["event_types"] == ["instance.lifecycle"] and hook.get("secret") is None
            token = httpx.post(f"{url}/v1/join-tokens", json={}, headers=H).json()["token"]
            httpx.post(f"{url}/v1/agent/register", json={
                "join_token": token, "name": "cpu-host", "region": "eu", "vcpus": 8, "memory_gb": 16,
                "disk_gb": 100, "port_range": [31100, 31199],
                "prices": {"gpu_per_hour": "0", "spot_gpu_per_hour": "0"}}).raise_for_status()
            run("instances", "create", "--name", "hooked", "--gpu", "cpu")
            _wait(lambda: len(receiver.received) == 1, 15, "the provisioning event")
            assert receiver.payloads(secret)[0]["data"]["name"] == "hooked"
            events = run("events", "--type", "instance.lifecycle", "--json")
            assert [e["data"]["status"] for e in events] == ["provisioning"]
            assert "provisioning" in run("events")  # the table
            (delivery,) = run("webhooks", "deliveries", hook["id"], "--json")
            assert (delivery["status"], delivery["http_status"]) == ("delivered", 200)
            run("webhooks", "redeliver", hook["id"], delivery["id"])
            _wait(lambda: len(receiver.received) == 2, 15, "the redelivery")
            assert receiver.received[1].webhook_id == delivery["id"]
            rotated = run("webhooks", "rotate-secret", hook["id"])
            assert "signing secret (shown once): whsec_" in rotated and secret not in rotated
            updated = run("webhooks", "update", hook["id"], "--disable", "--all-events", "--json")
            assert (updated["enabled"], updated["event_types"]) == (False, [])
            assert "deleted" in run("webhooks", "delete", hook["id"])
            assert run("webhooks", "list", "--json") == []
            bad = cli.invoke(app, ["webhooks", "create", "ftp://x"])
            assert bad.exit_code == 1 and "validation_error" in bad.output
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_a_plain_server_refuses_private_destinations(server: Cluster) -> None:
    """`coldplate server` without --allow-private-webhooks (no traffic is sent to these addresses)."""
    for target in ("http://127.0.0.1:9/hook", "http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data"):
        answer = httpx.post(f"{server.url}/v1/webhooks", json={"url": target}, headers=H)
        assert answer.status_code == 422 and answer.json()["param"] == "url", answer.text
        assert "allow-private-webhooks" in answer.json()["detail"]
