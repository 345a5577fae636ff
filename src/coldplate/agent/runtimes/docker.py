"""Instances as OCI containers through the Docker Engine API (Docker, or Podman's compatible socket).

Each instance is the container `cp-<id>` with a named volume `cp-<id>-workspace` at
`/workspace` that survives stop/start, its ports published on 127.0.0.1 at their allocated
external ports, its GPUs requested by index. The SDK is blocking, so every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from datetime import UTC, datetime
from typing import Any, cast

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from docker.types import DeviceRequest

from coldplate.agent.runtimes.base import (
    START_CHECK_S,
    Assignment,
    ExecResult,
    ExitInfo,
    LogChunk,
    RuntimeFailure,
    Shell,
    directory_bytes,
    exit_message,
    exited_during_start,
    gpu_env,
)

log = logging.getLogger(__name__)
LABEL = "coldplate.instance"


def container_name(instance_id: str) -> str:
    return f"cp-{instance_id}"


def volume_name(instance_id: str) -> str:
    return f"cp-{instance_id}-workspace"


class DockerRuntime:
    def __init__(self, *, client: Any | None = None, real_gpus: bool = False, max_cpus: int | None = None) -> None:
        self.client = client or docker.from_env()
        self.real_gpus = real_gpus  # with simulated inventory, no device request is made
        self.max_cpus = max_cpus or os.cpu_count() or 1

    async def start(self, spec: Assignment) -> None:
        await asyncio.to_thread(self._start, spec)

    def _start(self, spec: Assignment) -> None:
        name = container_name(spec.instance_id)
        try:
            container = self.client.containers.get(name)
        except NotFound:
            container = self._create(spec)
        try:
            container.start()
        except APIError as exc:
            raise RuntimeFailure(f"the container could not start: {exc.explanation or exc}") from exc
        time.sleep(START_CHECK_S)
        container.reload()
        if container.status != "running":
            raise exited_during_start("container", container.attrs["State"].get("ExitCode"),
                                      container.logs(tail=5).decode(errors="replace").strip())

    def _ensure_image(self, image: str) -> None:
        try:
            self.client.images.get(image)
            return
        except ImageNotFound:
            pass
        try:
            self.client.images.pull(image)
        except APIError as exc:
            raise RuntimeFailure(f"the image {image!r} could not be pulled: {exc.explanation or exc}") from exc

    def _create(self, spec: Assignment) -> Any:
        self._ensure_image(spec.image)
        volume = volume_name(spec.instance_id)
        self.client.volumes.create(name=volume, labels={LABEL: spec.instance_id})
        devices = []
        if self.real_gpus and spec.gpu_indices:
            devices = [DeviceRequest(device_ids=[str(i) for i in spec.gpu_indices], capabilities=[["gpu"]])]
        try:
            return self.client.containers.create(
                spec.image, command=spec.cmd, entrypoint=spec.entrypoint, name=container_name(spec.instance_id),
                environment={**spec.env, **gpu_env(spec.gpu_indices)}, labels={LABEL: spec.instance_id},
                hostname=spec.name, detach=True, working_dir="/workspace",
                ports={f"{p['internal_port']}/tcp": ("127.0.0.1", p["external_port"]) for p in spec.ports},
                volumes={volume: {"bind": "/workspace", "mode": "rw"}},
                nano_cpus=int(min(spec.vcpus, self.max_cpus) * 1e9), mem_limit=f"{spec.memory_gb}g",
                device_requests=devices,
            )
        except ImageNotFound as exc:
            raise RuntimeFailure(f"the image {spec.image!r} was not found") from exc
        except APIError as exc:
            raise RuntimeFailure(f"the container could not be created: {exc.explanation or exc}") from exc

    async def stop(self, instance_id: str, *, grace_seconds: float, force: bool) -> ExitInfo:
        return await asyncio.to_thread(self._stop, instance_id, grace_seconds, force)

    def _stop(self, instance_id: str, grace_seconds: float, force: bool) -> ExitInfo:
        try:
            container = self.client.containers.get(container_name(instance_id))
        except NotFound:
            return ExitInfo(None, None)
        if container.status == "running":
            if force:
                container.kill()
            else:  # SIGTERM, then SIGKILL after the grace period
                container.stop(timeout=int(grace_seconds))
            container.wait(timeout=max(10, int(grace_seconds) + 10))
        container.reload()
        code = container.attrs["State"].get("ExitCode")
        return ExitInfo(code, exit_message(code))

    async def delete(self, instance_id: str) -> None:
        await asyncio.to_thread(self._delete, instance_id)

    def _delete(self, instance_id: str) -> None:
        for collection, name in ((self.client.containers, container_name(instance_id)),
                                 (self.client.volumes, volume_name(instance_id))):
            try:
                collection.get(name).remove(force=True)
            except NotFound:
                pass

    async def exec(self, instance_id: str, cmd: list[str], *, timeout: float) -> ExecResult:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._exec, instance_id, cmd), timeout=timeout)
        except TimeoutError:
            return ExecResult(124, "", f"the command ran past its {timeout:g}s timeout")

    def _exec(self, instance_id: str, cmd: list[str]) -> ExecResult:
        try:
            container = self.client.containers.get(container_name(instance_id))
            result = container.exec_run(cmd, demux=True)
        except (NotFound, APIError) as exc:
            return ExecResult(126, "", f"could not run the command: {exc}")
        out, err = cast(tuple[bytes | None, bytes | None], result.output)  # demux=True: (stdout, stderr)
        return ExecResult(int(result.exit_code or 0), (out or b"").decode(errors="replace"),
                          (err or b"").decode(errors="replace"))

    async def logs(self, instance_id: str, *, tail: int | None, cursor: str | None) -> LogChunk:
        return await asyncio.to_thread(self._logs, instance_id, tail, cursor)

    def _logs(self, instance_id: str, tail: int | None, cursor: str | None) -> LogChunk:
        try:
            container = self.client.containers.get(container_name(instance_id))
        except NotFound:
            return LogChunk([], cursor or "")
        kwargs: dict[str, Any] = {"timestamps": True}
        if cursor:
            kwargs["since"] = datetime.fromisoformat(cursor[:26].rstrip("Z")).replace(tzinfo=UTC)
        elif tail is not None:
            kwargs["tail"] = max(tail, 1)  # engines differ on tail=0 (some return everything)
        lines, last = [], cursor or ""
        for raw in container.logs(**kwargs).decode(errors="replace").splitlines():
            stamp, _, text = raw.partition(" ")
            if cursor and stamp <= cursor:
                continue
            lines.append(text)
            last = stamp
        return LogChunk([] if tail == 0 and not cursor else lines, last)

    async def sample(self, instance_id: str) -> dict[str, float]:
        return await asyncio.to_thread(self._sample, instance_id)

    def _sample(self, instance_id: str) -> dict[str, float]:
        container = self.client.containers.get(container_name(instance_id))
        stats = cast(dict[str, Any], container.stats(stream=False))
        cpu, pre = stats.get("cpu_stats", {}), stats.get("precpu_stats", {})
        cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
        system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        cpus = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or [1])
        networks = stats.get("networks", {}).values()
        started = datetime.fromisoformat(container.attrs["State"]["StartedAt"][:26].rstrip("Z")).replace(tzinfo=UTC)
        volume = self.client.volumes.get(volume_name(instance_id)).attrs["Mountpoint"]
        return {
            "cpu_pct": round(100.0 * cpu_delta / system_delta * cpus, 2) if system_delta > 0 else 0.0,
            "memory_bytes": stats.get("memory_stats", {}).get("usage", 0),
            "disk_bytes": directory_bytes(volume),
            "net_rx_bytes": sum(n.get("rx_bytes", 0) for n in networks),
            "net_tx_bytes": sum(n.get("tx_bytes", 0) for n in networks),
            "uptime_s": round((datetime.now(UTC) - started).total_seconds(), 1),
        }

    def shell(self, instance_id: str, command: str | None, *, tty: bool) -> Shell | None:
        """The docker CLI does the interactive attach (stdin, PTY, exit status) for us."""
        docker_cli = shutil.which("docker")
        if docker_cli is None:
            return None
        flags = ["-i", "-t", "-e", "TERM=xterm-256color"] if tty else ["-i"]
        inner = ["sh", "-c", command] if command else ["sh", "-l"]
        return Shell([docker_cli, "exec", *flags, container_name(instance_id), *inner])

    async def running(self) -> set[str]:
        return await asyncio.to_thread(self._running)

    def _running(self) -> set[str]:
        return {str(c.labels[LABEL]) for c in self.client.containers.list(filters={"label": LABEL})}
