"""Isolation in the runtimes themselves (issue 9), with real bubblewrap, cgroups and Docker: who
owns what on the host, no silent fallback without bubblewrap, limits, the container's security
settings, and the SSH port that must be ours before an instance is `ready`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from docker.errors import NotFound

from coldplate.agent.daemon import Agent
from coldplate.agent.runtimes.base import Assignment, RuntimeFailure
from coldplate.agent.runtimes.cgroups import Cgroups
from coldplate.agent.runtimes.docker import DockerRuntime, container_name, network_name, remaps_root
from coldplate.agent.runtimes.process import NO_BWRAP, ProcessRuntime
from coldplate.agent.runtimes.sim import SimRuntime
from coldplate.agent.ssh import SshGateway
from tests.agent.test_agent import SPEC, StandInServer, assignment
from tests.e2e.conftest import free_port_block
from tests.e2e.test_runtimes_e2e import remove_project_networks

ROOT = os.geteuid() == 0
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def spec(cmd: list[str], **extra: Any) -> Assignment:
    return Assignment(instance_id=f"inst_i{uuid.uuid4().hex[:10]}", name="iso", desired="running",
                      status="provisioning", image="x", cmd=cmd, vcpus=1, memory_gb=1, **extra)


@pytest.fixture
async def process_runtime(tmp_path: Path) -> Any:
    runtime = ProcessRuntime(data_dir=tmp_path)
    yield runtime
    for instance_id in list(runtime.running_):
        await runtime.delete(instance_id)
    for path in runtime.root.glob("*") if runtime.root.exists() else []:
        await runtime.purge(path.name)


@needs_bwrap
@pytest.mark.skipif(not ROOT, reason="per-project uids need a root agent")
async def test_workspaces_and_volumes_belong_to_their_projects_uid(process_runtime: ProcessRuntime) -> None:
    a = spec(["sleep", "3600"], project_id="prj_a", volumes=[{"name": "data", "mount_path": "/data"}])
    b = spec(["sleep", "3600"], project_id="prj_b")
    await process_runtime.start(a)
    await process_runtime.start(b)
    uid_a, uid_b = process_runtime.uids.uid("prj_a"), process_runtime.uids.uid("prj_b")
    assert uid_a != uid_b and min(uid_a, uid_b) >= 900_000
    for path, uid in ((process_runtime.workspace(a.instance_id), uid_a),
                      (process_runtime.volume_dir("prj_a", "data"), uid_a),
                      (process_runtime.workspace(b.instance_id), uid_b)):
        info = path.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid, 0o700), path
    record = process_runtime.instance_dir(a.instance_id) / "process.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600 and record.stat().st_uid == 0
    assert stat.S_IMODE(process_runtime.instance_dir(a.instance_id).stat().st_mode) == 0o700
    done = await process_runtime.exec(a.instance_id, ["sh", "-c", "id -u; touch /data/x /workspace/y && echo ok"],
                                      timeout=10)
    assert done.stdout.split() == [str(uid_a), "ok"], done
    assert (process_runtime.volume_dir("prj_a", "data") / "x").stat().st_uid == uid_a
    # the next agent keeps the same owner for the same project
    assert ProcessRuntime(data_dir=process_runtime.root.parent).uids.uid("prj_a") == uid_a


@needs_bwrap
@pytest.mark.skipif(not ROOT, reason="per-project uids need a root agent")
async def test_a_disk_from_before_uids_is_handed_over(process_runtime: ProcessRuntime) -> None:
    """A workspace written when workloads ran as root stays usable by the instance's own uid."""
    s = spec(["sleep", "3600"], project_id="prj_old")
    old = process_runtime.workspace(s.instance_id)
    (old / "data").mkdir(parents=True)
    (old / "data" / "model.bin").write_text("weights\n")
    (old / "link").symlink_to("/etc/hostname")  # a link is re-owned, never followed
    await process_runtime.start(s)
    uid = process_runtime.uids.uid("prj_old")
    assert (old / "data" / "model.bin").stat().st_uid == uid and os.lstat(old / "link").st_uid == uid
    assert Path("/etc/hostname").stat().st_uid == 0
    done = await process_runtime.exec(s.instance_id, ["sh", "-c", "echo more >> /workspace/data/model.bin && "
                                                                  "cat /workspace/data/model.bin"], timeout=10)
    assert done.stdout == "weights\nmore\n", done


