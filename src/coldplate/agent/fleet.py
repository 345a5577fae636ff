"""Fleets of simulated hosts: a YAML file of host groups, expanded and run in one process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from coldplate import protocol
from coldplate.agent.credentials import TokenStore
from coldplate.agent.daemon import Agent
from coldplate.agent.runtimes.sim import SimRuntime

DEMO_FLEET = Path(__file__).with_name("demo-fleet.yaml")
PORTS_PER_HOST = 1000


class FleetError(ValueError):
    pass


@dataclass(frozen=True)
class SimHost:
    """One simulated host: what it registers as, and how its simulated instances behave."""

    info: protocol.HostInfo
    start_delay_s: float = 0.0
    failure_rate: float = 0.0


def _group_specs(group: dict[str, Any], index: int) -> list[SimHost]:
    try:
        count = int(group.get("count", 1))
        port_base = int(group.get("port_base", 20000))
        return [
            SimHost(
                info=protocol.HostInfo(
                    name=f"{group['name_prefix']}-{i}", region=str(group["region"]),
                    location=protocol.Location(city=str(group.get("city", "")), country=str(group.get("country", ""))),
                    gpu=protocol.Gpu(model=str(group["gpu"]), count=int(group["gpu_count"])),
                    vcpus=int(group["vcpus"]), memory_gb=int(group["memory_gb"]), disk_gb=int(group["disk_gb"]),
                    port_range=(port_base + i * PORTS_PER_HOST, port_base + (i + 1) * PORTS_PER_HOST - 1),
                    prices=protocol.Prices(gpu_per_hour=str(group["gpu_price"]),
                                           spot_gpu_per_hour=str(group["spot_price"])),
                ),
                start_delay_s=float(group.get("start_delay_s", 0)), failure_rate=float(group.get("failure_rate", 0)),
            )
            for i in range(count)
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise FleetError(f"host group {index}: {exc!r}") from exc


def load_fleet(path: Path, hosts: int | None = None) -> list[SimHost]:
    """Every host the file describes; with `hosts`, exactly that many (cycling the groups)."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("hosts"), list):
        raise FleetError(f"{path}: expected a mapping with a 'hosts' list")
    specs = [spec for i, group in enumerate(data["hosts"]) for spec in _group_specs(group, i)]
    if not specs:
        raise FleetError(f"{path}: no hosts")
    if hosts is None:
        return specs
    out: list[SimHost] = []
    for n in range(hosts):
        base = specs[n % len(specs)]
        lap = n // len(specs)
        if lap == 0:
            out.append(base)
            continue
        shift = lap * len(specs) * PORTS_PER_HOST
        low, high = base.info.port_range
        info = base.info.model_copy(update={"name": f"{base.info.name}-r{lap}",
                                            "port_range": (low + shift, high + shift)})
        out.append(SimHost(info=info, start_delay_s=base.start_delay_s, failure_rate=base.failure_rate))
    return out


async def run_sim_fleet(*, server_url: str, join_token: str | None, specs: list[SimHost], stop: asyncio.Event,
                        tokens: TokenStore | None = None, heartbeat_interval: float = 5.0,
                        poll_wait: float = 25.0) -> None:
    """One agent per host, each with its own SimRuntime, all over one shared HTTP client."""
    limits = httpx.Limits(max_connections=2 * len(specs) + 10, max_keepalive_connections=2 * len(specs) + 10)
    async with httpx.AsyncClient(timeout=poll_wait + 10, limits=limits) as client:
        agents = [
            Agent(server_url=server_url, join_token=join_token, spec=spec.info, client=client,
                  runtime=SimRuntime(start_delay_s=spec.start_delay_s, failure_rate=spec.failure_rate),
                  heartbeat_interval=heartbeat_interval, poll_wait=poll_wait, tokens=tokens)
            for spec in specs
        ]
        await asyncio.gather(*(agent.run(stop) for agent in agents))
