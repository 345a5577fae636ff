"""Instances as OCI containers through the Docker Engine API (Docker, or Podman's compatible socket).

Each instance is the container `cp-<id>` with a named volume `cp-<id>-workspace` at
`/workspace` that survives stop/start, its ports published on 127.0.0.1 at their allocated
external ports, its GPUs requested by UUID (the NVIDIA runtime or CDI gives it those device nodes
and no others), and the request's volumes as project volumes `cp-<project>-vol-<name>` (created on
first use, kept after the instance) at their mount paths. Isolation: never privileged,
`no-new-privileges`, Docker's default capabilities minus NET_RAW, a PID limit, its vCPU and
memory limits, and the bridge network `cp-net-<project>` of its project, so another tenant's
containers cannot reach its unpublished ports. SSH forwards connect from inside its network
namespace (`netns.py`). Root in the container is root on the host unless the engine remaps user
namespaces (`dockerd --userns-remap`): the runtime detects that and reports it (`userns` among the
hostnode's enforced limits) or warns that it is missing. Its volumes are closed (0700) to everyone
on the host but their owner, the container's (remapped) root.
`delete` removes the container; `purge` removes the workspace volume at the end of the retention
period. The SDK is blocking, so every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
from datetime import UTC, datetime
from typing import Any, cast

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from docker.types import DeviceRequest, Mount

from coldplate.agent import cloud_init
from coldplate.agent.runtimes import netns
from coldplate.agent.runtimes.base import (
    STATE_DIR,
    Assignment,
    ExecResult,
    ExitInfo,
    LogChunk,
    RuntimeFailure,
    Shell,
    await_start,
    directory_bytes,
    exit_message,
    exited_during_start,
    gpu_env,
    launched,
)

log = logging.getLogger(__name__)
LABEL = "coldplate.instance"
HOST_LABEL = "coldplate.host"
PROJECT_LABEL = "coldplate.project"
VOLUME_LABEL = "coldplate.volume"
NETWORK_LABEL = "coldplate.network"
PIDS_LIMIT = 4096
NO_GPU_RUNTIME = ("this host's Docker engine cannot give GPUs to containers (no NVIDIA container runtime or "
                  "CDI): {detail}")


def container_name(instance_id: str) -> str:
    return f"cp-{instance_id}"


def volume_name(instance_id: str) -> str:
    return f"cp-{instance_id}-workspace"


def project_volume_name(project_id: str, name: str) -> str:
    return f"cp-{project_id}-vol-{name}"


def sftp_mounts(server: str = "/usr/lib/openssh/sftp-server") -> list[Mount]:
    """The host's OpenSSH sftp-server, its libraries and loader, read-only at /.coldplate/sftp, so
    `sftp` and `scp` work in any image (the SSH gateway runs it inside the container)."""
    if not os.path.exists(server):
        return []
    try:
        listing = subprocess.run(["ldd", server], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    mounts = [Mount("/.coldplate/sftp/sftp-server", os.path.realpath(server), type="bind", read_only=True)]
    for line in listing.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            mounts.append(Mount(f"/.coldplate/sftp/lib/{parts[0]}", os.path.realpath(parts[2]), type="bind",
                                read_only=True))
        elif parts and parts[0].startswith("/"):  # the dynamic loader
            mounts.append(Mount("/.coldplate/sftp/ld.so", os.path.realpath(parts[0]), type="bind", read_only=True))
    return mounts


def remaps_root(info: dict[str, Any]) -> bool:
    """Whether the engine (its `docker info`) runs containers in a remapped user namespace, so that
    their root is an unprivileged uid on the host: SecurityOptions then holds `name=userns`."""
    return any("name=userns" in str(option).split(",") for option in info.get("SecurityOptions") or [])


def network_name(spec: Assignment) -> str:
    """One bridge network per project: its instances reach each other, and no one else's."""
    return f"cp-net-{spec.project_id or spec.instance_id}"