async def test_no_bubblewrap_no_start_unless_unsandboxed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found measuring issue 9: without bwrap at the agent's start, workloads ran with no sandbox,
    silently, and a bwrap installed later was never used."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sh", "sleep", "id"):
        found = shutil.which(tool)
        assert found is not None
        (tools / tool).symlink_to(found)
    real_path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(tools))  # a host where bubblewrap is not installed
    strict = ProcessRuntime(data_dir=tmp_path / "strict")
    with pytest.raises(RuntimeFailure) as refused:
        await strict.start(spec(["sleep", "3600"]))
    assert str(refused.value) == NO_BWRAP and "--unsandboxed" in str(refused.value)
    assert await strict.running() == set()

    loose = ProcessRuntime(data_dir=tmp_path / "loose", unsandboxed=True)
    assert loose.sandbox == "none"
    plain = spec(["sleep", "3600"])
    await loose.start(plain)
    assert await loose.running() == {plain.instance_id}
    assert not loose.running_[plain.instance_id].sandboxed
    await loose.delete(plain.instance_id)

    if shutil.which("bwrap", path=real_path) is None:
        return
    monkeypatch.setenv("PATH", real_path)  # bubblewrap installed while the agent runs: used at the next start
    assert loose.sandbox == "bubblewrap"
    boxed = spec(["sleep", "3600"])
    await strict.start(boxed)
    try:
        assert strict.running_[boxed.instance_id].sandboxed
        done = await strict.exec(boxed.instance_id, ["hostname"], timeout=10)
        assert done.stdout == "iso\n"
    finally:
        await strict.delete(boxed.instance_id)


@needs_bwrap
async def test_cgroups_hold_the_instances_limits(process_runtime: ProcessRuntime) -> None:
    cgroups = process_runtime.cgroups
    if not cgroups.controllers:
        pytest.skip("no writable cgroup here")
    s = spec(["sleep", "3600"])
    s = Assignment(**{**s.__dict__, "vcpus": 2, "memory_gb": 3})
    await process_runtime.start(s)
    directories = cgroups.directories(s.instance_id)
    main_pid = process_runtime.running_[s.instance_id].main_pid
    for directory in directories:
        assert str(main_pid) in (directory / "cgroup.procs").read_text().split()
    if not cgroups.unified and "memory" in cgroups.controllers:
        memory = cgroups.root / "memory" / "coldplate" / s.instance_id
        assert int((memory / "memory.limit_in_bytes").read_text()) == 3 * 2**30
    if not cgroups.unified and "cpu" in cgroups.controllers:
        cpu = cgroups.root / "cpu" / "coldplate" / s.instance_id
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == 2 * int((cpu / "cpu.cfs_period_us").read_text())
    done = await process_runtime.exec(s.instance_id, ["cat", "/proc/self/cgroup"], timeout=10)
    assert f"/coldplate/{s.instance_id}" in done.stdout  # what exec runs is held too
    assert process_runtime.enforced_limits() == sorted(
        {"cpu": "vcpus", "memory": "memory_gb", "pids": "pids"}[c] for c in cgroups.controllers)
    await process_runtime.stop(s.instance_id, grace_seconds=0, force=True)
    assert not any(d.exists() for d in directories)
    early = spec(["sh", "-c", "exit 4"])
    with pytest.raises(RuntimeFailure, match="exited with code 4"):
        await process_runtime.start(early)
    assert not any(d.exists() for d in cgroups.directories(early.instance_id))  # a failed start leaves none


