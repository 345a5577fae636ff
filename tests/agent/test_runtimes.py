"""The same suite for the docker runtime (a real Docker engine, a locally imported busybox image)
and the process runtime (real processes, in bubblewrap where it is installed)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from coldplate.agent.runtimes.base import Assignment, RuntimeFailure
from coldplate.agent.runtimes.docker import DockerRuntime, container_name, project_volume_name, volume_name
from coldplate.agent.runtimes.process import ProcessRuntime
from tests.e2e.conftest import free_port_block
from tests.e2e.test_runtimes_e2e import remove_project_networks


class Harness:
    def __init__(self, runtime: Any, image: str) -> None:
        self.runtime = runtime
        self.image = image
        self.created: list[str] = []
        self.cleanup: list[str] = []  # project volumes, which outlive instances

    def spec(self, cmd: list[str], **extra: Any) -> Assignment:
        instance_id = f"inst_t{uuid.uuid4().hex[:10]}"
        self.created.append(instance_id)
        return Assignment(instance_id=instance_id, name="t", desired="running", status="provisioning",
                          image=self.image, cmd=cmd, vcpus=1, memory_gb=1, **extra)

    def read_workspace(self, instance_id: str, name: str) -> str:
        if isinstance(self.runtime, DockerRuntime):
            container = self.runtime.client.containers.get(container_name(instance_id))
            return str(container.exec_run(["cat", f"/workspace/{name}"]).output.decode())
        return (self.runtime.workspace(instance_id) / name).read_text()


@pytest.fixture(params=["docker", "process"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "docker":
        client = request.getfixturevalue("docker_client")
        h = Harness(DockerRuntime(client=client, max_cpus=1), request.getfixturevalue("busybox_image"))
    else:
        h = Harness(ProcessRuntime(data_dir=tmp_path), "ignored")
    yield h
    for instance_id in h.created:
        await h.runtime.delete(instance_id)
        await h.runtime.purge(instance_id)
    for volume in h.cleanup:
        h.runtime.client.volumes.get(volume).remove(force=True)
    if request.param == "docker":
        remove_project_networks(h.runtime.client)


async def wait_text(url: str) -> str:
    """Async: the process runtime's port proxy runs on this same event loop, as in the agent."""
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                return (await client.get(url)).text
            except httpx.HTTPError:
                assert time.monotonic() < deadline, url
                await asyncio.sleep(0.1)


async def test_http_server_reachable_on_forwarded_port_with_env(harness: Harness) -> None:
    port, internal = free_port_block(1), free_port_block(1)
    # a process shares the host's network: it listens on loopback; a container listens on all its addresses
    listen = f"{internal}" if isinstance(harness.runtime, DockerRuntime) else f"127.0.0.1:{internal}"
    s = harness.spec(["sh", "-c", "cd /workspace 2>/dev/null || cd $WORKSPACE; mkdir -p www; "
                                  "echo hi-$GREETING-$CUDA_VISIBLE_DEVICES > www/index.html; "
                                  f"exec busybox httpd -f -p {listen} -h www"],
                     env={"GREETING": "there"}, ports=[{"internal_port": internal, "external_port": port}],
                     gpu_indices=[1, 3])
    await harness.runtime.start(s)
    assert s.instance_id in await harness.runtime.running()
    assert (await wait_text(f"http://127.0.0.1:{port}/index.html")).strip() == "hi-there-1,3"


async def test_workspace_survives_stop_and_start(harness: Harness) -> None:
    s = harness.spec(["sh", "-c", "cd /workspace 2>/dev/null || cd $WORKSPACE; date >> boots; exec sleep 3600"])
    await harness.runtime.start(s)
    await harness.runtime.stop(s.instance_id, grace_seconds=1, force=False)
    assert s.instance_id not in await harness.runtime.running()
    await harness.runtime.start(s)
    assert len(harness.read_workspace(s.instance_id, "boots").strip().splitlines()) == 2


async def test_sigterm_within_grace_exits_cleanly(harness: Harness) -> None:
    s = harness.spec(["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"])
    await harness.runtime.start(s)
    started = time.monotonic()
    info = await harness.runtime.stop(s.instance_id, grace_seconds=10, force=False)
    assert info.exit_code == 0 and info.exit_message == "exited with code 0"
    assert time.monotonic() - started < 5


async def test_sigkill_after_grace(harness: Harness) -> None:
    s = harness.spec(["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"])
    await harness.runtime.start(s)
    started = time.monotonic()
    info = await harness.runtime.stop(s.instance_id, grace_seconds=1, force=False)
    assert time.monotonic() - started >= 1
    assert info.exit_code == 137 and info.exit_message == "killed by signal 9 (SIGKILL)"


async def test_force_kills_at_once(harness: Harness) -> None:
    s = harness.spec(["sleep", "3600"])
    await harness.runtime.start(s)
    started = time.monotonic()
    info = await harness.runtime.stop(s.instance_id, grace_seconds=60, force=True)
    assert info.exit_message == "killed by signal 9 (SIGKILL)" and time.monotonic() - started < 5


