"""A real server and a real agent with the docker or the process runtime: what a user sees."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import pytest

from coldplate import Client
from coldplate.agent.runtimes.cgroups import Cgroups
from coldplate.client import Instance, InvalidStateError
from tests.e2e.conftest import Cluster, _wait, agent_env, free_port_block


def host_name(runtime: str, data_dir: Path) -> str:
    """A name of its own: an agent removes the containers labelled with its host name that it is not
    assigned, and test runs sharing one Docker engine must not remove each other's."""
    return f"{runtime}-host-{hashlib.sha1(str(data_dir).encode()).hexdigest()[:8]}"


def start_agent(server: Cluster, runtime: str, data_dir: Path, port_lo: int, log: IO[bytes]
                ) -> subprocess.Popen[bytes]:
    name = host_name(runtime, data_dir)
    return subprocess.Popen([sys.executable, "-m", "coldplate", "agent", "--server", server.url,
                             "--runtime", runtime, "--name", name, "--region", "eu",
                             "--port-range", f"{port_lo}-{port_lo + 20}", "--fake-gpus", "h100-80gb:2",
                             "--gpu-price", "2.00", "--data-dir", str(data_dir), "--heartbeat-interval", "0.5"],
                            env=agent_env(server), stdout=log, stderr=subprocess.STDOUT)


def kill_adoptable_workloads(data_dir: Path) -> None:
    """Process workloads outlive their agent (the next one adopts them); a test leaves none behind."""
    for record in data_dir.glob("instances/*/process.json"):
        with contextlib.suppress(ProcessLookupError, ValueError, KeyError, OSError):
            os.killpg(json.loads(record.read_text())["leader_pid"], signal.SIGKILL)
    for instance in data_dir.glob("instances/*"):  # and their cgroups, once empty
        Cgroups().remove(instance.name, attempts=10)