def test_a_host_without_cgroups_says_it_enforces_no_limit(tmp_path: Path) -> None:
    """Where no controller can be used (here: files where the hierarchies should be mounted), the
    host enforces no limit, and says so rather than pretending."""
    for controller in ("cpu", "memory", "pids"):
        (tmp_path / controller).write_text("not a cgroup hierarchy")
    assert Cgroups(root=tmp_path).enforced() == []
    assert ProcessRuntime(data_dir=tmp_path / "d", cgroups=Cgroups(root=tmp_path)).enforced_limits() == []


async def test_containers_are_confined(docker_client: Any, busybox_image: str) -> None:
    runtime = DockerRuntime(client=docker_client, max_cpus=1)
    s = Assignment(instance_id=f"inst_i{uuid.uuid4().hex[:10]}", name="confined", desired="running",
                   status="provisioning", image=busybox_image, cmd=["sleep", "3600"], vcpus=1, memory_gb=1,
                   project_id=f"prj_{uuid.uuid4().hex[:8]}")
    try:
        await runtime.start(s)
        host = docker_client.containers.get(container_name(s.instance_id)).attrs["HostConfig"]
        assert host["Privileged"] is False and host["SecurityOpt"] == ["no-new-privileges"]
        assert host["CapDrop"] == ["NET_RAW"] and host["PidsLimit"] == 4096
        assert host["NetworkMode"] == network_name(s) == f"cp-net-{s.project_id}"
        assert host["Memory"] == 2**30 and host["NanoCpus"] == 10**9
        remapped = remaps_root(docker_client.info())
        assert runtime.enforced_limits() == ["memory_gb", "pids", *(["userns"] if remapped else []), "vcpus"]
        assert runtime.sandbox == "docker"
        done = await runtime.exec(s.instance_id, ["hostname"], timeout=10)
        assert done.stdout == "confined\n"
        await runtime.delete(s.instance_id)  # the project's last container: its network goes too
        with pytest.raises(NotFound):
            docker_client.networks.get(network_name(s))
    finally:
        await runtime.delete(s.instance_id)
        await runtime.purge(s.instance_id)
        remove_project_networks(docker_client)


def test_user_namespace_remapping_is_read_from_the_engines_security_options() -> None:
    """`docker info` of an engine started with --userns-remap (Docker 20.10) and of one without."""
    remapped = {"SecurityOptions": ["name=seccomp,profile=default", "name=userns"]}
    plain = {"SecurityOptions": ["name=apparmor", "name=seccomp,profile=default", "name=cgroupns"]}
    assert remaps_root(remapped) and not remaps_root(plain) and not remaps_root({})
    assert not remaps_root({"SecurityOptions": ["name=seccomp,profile=/etc/name=userns.json"]})