async def test_early_exit_fails_readably(harness: Harness) -> None:
    with pytest.raises(RuntimeFailure, match=r"exited during start \(exited with code 3\); last output: oops"):
        await harness.runtime.start(harness.spec(["sh", "-c", "echo oops; exit 3"]))


async def test_docker_missing_image_fails_readably(docker_client: Any) -> None:
    runtime = DockerRuntime(client=docker_client)
    spec = Assignment(instance_id=f"inst_t{uuid.uuid4().hex[:10]}", name="t", desired="running",
                      status="provisioning", image="coldplate-test/does-not-exist:1", cmd=["true"])
    with pytest.raises(RuntimeFailure, match="could not be pulled|was not found"):
        await runtime.start(spec)
    await runtime.delete(spec.instance_id)


async def test_delete_keeps_the_workspace_until_purge(harness: Harness) -> None:
    s = harness.spec(["sh", "-c", "echo kept > /workspace/f; sleep 3600"])
    await harness.runtime.start(s)
    await harness.runtime.delete(s.instance_id)
    assert s.instance_id not in await harness.runtime.running()
    if isinstance(harness.runtime, DockerRuntime):
        client = harness.runtime.client
        assert not client.containers.list(all=True, filters={"name": container_name(s.instance_id)})
        assert client.volumes.list(filters={"name": volume_name(s.instance_id)})
        await harness.runtime.purge(s.instance_id)
        assert not client.volumes.list(filters={"name": volume_name(s.instance_id)})
    else:
        assert (harness.runtime.workspace(s.instance_id) / "f").read_text() == "kept\n"
        await harness.runtime.purge(s.instance_id)
        assert not harness.runtime.instance_dir(s.instance_id).exists()


async def test_cloud_init_runs_once_before_the_workload(harness: Harness) -> None:
    config = {"write_files": [{"path": "/workspace/app.conf", "content": "port=1\n", "permissions": "0600"}],
              "runcmd": ["echo runcmd saw $(cat /workspace/app.conf) >> /workspace/boot.log", ["echo", "argv form"]]}
    s = harness.spec(["sh", "-c", "echo workload up; sleep 3600"], cloud_init=config)
    await harness.runtime.start(s)  # returns once cloud-init has finished
    assert harness.read_workspace(s.instance_id, "boot.log") == "runcmd saw port=1\n"
    await harness.runtime.stop(s.instance_id, grace_seconds=0, force=True)
    await harness.runtime.start(s)
    assert harness.read_workspace(s.instance_id, "boot.log") == "runcmd saw port=1\n"  # not run again
    lines = (await harness.runtime.logs(s.instance_id, tail=None, cursor=None)).lines
    assert lines.count("cloud-init: finished") == 1 and "argv form" in lines
    assert lines.count("workload up") == 2


async def test_failing_runcmd_fails_the_start_with_its_output(harness: Harness) -> None:
    s = harness.spec(["sleep", "3600"], cloud_init={"runcmd": ["echo setting up", "echo no such thing >&2; exit 4"]})
    with pytest.raises(RuntimeFailure, match=r"(?s)exited with code 4.*no such thing\ncloud-init: runcmd\[1\]"):
        await harness.runtime.start(s)
    lines = (await harness.runtime.logs(s.instance_id, tail=None, cursor=None)).lines
    assert "setting up" in lines and lines[-1].endswith("failed with exit code 4")


async def test_volumes_are_shared_per_project_and_readonly_is_honoured(harness: Harness) -> None:
    project = f"prj_{uuid.uuid4().hex[:8]}"
    writer = harness.spec(["sh", "-c", "echo shared > /data/f; sleep 3600"], project_id=project,
                          volumes=[{"name": "data", "mount_path": "/data", "readonly": False}])
    await harness.runtime.start(writer)
    reader = harness.spec(["sleep", "3600"], project_id=project,
                          volumes=[{"name": "data", "mount_path": "/shared", "readonly": True}])
    await harness.runtime.start(reader)
    read = await harness.runtime.exec(reader.instance_id, ["cat", "/shared/f"], timeout=10)
    assert (read.exit_code, read.stdout) == (0, "shared\n")
    write = await harness.runtime.exec(reader.instance_id, ["sh", "-c", "echo x > /shared/g"], timeout=10)
    assert write.exit_code != 0 and "Read-only file system" in write.stderr
    other = harness.spec(["sleep", "3600"], project_id=f"{project}x",
                         volumes=[{"name": "data", "mount_path": "/data", "readonly": False}])
    await harness.runtime.start(other)
    assert (await harness.runtime.exec(other.instance_id, ["ls", "/data"], timeout=10)).stdout == ""
    if isinstance(harness.runtime, DockerRuntime):
        for name in (project_volume_name(project, "data"), project_volume_name(f"{project}x", "data")):
            harness.cleanup.append(name)