@pytest.fixture(params=["docker", "process"])
def real_agent(request: pytest.FixtureRequest, server: Cluster, tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    runtime: str = request.param
    docker_client = request.getfixturevalue("docker_client") if runtime == "docker" else None
    image = request.getfixturevalue("busybox_image") if runtime == "docker" else "host"
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
    proc = start_agent(server, runtime, tmp_path / "agent", free_port_block(21), log)
    try:
        headers = {"Authorization": f"Bearer {server.admin_key}"}
        _wait(lambda: len(httpx.get(f"{server.url}/v1/hostnodes", headers=headers).json()["data"]) == 1, 30,
              "the host to register")
        yield server, image
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
        kill_adoptable_workloads(tmp_path / "agent")
        if docker_client is not None:  # this host's containers; unused workspaces and project volumes
            mine = f"coldplate.host={host_name(runtime, tmp_path / 'agent')}"
            for container in docker_client.containers.list(all=True, filters={"label": mine}):
                container.remove(force=True)
            for label in ("coldplate.instance", "coldplate.project"):
                for volume in docker_client.volumes.list(filters={"label": label}):
                    with contextlib.suppress(Exception):  # in use by another test run's container
                        volume.remove(force=True)
            remove_project_networks(docker_client)


def remove_project_networks(docker_client: Any) -> None:
    """The per-project networks the docker runtime made (one still in use by a peer's test stays)."""
    for network in docker_client.networks.list(filters={"label": "coldplate.network"}):
        with contextlib.suppress(Exception):
            network.remove()


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


def test_instance_end_to_end(real_agent: tuple[Cluster, str]) -> None:
    cluster, image = real_agent
    client = Client(cluster.url, cluster.admin_key)
    hostnode = client.hostnodes()[0]
    assert hostnode.gpu.type == "h100-80gb" and hostnode.gpu.count == 2
    internal = free_port_block(1)
    script = ("cd /workspace; date >> boots; mkdir -p www; "
              "trap 'exit 0' TERM; "
              "while true; do cp boots www/boots; echo $CUDA_VISIBLE_DEVICES > www/gpus; sleep 0.2; "
              f"done & busybox httpd -f -p {internal} -h www & wait")
    inst = client.create_instance(name="web", gpu="h100", image=image, cmd=["sh", "-c", script],
                                  ports=[{"internal_port": internal}])
    ready = client.wait_instance(inst.id, status="ready", timeout=60)
    port = _forwarded(ready, internal)
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


def test_failed_start_has_a_readable_reason(real_agent: tuple[Cluster, str]) -> None:
    cluster, image = real_agent
    client = Client(cluster.url, cluster.admin_key)
    if image == "host":  # the process runtime has no images: a command that dies at once
        inst = client.create_instance(name="nope", gpu="h100", cmd=["sh", "-c", "echo no such file; exit 2"])
        expected = "exited during start (exited with code 2); last output: no such file"
    else:
        inst = client.create_instance(name="nope", gpu="h100", image="coldplate-test/no-such-image:1")
        expected = "coldplate-test/no-such-image:1"
    failed = client.wait_instance(inst.id, status="failed", timeout=60)
    assert failed.failure_reason and expected in failed.failure_reason
    assert failed.status_reason == "failed"


def _forwarded(inst: Instance, internal: int) -> int:
    return next(p["external_port"] for p in inst.ports if p["internal_port"] == internal)


def test_exec_and_logs(real_agent: tuple[Cluster, str]) -> None:
    cluster, image = real_agent
    client = Client(cluster.url, cluster.admin_key)
    script = "echo booted; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
    inst = client.create_instance(name="logger", gpu="h100", image=image, cmd=["sh", "-c", script],
                                  env={"SECRET_WORD": "plum"})
    client.wait_instance(inst.id, status="ready", timeout=60)

    done = client.exec_instance(inst.id, "echo out-$SECRET_WORD; echo err >&2; exit 7")
    assert (done.exit_code, done.stdout, done.stderr) == (7, "out-plum\n", "err\n")
    argv = client.exec_instance(inst.id, ["sh", "-c", "cat /workspace/missing"])
    assert argv.exit_code != 0 and "missing" in argv.stderr
    slow = client.exec_instance(inst.id, "sleep 5", timeout=0.5)
    assert slow.exit_code == 124

    time.sleep(1)
    text = client.instance_logs(inst.id, tail=3)
    assert len(text.splitlines()) == 3 and all(line.startswith("tick") for line in text.splitlines())
    assert "booted" in client.instance_logs(inst.id, tail=1000)

    # follow: server-sent events with new lines as they are written, ending when the instance stops
    seen: list[str] = []
    with httpx.stream("GET", f"{cluster.url}/v1/instances/{inst.id}/logs", params={"tail": 0, "follow": True},
                      headers={"Authorization": f"Bearer {cluster.admin_key}"}, timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                seen.append(line.removeprefix("data: "))
            if len(seen) >= 3:
                break
    assert all(s.startswith('"tick') for s in seen), seen
    ticks = [int(s.strip('"').split()[1]) for s in seen]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)

    client.stop_instance(inst.id, force=True)
    client.wait_instance(inst.id, status="stopped", timeout=60)
    with pytest.raises(InvalidStateError):
        client.exec_instance(inst.id, "true")


def test_metrics_samples_arrive(real_agent: tuple[Cluster, str]) -> None:
    cluster, image = real_agent
    client = Client(cluster.url, cluster.admin_key)
    inst = client.create_instance(name="busy", gpu="h100", image=image,
                                  cmd=["sh", "-c", "cd /workspace; head -c 300000 /dev/zero > blob; "
                                                   "while true; do :; done"])
    client.wait_instance(inst.id, status="ready", timeout=60)
    headers = {"Authorization": f"Bearer {cluster.admin_key}"}
    samples: list[dict[str, float]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        samples = httpx.get(f"{cluster.url}/v1/instances/{inst.id}/metrics", headers=headers).json()["data"]
        if len(samples) >= 3 and samples[-1].get("disk_bytes", 0) >= 300000:
            break
        time.sleep(0.5)
    assert len(samples) >= 3, samples
    last = samples[-1]
    assert last["cpu_pct"] > 20  # a busy loop: most of a core
    assert last["memory_bytes"] > 0 and last["uptime_s"] >= 0 and last["disk_bytes"] >= 300000
    newer = httpx.get(f"{cluster.url}/v1/instances/{inst.id}/metrics", params={"since": samples[-2]["at"]},
                      headers=headers).json()["data"]
    assert [s["at"] for s in newer][:1] == [samples[-1]["at"]]


def test_ssh_with_openssh_client(real_agent: tuple[Cluster, str], tmp_path: Path) -> None:
    cluster, image = real_agent
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    client = Client(cluster.url, cluster.admin_key)
    inst = client.create_instance(name="sshbox", gpu="h100", image=image, cmd=["sleep", "3600"],
                                  env={"GREETING": "hello"}, ssh_keys=[(tmp_path / "id_ed25519.pub").read_text()])
    ready = client.wait_instance(inst.id, status="ready", timeout=60)
    assert ready.ssh_command is not None
    options = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
               "-o", "LogLevel=ERROR"]

    def ssh(identity: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ready.ssh_command.split(), "-i", str(identity), *options, *args],  # type: ignore[union-attr]
                              capture_output=True, text=True, timeout=60)

    ran = ssh(key, "echo $GREETING from $(pwd); echo oops >&2; exit 3")
    assert (ran.returncode, ran.stdout, ran.stderr) == (3, "hello from /workspace\n", "oops\n")
    with_tty = ssh(key, "-tt", "test -t 0 && test -t 1 && echo is-a-tty")
    assert with_tty.returncode == 0 and with_tty.stdout.strip() == "is-a-tty", with_tty
    without_tty = ssh(key, "test -t 0 || echo no-tty")
    assert without_tty.stdout == "no-tty\n"
    shell = subprocess.run([*ready.ssh_command.split(), "-i", str(key), *options], input="echo in-shell\nexit 5\n",
                           capture_output=True, text=True, timeout=60)
    assert shell.returncode == 5 and "in-shell" in shell.stdout
    refused = ssh(stranger, "true")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_cloud_init_and_volumes(real_agent: tuple[Cluster, str]) -> None:
    cluster, image = real_agent
    client = Client(cluster.url, cluster.admin_key)
    config = ("#cloud-config\n"
              "write_files:\n  - path: /workspace/motd\n    content: hello volume\n"
              "runcmd:\n  - echo configured by cloud-init\n  - cp /workspace/motd /data/motd\n")
    writer = client.create_instance(name="writer", gpu="h100", image=image, cmd=["sleep", "3600"],
                                    cloud_init=config, volumes=[{"name": "shared", "mount_path": "/data"}])
    client.wait_instance(writer.id, status="ready", timeout=60)
    logs = client.instance_logs(writer.id, tail=100)
    assert "configured by cloud-init" in logs and "cloud-init: finished" in logs
    client.terminate_instance(writer.id, force=True)
    client.wait_instance(writer.id, status="terminated", timeout=60)

    reader = client.create_instance(name="reader", gpu="h100", image=image, cmd=["sleep", "3600"],
                                    vcpus=1, memory_gb=1,
                                    volumes=[{"name": "shared", "mount_path": "/in", "readonly": True}])
    client.wait_instance(reader.id, status="ready", timeout=60)
    assert client.exec_instance(reader.id, "cat /in/motd").stdout == "hello volume"
    refused = client.exec_instance(reader.id, "echo x > /in/other")
    assert refused.exit_code != 0 and "Read-only" in refused.stderr

    broken = client.create_instance(name="broken", gpu="h100", image=image, cmd=["sleep", "3600"], vcpus=1,
                                    memory_gb=1,
                                    cloud_init={"runcmd": ["echo about to fail", "exit 9"]})
    failed = client.wait_instance(broken.id, status="failed", timeout=60)
    assert failed.failure_reason is not None
    assert "about to fail" in failed.failure_reason
    assert "cloud-init: runcmd[1] (exit 9) failed with exit code 9" in failed.failure_reason