class EngineInfo:
    """Stands in for the engine only where `info` is read; what it answers is the point of the test."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.answer = info

    def info(self) -> dict[str, Any]:
        return self.answer


def test_a_docker_host_reports_userns_only_where_the_engine_remaps() -> None:
    with_remap = DockerRuntime(client=EngineInfo({"SecurityOptions": ["name=userns"]}))
    without = DockerRuntime(client=EngineInfo({"SecurityOptions": ["name=seccomp,profile=default"]}))
    assert with_remap.enforced_limits() == ["memory_gb", "pids", "userns", "vcpus"]
    assert without.enforced_limits() == ["memory_gb", "pids", "vcpus"]


async def test_container_root_is_not_host_root(docker_client: Any, busybox_image: str) -> None:
    """The escape a container root would have without remapping: its uid 0 is an unprivileged host
    uid, what it writes to its workspace belongs to that uid on the host, and the workspace's host
    directory is closed (0700) to everyone else."""
    if not remaps_root(docker_client.info()):
        pytest.skip("this Docker engine does not remap user namespaces (dockerd --userns-remap): "
                    "its container root is host root, which the hostnode reports")
    runtime = DockerRuntime(client=docker_client, max_cpus=1)
    s = Assignment(instance_id=f"inst_i{uuid.uuid4().hex[:10]}", name="rooted", desired="running",
                   status="provisioning", image=busybox_image, cmd=["sleep", "3600"], vcpus=1, memory_gb=1,
                   project_id=f"prj_{uuid.uuid4().hex[:8]}", volumes=[{"name": "data", "mount_path": "/data"}])
    try:
        await runtime.start(s)
        done = await runtime.exec(s.instance_id, ["sh", "-c", "id -u; cat /proc/self/uid_map; "
                                                  "echo x > /workspace/mine; echo y > /data/mine"], timeout=10)
        assert done.exit_code == 0, done.stderr
        uid, inside, outside, count = (int(n) for n in done.stdout.split())
        assert uid == 0 and inside == 0 and outside >= 1000 and count >= 1
        assert "userns" in runtime.enforced_limits()
        mounts = {m["Destination"]: Path(m["Source"])
                  for m in docker_client.containers.get(container_name(s.instance_id)).attrs["Mounts"]}
        for where in ("/workspace", "/data"):
            folder = mounts[where]
            assert (folder / "mine").stat().st_uid == outside != 0
            assert folder.stat().st_uid == outside and stat.S_IMODE(folder.stat().st_mode) == 0o700
    finally:
        await runtime.delete(s.instance_id)
        await runtime.purge(s.instance_id)
        with contextlib.suppress(NotFound):
            docker_client.volumes.get(f"cp-{s.project_id}-vol-data").remove(force=True)
        remove_project_networks(docker_client)


async def test_gpus_without_an_nvidia_runtime_fail_readably(docker_client: Any, busybox_image: str) -> None:
    """This engine has no NVIDIA runtime (no GPU here): a GPU instance fails with a reason, not a hang."""
    runtime = DockerRuntime(client=docker_client, real_gpus=True, gpu_uuids=["GPU-0000-a", "GPU-0000-b"])
    s = Assignment(instance_id=f"inst_i{uuid.uuid4().hex[:10]}", name="g", desired="running", status="provisioning",
                   image=busybox_image, cmd=["sleep", "3600"], gpu_indices=[1], vcpus=1, memory_gb=1)
    try:
        with pytest.raises(RuntimeFailure, match="cannot give GPUs to containers"):
            await runtime.start(s)
    finally:
        await runtime.delete(s.instance_id)
        await runtime.purge(s.instance_id)
        remove_project_networks(docker_client)


class RecordingServer(StandInServer):
    def __init__(self, rounds: list[list[dict[str, Any]]]) -> None:
        super().__init__(rounds)
        self.bodies: list[dict[str, Any]] = []
        self.registered: dict[str, Any] = {}

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/transition"):
            self.bodies.append(json.loads(request.content))
        if request.url.path.endswith("/register"):
            self.registered = json.loads(request.content)
        return await super().handler(request)


async def test_a_taken_ssh_port_fails_the_start_before_ready(tmp_path: Path) -> None:
    """Found measuring issue 9: with its SSH port taken, an instance became `ready` anyway, with an
    ssh_command that reached somebody else's program."""
    port = free_port_block(1)
    squatter = socket.create_server(("127.0.0.1", port))
    runtime = SimRuntime()
    server = RecordingServer([[{**assignment("provisioning", "running"), "ssh_port": port}]])
    client = httpx.AsyncClient(transport=httpx.MockTransport(server.handler))
    agent = Agent(server_url="http://cp", join_token="cpj", spec=SPEC, runtime=runtime, client=client,
                  heartbeat_interval=0.01, poll_wait=0.01, retry_delay=0.01,
                  ssh=SshGateway(runtime=runtime, data_dir=tmp_path))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        for _ in range(500):
            if any(b["status"] == "failed" for b in server.bodies):
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
        await client.aclose()
        squatter.close()
    # it failed within QUIET_START_S: `failed` alone, provisioning → failed
    assert [b["status"] for b in server.bodies][:1] == ["failed"]
    assert server.bodies[0]["failure_reason"] == f"the instance's SSH port {port} is already in use on the host"
    assert await runtime.running() == set()  # never started
    assert server.registered["isolation"] == {"sandbox": "simulated", "enforced_limits": []}


