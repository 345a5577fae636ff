"""Fleets of simulated hosts: a YAML file of host groups, expanded and run in one process.

Simulated hosts are separate machines: every host of a group has the same port range (they may
overlap, as real hosts' do), so a fleet of any size fits in the 16-bit port space. A large fleet
can be split over processes with `shard` (host i goes to shard i mod n). Per host the process
keeps an Agent and a SimRuntime (a few dicts); the random source is shared."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from coldplate import protocol
from coldplate.agent.credentials import TokenStore
from coldplate.agent.daemon import Agent
from coldplate.agent.runtimes.sim import SimRuntime
from coldplate.collector import collect_rarely

DEMO_FLEET = Path(__file__).with_name("demo-fleet.yaml")
PORTS_PER_HOST = 1000
HOSTS_PER_CLIENT = 8
SHARED_CONNECTIONS = 2  # per group of hosts, for everything but their long-polls
KEEPALIVE_S = 4.0


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
                    port_range=(port_base, port_base + PORTS_PER_HOST - 1),
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
        out.append(base if lap == 0 else SimHost(info=base.info.model_copy(update={"name": f"{base.info.name}-r{lap}"}),
                                                 start_delay_s=base.start_delay_s, failure_rate=base.failure_rate))
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` (0 <= i < n) → (i, n)."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise FleetError(f"shard must be i/n with 0 <= i < n, got {text!r}")
    return int(index), int(count)


def _limits(connections: int) -> httpx.Limits:
    """A pool of `connections` that drops a connection idle for KEEPALIVE_S, before the server's
    keep-alive timeout (uvicorn: 5 s) closes it under a request just sent on it."""
    return httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                        keepalive_expiry=KEEPALIVE_S)


def shard(specs: list[SimHost], index: int, count: int) -> list[SimHost]:
    """The hosts shard `index` of `count` runs: every count-th, so each shard gets a mix of groups."""
    return specs[index::count]


async def run_sim_fleet(*, server_url: str, join_token: str | None, specs: list[SimHost], stop: asyncio.Event,
                        tokens: TokenStore | None = None, heartbeat_interval: float | None = None,
                        poll_wait: float = 55.0) -> None:
    """One agent per host, each with its own SimRuntime; every HOSTS_PER_CLIENT agents share an
    HTTP client. A connection pool finds a free connection by scanning all of its connections, so
    pools stay small; one TLS context serves every client (building one per client costs tens of
    milliseconds).

    `heartbeat_interval` None: as the server says (its answer to registration and heartbeats)."""
    rng = random.Random()
    tls = httpx.create_ssl_context()
    async with contextlib.AsyncExitStack() as stack:
        agents = []
        for first in range(0, len(specs), HOSTS_PER_CLIENT):
            group = specs[first:first + HOSTS_PER_CLIENT]
            # long-polls and the other calls in pools of their own: in one pool a poll queued behind
            # heartbeats for the connection of the next poll to return, up to a whole poll (at 10,000
            # hosts on PostgreSQL a tenth of the polls started 18 s or more after the last ended, and
            # creates missed their wake-ups); one connection per long-poll, a few for the rest (two per
            # host would pass the server's 20,000 open files)
            polls = await stack.enter_async_context(httpx.AsyncClient(
                timeout=poll_wait + 10, verify=tls, limits=_limits(len(group))))
            client = await stack.enter_async_context(httpx.AsyncClient(
                timeout=poll_wait + 10, verify=tls, limits=_limits(SHARED_CONNECTIONS)))
            agents += [
                Agent(server_url=server_url, join_token=join_token, spec=spec.info, client=client, poll_client=polls,
                      runtime=SimRuntime(start_delay_s=spec.start_delay_s, failure_rate=spec.failure_rate, rng=rng),
                      heartbeat_interval=heartbeat_interval, poll_wait=poll_wait, tokens=tokens)
                for spec in group
            ]
        gc.freeze()  # thousands of agents live as long as the process: no collection need walk them
        collector = asyncio.create_task(collect_rarely())
        try:
            await asyncio.gather(*(agent.run(stop) for agent in agents))
        finally:  # its own finally puts the collector's thresholds back
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