def test_workloads_survive_an_agent_restart(real_agent: tuple[Cluster, str], tmp_path: Path) -> None:
    """The agent stops and a new one starts on the same data directory: the instance's server is
    still reachable on its forwarded port, exec reaches it, and a stop really ends it."""
    cluster, image = real_agent
    client = Client(cluster.url, cluster.admin_key)
    internal = free_port_block(1)
    script = f"trap 'exit 0' TERM; echo survivor > /workspace/i; busybox httpd -f -p {internal} -h /workspace & wait"
    inst = client.create_instance(name="survivor", gpu="h100", image=image, cmd=["sh", "-c", script],
                                  ports=[{"internal_port": internal}])
    port = _forwarded(client.wait_instance(inst.id, status="ready", timeout=60), internal)
    assert get_text(f"http://127.0.0.1:{port}/i") == "survivor\n"
    hosts = httpx.get(f"{cluster.url}/v1/hostnodes", headers={"Authorization": f"Bearer {cluster.admin_key}"})
    runtime = hosts.json()["data"][0]["name"].split("-host")[0]
    agent_pids = [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
                  if "--data-dir" in (p.info["cmdline"] or []) and str(tmp_path / "agent") in p.info["cmdline"]]
    assert len(agent_pids) == 1
    os.kill(agent_pids[0], signal.SIGTERM)
    psutil.Process(agent_pids[0]).wait(timeout=15)
    with open(tmp_path / "agent-2.log", "wb") as log:
        lo = int(hosts.json()["data"][0]["port_range"][0])
        second = start_agent(cluster, runtime, tmp_path / "agent", lo, log)
        try:
            assert get_text(f"http://127.0.0.1:{port}/i") == "survivor\n"
            assert client.exec_instance(inst.id, "cat /workspace/i").stdout == "survivor\n"
            client.stop_instance(inst.id, grace_seconds=5)
            client.wait_instance(inst.id, status="stopped", timeout=60)
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/i", timeout=2)
            leftovers = [p for p in psutil.process_iter(["cmdline"])
                         if f"-p {internal}" in " ".join(p.info["cmdline"] or [])]
            assert leftovers == []
        finally:
            second.terminate()
            second.wait(timeout=15)


def test_a_workload_that_ends_by_itself(real_agent: tuple[Cluster, str]) -> None:
    cluster, image = real_agent
    client = Client(cluster.url, cluster.admin_key)
    inst = client.create_instance(name="batch", gpu="h100", image=image,
                                  cmd=["sh", "-c", "echo working; sleep 2; exit 3"])
    client.wait_instance(inst.id, status="ready", timeout=60)
    done = client.wait_instance(inst.id, status="stopped", timeout=60)
    assert done.status_reason == "exited"
    assert done.model_extra and (done.model_extra["exit_code"], done.model_extra["exit_message"]) == \
        (3, "exited with code 3")
    assert client.hostnodes()[0].gpus_free == 2