@needs_bwrap
@pytest.mark.skipif(not ROOT, reason="making device nodes needs root")
async def test_only_the_allocated_gpus_device_nodes_reach_the_sandbox(tmp_path: Path) -> None:
    """A stand-in /dev (nodes with /dev/null's numbers, named as on a 4-GPU host: no GPU here)
    through the real sandbox: GPU 2 sees its own node and the control nodes; no GPU sees none."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm", "nvidia-caps", "null"):
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    runtime = ProcessRuntime(data_dir=tmp_path / "data", dev_dir=dev, gpu_minors=[3, 2, 1, 0])  # index 1 = minor 2
    seen = {}
    for indices in ([1], []):
        s = spec(["sleep", "600"], gpu_indices=indices)
        await runtime.start(s)
        try:
            done = await runtime.exec(s.instance_id, ["sh", "-c", "ls /dev; echo cuda=$CUDA_VISIBLE_DEVICES"],
                                      timeout=10)
        finally:
            await runtime.delete(s.instance_id)
        seen[len(indices)] = done.stdout.split()
    assert sorted(n for n in seen[1] if n.startswith("nvidia")) == ["nvidia-uvm", "nvidia2", "nvidiactl"]
    assert "cuda=0" in seen[1]  # CUDA numbers the one GPU it can open from 0
    assert [n for n in seen[0] if n.startswith("nvidia")] == [] and "cuda=" in seen[0]


EVIL = r"""
#include <stdio.h>
__attribute__((constructor)) static void pwn(void) {
    FILE *f = fopen(MARKER, "a"); if (f) { fputs("pwned\n", f); fclose(f); } }
"""


@needs_bwrap
async def test_the_tenants_env_never_reaches_a_privileged_launcher(process_runtime: ProcessRuntime,
                                                                  tmp_path: Path) -> None:
    """Found in review: the instance's env was the environment of bwrap and nsenter, which run as root
    on the host; an LD_PRELOAD naming a library in the tenant's own workspace ran its code as root."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler to build the library an attacker would bring")
    marker = tmp_path / "pwned"
    s = spec(["sleep", "3600"], project_id="prj_evil")
    workspace = process_runtime.workspace(s.instance_id)
    workspace.mkdir(parents=True)
    source = tmp_path / "evil.c"
    source.write_text(EVIL)
    library = workspace / "evil.so"  # what the tenant copied into its disk in an earlier session
    subprocess.run([compiler, "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(library), str(source)],
                   check=True)
    subprocess.run(["true"], env={"LD_PRELOAD": str(library), "PATH": os.environ["PATH"]}, check=True)
    assert marker.read_text() == "pwned\n"  # control: the library does run where it is preloaded
    marker.unlink()
    evil = Assignment(**{**s.__dict__, "env": {"LD_PRELOAD": str(library), "WORD": "kept"}})
    await process_runtime.start(evil)
    done = await process_runtime.exec(s.instance_id, ["sh", "-c", "echo $WORD $LD_PRELOAD"], timeout=10)
    assert not marker.exists()  # neither bwrap nor nsenter (root, on the host) loaded it
    shell = process_runtime.shell(s.instance_id, "true", tty=False)
    assert shell is not None and "LD_PRELOAD" not in (shell.env or {})
    subprocess.run(shell.argv, env=shell.env, cwd=shell.cwd, check=False, capture_output=True, timeout=30)
    assert done.stdout.split()[:2] == ["kept", str(library)]  # the workload still gets its env, inside
    assert not marker.exists()
