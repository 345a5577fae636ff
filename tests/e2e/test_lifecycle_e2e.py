"""End to end: an instance created through the SDK on a real server with a real sim agent."""

from __future__ import annotations

import httpx

from coldplate import Client
from coldplate.client import NoCapacityError
from tests.e2e.conftest import Cluster


def test_instance_lifecycle_through_sdk_server_and_sim_agent(sim_agent: Cluster) -> None:
    admin = Client(sim_agent.url, sim_agent.admin_key)
    project = admin.create_project("e2e")
    key = admin.create_key(project.id, "e2e", ["instances:read", "instances:write"]).key
    client = Client(sim_agent.url, key)

    inst = client.create_instance(name="e2e-1", gpu="H100", gpu_count=2, region="eu")
    assert inst.status == "provisioning"
    ready = client.wait_instance(inst.id, status="ready", timeout=30)
    assert ready.status == "ready" and ready.ip == "127.0.0.1" and ready.ssh_command

    assert client.stop_instance(inst.id).status == "draining"
    assert client.wait_instance(inst.id, status="stopped", timeout=30).status == "stopped"
    assert client.start_instance(inst.id).status == "provisioning"
    assert client.wait_instance(inst.id, status="ready", timeout=30).status == "ready"
    assert client.terminate_instance(inst.id).status == "draining"
    assert client.wait_instance(inst.id, status="terminated", timeout=30).status == "terminated"

    events = [e.to_status for e in client.instance_events(inst.id)]
    assert events == ["provisioning", "starting", "ready", "draining", "stopped", "provisioning", "starting",
                      "ready", "draining", "terminated"]


def test_no_capacity_is_a_typed_error(sim_agent: Cluster) -> None:
    client = Client(sim_agent.url, sim_agent.admin_key)
    try:
        client.create_instance(name="too-big", gpu="h100", gpu_count=16)
    except NoCapacityError as exc:
        assert exc.code == "no_capacity" and exc.status == 409
    else:
        raise AssertionError("16 GPUs on one 8-GPU node must not be placed")


def test_host_goes_offline_when_its_agent_dies(server: Cluster) -> None:
    """A registered host whose agent never heartbeats again is marked offline by the server's loop."""
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    body = {"join_token": server.join_token, "name": "silent", "region": "na", "gpu": {"model": "A100", "count": 1},
            "vcpus": 8, "memory_gb": 64, "disk_gb": 100, "port_range": [40000, 40010],
            "prices": {"gpu_per_hour": "1.00", "spot_gpu_per_hour": "0.50"}, "heartbeat_timeout_seconds": 1}
    host_id = httpx.post(f"{server.url}/v1/agent/register", json=body).json()["hostnode_id"]
    import time

    deadline = time.monotonic() + 15
    status = "online"
    while time.monotonic() < deadline and status != "offline":
        time.sleep(0.2)
        status = httpx.get(f"{server.url}/v1/hostnodes/{host_id}", headers=headers).json()["status"]
    assert status == "offline"
