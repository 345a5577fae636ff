"""This machine as a hostnode: its inventory, its prices, and the runtime that runs its instances."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx

from coldplate import protocol
from coldplate.agent import inventory
from coldplate.agent.credentials import TokenStore
from coldplate.agent.daemon import Agent
from coldplate.agent.retention import DEFAULT_RETENTION_DAYS, WorkspaceRetention
from coldplate.agent.runtimes.base import Runtime
from coldplate.agent.ssh import SshGateway

RUNTIMES = ("docker", "process", "sim")


def local_host_spec(*, name: str | None, region: str, city: str = "", country: str = "",
                    address: str = "127.0.0.1", port_range: tuple[int, int] = (30000, 30999),
                    fake_gpus: str | None = None, data_dir: Path, prices: dict[str, str]) -> protocol.HostInfo:
    gpus = inventory.gpus(fake_gpus)
    resources = inventory.host_resources(data_dir)
    return protocol.HostInfo(
        name=name or socket.gethostname(), region=region,
        location=protocol.Location(city=city, country=country), address=address,
        gpu=protocol.Gpu(model=gpus.model, count=gpus.count, memory_mb=gpus.memory_mb, uuids=gpus.uuids,
                         driver_version=gpus.driver_version, simulated=gpus.simulated),
        vcpus=resources.vcpus, memory_gb=resources.memory_gb, disk_gb=resources.disk_gb, port_range=port_range,
        prices=protocol.Prices.model_validate(prices),
    )


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # no socket, no daemon, no permission: no engine to use
        return False


def make_runtime(kind: str, spec: protocol.HostInfo, *, data_dir: Path, unsandboxed: bool = False) -> Runtime:
    real = spec.gpu.count > 0 and not spec.gpu.simulated
    if kind == "docker":
        from coldplate.agent.runtimes.docker import DockerRuntime

        return DockerRuntime(real_gpus=real, max_cpus=spec.vcpus, host=spec.name, gpu_uuids=list(spec.gpu.uuids))
    if kind == "process":
        from coldplate.agent.runtimes.process import ProcessRuntime

        return ProcessRuntime(data_dir=data_dir, unsandboxed=unsandboxed,
                              gpu_minors=inventory.nvml_minor_numbers() if real else None)
    if kind == "sim":
        from coldplate.agent.runtimes.sim import SimRuntime

        return SimRuntime()
    raise ValueError(f"unknown runtime {kind!r}; known: {', '.join(RUNTIMES)}")


async def run_local_agent(*, server_url: str, join_token: str | None, spec: protocol.HostInfo, runtime: Runtime,
                          stop: asyncio.Event, data_dir: Path, heartbeat_interval: float | None = None,
                          retention_days: float = DEFAULT_RETENTION_DAYS) -> None:
    async with httpx.AsyncClient(timeout=40) as client:
        real_gpus = spec.gpu.count > 0 and not spec.gpu.simulated
        agent = Agent(server_url=server_url, join_token=join_token, spec=spec, runtime=runtime, client=client,
                      heartbeat_interval=heartbeat_interval, gpu_usage=inventory.nvml_usage if real_gpus else None,
                      ssh=SshGateway(runtime=runtime, data_dir=data_dir, bind=spec.address),
                      retention=WorkspaceRetention(data_dir, days=retention_days), tokens=TokenStore(data_dir))
        await agent.run(stop)