class DockerRuntime:
    sandbox = "docker"

    def __init__(self, *, client: Any | None = None, real_gpus: bool = False, max_cpus: int | None = None,
                 host: str = "", gpu_uuids: list[str] | None = None) -> None:
        self.client = client or docker.from_env()
        self.real_gpus = real_gpus  # with simulated inventory, no device request is made
        self.gpu_uuids = gpu_uuids or []  # by NVML index; a device request names the GPUs by UUID
        self.sftp = sftp_mounts()
        self.max_cpus = max_cpus or os.cpu_count() or 1
        # The containers of this hostnode: another agent on the same engine has its own, and this
        # agent stops every container of its host that the server no longer assigns to it.
        self.labels = {HOST_LABEL: host}
        self.userns = self._remaps_root()

    def _remaps_root(self) -> bool:
        try:
            remapped = remaps_root(cast(dict[str, Any], self.client.info()))
        except (APIError, OSError, docker.errors.DockerException) as exc:
            log.warning("could not ask the Docker engine whether it remaps user namespaces: %s", exc)
            return False
        if not remapped:
            log.warning("this Docker engine does not remap user namespaces: root in a container is root on "
                        "the host; start dockerd with --userns-remap=default")
        return remapped

    async def start(self, spec: Assignment) -> None:
        container = await launched(asyncio.to_thread(self._launch, spec))

        async def exited() -> RuntimeFailure | None:
            return await asyncio.to_thread(self._exited, container)

        async def booted() -> bool:
            return await asyncio.to_thread(self._booted, container)

        await await_start(spec, exited=exited, booted=booted)

    def _launch(self, spec: Assignment) -> Any:
        name = container_name(spec.instance_id)
        try:
            container = self.client.containers.get(name)
        except NotFound:
            container = self._create(spec)
        try:
            container.start()
        except APIError as exc:
            raise self._failure("the container could not start", exc, gpus=bool(spec.gpu_indices)) from exc
        self._close_volumes(container)
        return container

    @staticmethod
    def _close_volumes(container: Any) -> None:
        """Its volumes' host directories to mode 0700: their owner is the container's root (the
        remapped uid, which the engine made their owner) and no one else on the host. Done after the
        start, since the engine copies an image directory's mode onto an empty volume when it mounts it."""
        container.reload()
        for mount in container.attrs.get("Mounts") or []:
            if mount.get("Type") == "volume" and mount.get("Source"):
                with contextlib.suppress(OSError):  # an engine on another machine: its paths are not here
                    os.chmod(mount["Source"], 0o700)

    def _failure(self, what: str, exc: APIError, *, gpus: bool) -> RuntimeFailure:
        """The engine's refusal as the user reads it; a GPU request to an engine without GPU support says so."""
        detail = str(exc.explanation or exc)
        if gpus and self.real_gpus and "device driver" in detail:
            return RuntimeFailure(NO_GPU_RUNTIME.format(detail=detail))
        return RuntimeFailure(f"{what}: {detail}")

    @staticmethod
    def _exited(container: Any) -> RuntimeFailure | None:
        container.reload()
        if container.status == "running":
            return None
        return exited_during_start("container", container.attrs["State"].get("ExitCode"),
                                   container.logs(tail=5).decode(errors="replace").strip())

    @staticmethod
    def _booted(container: Any) -> bool:
        try:
            return bool(container.exec_run(["sh", "-c", f"test -e {STATE_DIR}/{cloud_init.DONE_FILE}"]).exit_code == 0)
        except APIError:  # it stopped between the two checks: the next `exited` says so
            return False

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

    def _argv(self, spec: Assignment) -> list[str]:
        """What the container would run: the request's entrypoint and cmd over the image's, as Docker merges them."""
        config = self.client.images.get(spec.image).attrs.get("Config") or {}
        entrypoint = spec.entrypoint if spec.entrypoint is not None else (config.get("Entrypoint") or [])
        cmd = spec.cmd if spec.cmd is not None else ([] if spec.entrypoint is not None else (config.get("Cmd") or []))
        return [*entrypoint, *cmd]

    def _volumes(self, spec: Assignment) -> dict[str, dict[str, str]]:
        workspace = volume_name(spec.instance_id)
        self.client.volumes.create(name=workspace, labels={LABEL: spec.instance_id})
        mounts = {workspace: {"bind": "/workspace", "mode": "rw"}}
        for volume in spec.volumes:
            name = project_volume_name(spec.project_id, volume.name)
            try:
                self.client.volumes.get(name)
            except NotFound:
                self.client.volumes.create(name=name, labels={PROJECT_LABEL: spec.project_id,
                                                              VOLUME_LABEL: volume.name})
            mounts[name] = {"bind": volume.mount_path, "mode": "ro" if volume.readonly else "rw"}
        return mounts

    def _create(self, spec: Assignment) -> Any:
        self._ensure_image(spec.image)
        command, entrypoint = spec.cmd, spec.entrypoint
        if spec.cloud_init:  # the boot script runs first, then execs what the container would have run
            command, entrypoint = None, cloud_init.wrap(spec.cloud_init, self._argv(spec), state_dir=STATE_DIR)
        devices = []
        if self.real_gpus and spec.gpu_indices:
            ids = [self.gpu_uuids[i] if i < len(self.gpu_uuids) else str(i) for i in spec.gpu_indices]
            devices = [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]
        try:
            return self.client.containers.create(
                spec.image, command=command, entrypoint=entrypoint, name=container_name(spec.instance_id),
                environment={**spec.env, **gpu_env(spec.gpu_indices, isolated=bool(devices))},
                labels={LABEL: spec.instance_id, **self.labels},
                hostname=spec.name, detach=True, working_dir="/workspace",
                ports={f"{p.internal_port}/tcp": ("127.0.0.1", p.external_port) for p in spec.ports},
                volumes=self._volumes(spec), mounts=self.sftp, network=self._network(spec),
                nano_cpus=int(min(spec.vcpus, self.max_cpus) * 1e9), mem_limit=f"{spec.memory_gb}g",
                device_requests=devices, privileged=False, security_opt=["no-new-privileges"],
                cap_drop=["NET_RAW"], pids_limit=PIDS_LIMIT,
            )
        except ImageNotFound as exc:
            raise RuntimeFailure(f"the image {spec.image!r} was not found") from exc
        except APIError as exc:
            raise self._failure("the container could not be created", exc, gpus=bool(devices)) from exc

    def _network(self, spec: Assignment) -> str:
        name = network_name(spec)
        try:
            self.client.networks.get(name)
        except NotFound:
            try:
                self.client.networks.create(name, driver="bridge", check_duplicate=True,
                                            labels={NETWORK_LABEL: spec.project_id})
            except APIError as exc:  # another start of the same project made it meanwhile
                if exc.status_code != 409:
                    raise RuntimeFailure(f"the project's network could not be made: {exc.explanation or exc}") \
                        from exc
        return name

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
        try:
            container = self.client.containers.get(container_name(instance_id))
        except NotFound:
            return
        networks = [n for n in (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
                    if n.startswith("cp-net-")]
        container.remove(force=True)
        for name in networks:  # the project's last container gone: its network goes too (the engine's
            self._remove_network_if_unused(name)  # address pools hold only a few dozen bridges)

    def _remove_network_if_unused(self, name: str) -> None:
        try:
            network = self.client.networks.get(name)
            if not network.attrs.get("Containers"):
                network.remove()
        except (NotFound, APIError):  # gone already, or a start of the same project took it meanwhile
            pass

    async def purge(self, instance_id: str) -> None:
        await asyncio.to_thread(self._purge, instance_id)

    def _purge(self, instance_id: str) -> None:
        try:
            self.client.volumes.get(volume_name(instance_id)).remove(force=True)
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

    async def connect(self, instance_id: str, host: str, port: int
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        pid = await asyncio.to_thread(self._pid, instance_id)
        return await netns.open_connection_in(pid, host, port)

    def enforced_limits(self) -> list[str]:
        # disk: measured (quotas need overlay2 on xfs with pquota)
        return ["memory_gb", "pids", *(["userns"] if self.userns else []), "vcpus"]

    def _pid(self, instance_id: str) -> int:
        try:
            container = self.client.containers.get(container_name(instance_id))
        except NotFound as exc:
            raise OSError("the instance is not running") from exc
        pid = int(container.attrs["State"].get("Pid") or 0)
        if container.status != "running" or pid <= 0:
            raise OSError("the instance is not running")
        return pid

    async def running(self) -> set[str]:
        return await asyncio.to_thread(self._running)

    async def recover(self) -> None:
        return None  # containers run on without the agent and are found again by their label

    def _running(self) -> set[str]:
        filters: dict[str, Any] = {"label": [LABEL, *(f"{k}={v}" for k, v in self.labels.items())]}
        return {str(c.labels[LABEL]) for c in self.client.containers.list(filters=filters)}
