"""The docker runtime against a real Docker engine, with a locally imported busybox image."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from coldplate.agent.runtimes.base import Assignment, RuntimeFailure
from coldplate.agent.runtimes.docker import DockerRuntime, container_name
from tests.e2e.conftest import free_port


@pytest.fixture
async def runtime(docker_client: Any) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(client=docker_client, max_cpus=1)
    created: list[str] = []
    rt.created = created  # type: ignore[attr-defined]
    yield rt
    for instance_id in created:
        await rt.delete(instance_id)


def spec(rt: DockerRuntime, image: str, cmd: list[str], **extra: Any) -> Assignment:
    instance_id = f"inst_t{uuid.uuid4().hex[:10]}"
    rt.created.append(instance_id)  # type: ignore[attr-defined]
    return Assignment(instance_id=instance_id, name="t", desired="running", status="provisioning", image=image,
                      cmd=cmd, vcpus=1, memory_gb=1, **extra)


async def test_http_server_is_reachable_on_its_forwarded_port(runtime: DockerRuntime, busybox_image: str) -> None:
    port = free_port()
    s = spec(runtime, busybox_image, ["sh", "-c", "mkdir -p /www && echo hi-$GREETING > /www/index.html && "
                                                  "httpd -f -p 8080 -h /www"],
             env={"GREETING": "there"}, ports=[{"internal_port": 8080, "external_port": port}], gpu_indices=[1, 3])
    await runtime.start(s)
    assert s.instance_id in await runtime.running()
    deadline = time.monotonic() + 10
    while True:
        try:
            body = httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=2).text
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert body.strip() == "hi-there"
    env = runtime.client.containers.get(container_name(s.instance_id)).attrs["Config"]["Env"]
    assert "CUDA_VISIBLE_DEVICES=1,3" in env and "NVIDIA_VISIBLE_DEVICES=1,3" in env


async def test_workspace_survives_stop_and_start(runtime: DockerRuntime, busybox_image: str) -> None:
    s = spec(runtime, busybox_image, ["sh", "-c", "date >> /workspace/boots; sleep 3600"])
    await runtime.start(s)
    await runtime.stop(s.instance_id, grace_seconds=1, force=False)
    assert s.instance_id not in await runtime.running()
    await runtime.start(s)
    container = runtime.client.containers.get(container_name(s.instance_id))
    boots = container.exec_run(["cat", "/workspace/boots"]).output.decode().strip().splitlines()
    assert len(boots) == 2


async def test_sigterm_within_grace_exits_cleanly(runtime: DockerRuntime, busybox_image: str) -> None:
    s = spec(runtime, busybox_image, ["sh", "-c", "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done"])
    await runtime.start(s)
    started = time.monotonic()
    info = await runtime.stop(s.instance_id, grace_seconds=10, force=False)
    assert info.exit_code == 0 and info.exit_message == "exited with code 0"
    assert time.monotonic() - started < 5


async def test_sigkill_after_grace(runtime: DockerRuntime, busybox_image: str) -> None:
    s = spec(runtime, busybox_image, ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"])
    await runtime.start(s)
    started = time.monotonic()
    info = await runtime.stop(s.instance_id, grace_seconds=1, force=False)
    assert time.monotonic() - started >= 1
    assert info.exit_code == 137 and info.exit_message == "killed by signal 9 (SIGKILL)"


async def test_force_kills_at_once(runtime: DockerRuntime, busybox_image: str) -> None:
    s = spec(runtime, busybox_image, ["sleep", "3600"])
    await runtime.start(s)
    info = await runtime.stop(s.instance_id, grace_seconds=60, force=True)
    assert info.exit_message == "killed by signal 9 (SIGKILL)"


async def test_missing_image_and_early_exit_fail_readably(runtime: DockerRuntime, busybox_image: str) -> None:
    with pytest.raises(RuntimeFailure, match="could not be pulled|was not found"):
        await runtime.start(spec(runtime, "coldplate-test/does-not-exist:1", ["true"]))
    with pytest.raises(RuntimeFailure, match=r"exited during start \(exited with code 3\); last output: oops"):
        await runtime.start(spec(runtime, busybox_image, ["sh", "-c", "echo oops; exit 3"]))


async def test_delete_removes_container_and_volume(runtime: DockerRuntime, busybox_image: str) -> None:
    s = spec(runtime, busybox_image, ["sleep", "3600"])
    await runtime.start(s)
    await runtime.delete(s.instance_id)
    assert not runtime.client.containers.list(all=True, filters={"name": container_name(s.instance_id)})
    assert not runtime.client.volumes.list(filters={"name": f"cp-{s.instance_id}-workspace"})