def test_process_runtime_sandboxes_with_bubblewrap(tmp_path: Path) -> None:
    import shutil

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    assert ProcessRuntime(data_dir=tmp_path).sandbox


async def test_process_workloads_are_adopted_by_the_next_agent(tmp_path: Path) -> None:
    """Found in a long session: workloads of a stopped agent ran on untracked (one busy loop for an
    hour), and a stop after the restart released GPUs that they still used."""
    first = ProcessRuntime(data_dir=tmp_path)
    internal, external = free_port_block(1), free_port_block(1)
    s = Assignment(instance_id="inst_adopt", name="t", desired="running", status="provisioning", image="x",
                   cmd=["sh", "-c", f"trap 'exit 0' TERM; echo adopted > /workspace/index.html; "
                                    f"busybox httpd -f -p {internal} -h /workspace & wait"],
                   ports=[{"internal_port": internal, "external_port": external}], env={"WORD": "kept"})
    await first.start(s)
    for server in first.running_["inst_adopt"].proxies:  # the old agent's process is gone, and its proxies
        server.close()
    second = ProcessRuntime(data_dir=tmp_path)
    assert await second.running() == set()
    await second.recover()
    assert await second.running() == {"inst_adopt"}
    assert (await wait_text(f"http://127.0.0.1:{external}/index.html")) == "adopted\n"
    done = await second.exec("inst_adopt", ["sh", "-c", "echo $WORD"], timeout=10)
    assert (done.exit_code, done.stdout) == (0, "kept\n")
    leader = second.running_["inst_adopt"].leader_pid
    info = await second.stop("inst_adopt", grace_seconds=5, force=False)
    assert info.exit_code is None and info.exit_message and "unknown" in info.exit_message
    assert not psutil.pid_exists(leader) or psutil.Process(leader).status() == psutil.STATUS_ZOMBIE
    third = ProcessRuntime(data_dir=tmp_path)
    await third.recover()  # nothing left to adopt
    assert await third.running() == set()
    await first.purge("inst_adopt")


async def test_a_start_cancelled_at_any_moment_leaves_nothing_running(tmp_path: Path) -> None:
    """Found by scripts/gpu_check.py: a terminate that cancelled a start a few milliseconds in (while
    the sandbox was being spawned) left the workload running, unknown to the runtime, so the stop
    that followed found nothing to end and the GPUs the server freed were still in use. Measured
    before the fix: 2 processes left at 1-10 ms on asyncio's loop, 1 at 10 ms on uvloop's."""
    runtime = ProcessRuntime(data_dir=tmp_path)
    marker = str(3000 + uuid.uuid4().int % 1000)
    for i, delay in enumerate((0.0, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05)):
        s = Assignment(instance_id=f"inst_cut{i}", name="t", desired="running", status="provisioning", image="x",
                       cmd=["sleep", marker])
        start = asyncio.create_task(runtime.start(s))
        await asyncio.sleep(delay)
        start.cancel()
        await asyncio.wait([start])
        await runtime.stop(s.instance_id, grace_seconds=0, force=True)
        await runtime.purge(s.instance_id)
    await asyncio.sleep(0.2)
    left = [p for p in psutil.process_iter(["cmdline", "status"])
            if p.info["cmdline"] == ["sleep", marker] and p.info["status"] != psutil.STATUS_ZOMBIE]
    for process in left:
        process.kill()
    assert left == [] and await runtime.running() == set()


async def test_a_reused_pid_is_not_adopted(tmp_path: Path) -> None:
    runtime = ProcessRuntime(data_dir=tmp_path)
    s = Assignment(instance_id="inst_gone", name="t", desired="running", status="provisioning", image="x",
                   cmd=["sleep", "3600"])
    await runtime.start(s)
    record = runtime.instance_dir("inst_gone") / "process.json"
    data = json.loads(record.read_text())
    await runtime.stop("inst_gone", grace_seconds=0, force=True)
    data["leader_pid"] = os.getpid()  # alive, but not the process that was recorded
    record.write_text(json.dumps(data))
    fresh = ProcessRuntime(data_dir=tmp_path)
    await fresh.recover()
    assert await fresh.running() == set() and not record.exists()


def test_a_workload_that_ended_at_once_leaves_no_record(tmp_path: Path) -> None:
    """Found in review: reading the start time of a leader that had already exited raised, and
    the start crashed instead of reporting the early exit."""
    from coldplate.agent.runtimes.process import Running

    runtime = ProcessRuntime(data_dir=tmp_path)
    spec = Assignment(instance_id="inst_quick", name="t", desired="running", status="provisioning", image="x")
    runtime.instance_dir("inst_quick").mkdir(parents=True)
    gone = Running(leader_pid=2**22 + 12345, main_pid=2**22 + 12345, env={}, prefix=[], process=None)
    runtime._record(spec, gone)
    assert not (runtime.instance_dir("inst_quick") / "process.json").exists()
