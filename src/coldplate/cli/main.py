"""The `coldplate` command: `server`, `agent`, `up`, and the resource commands (over the SDK)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Coroutine
from pathlib import Path

import httpx
import typer

from coldplate.cli import billing
from coldplate.cli import webhooks as webhooks_cli
from coldplate.cli.resources import instances_app, projects_app, register

app = typer.Typer(help="coldplate: a self-hosted GPU cloud.", no_args_is_help=True, add_completion=False)

PARENT_PID = "COLDPLATE_PARENT_PID"  # set by `coldplate up` for the agents it starts
DEFAULT_DATA_DIR = Path(os.environ.get("COLDPLATE_DATA_DIR", str(Path.home() / ".coldplate")))


def _run(main: Coroutine[object, object, None]) -> None:
    """asyncio.run on uvloop (a sim fleet of thousands of hosts is mostly loop work)."""
    import uvloop

    uvloop.run(main)


def _data_dir(value: Path | None) -> Path:
    return (value or DEFAULT_DATA_DIR).expanduser()


@app.command()
def server(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8787, help="Port to listen on."),
    data_dir: Path = typer.Option(None, help="Where the SQLite database and admin key live (~/.coldplate)."),
    database_url: str = typer.Option(None, envvar="COLDPLATE_DATABASE_URL", help="PostgreSQL URL instead of SQLite."),
    allow_private_webhooks: bool = typer.Option(False, help="Let webhooks go to loopback, private and link-local "
                                                "addresses (refused by default: they could reach internal services)."),
    webhook_lease_seconds: float = typer.Option(30.0, min=1, help="How long a webhook delivery being sent is held "
                                                "by this server; if it dies, another sends it again after this."),
) -> None:
    """Run the control plane (API and background loops)."""
    from coldplate.server import make_server_app, serve
    from coldplate.state import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per webhook delivery
    directory = _data_dir(data_dir)
    fastapi_app, _, created = make_server_app(data_dir=directory, url=database_url,
                                              settings=Settings(allow_private_webhooks=allow_private_webhooks,
                                                                webhook_lease_s=webhook_lease_seconds))
    if created:
        typer.echo(f"admin API key (shown once, also in {directory / 'admin-key'}): {created}")
    typer.echo(f"coldplate server listening on http://{host}:{port}")
    serve(fastapi_app, host=host, port=port)


@app.command()
def agent(
    server_url: str = typer.Option("http://127.0.0.1:8787", "--server", envvar="COLDPLATE_URL"),
    join_token_file: Path = typer.Option(None, help="A file (mode 0600) holding the join token; else the "
                                         "environment's COLDPLATE_JOIN_TOKEN. Only a new host needs one."),
    join_token_value: str = typer.Option(None, "--join-token", hidden=True),
    runtime: str = typer.Option("docker", help="docker (containers), process (sandboxed processes) or sim."),
    hosts: int = typer.Option(None, help="sim: how many hosts to simulate."),
    shard: str = typer.Option(None, help="sim: run only shard i of n of the fleet (i/n), to split it over processes."),
    fleet: Path = typer.Option(None, help="sim: fleet file (default: the demo fleet)."),
    name: str = typer.Option(None, help="This host's name (default: the machine's hostname)."),
    region: str = typer.Option("na"),
    city: str = typer.Option(""),
    country: str = typer.Option(""),
    address: str = typer.Option("127.0.0.1", help="Address users reach this host's ports on."),
    port_range: str = typer.Option("30000-30999", help="Host ports for SSH and port forwards; keep them below "
                                   "the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768+ on Linux), "
                                   "where outgoing connections take ports too."),
    fake_gpus: str = typer.Option(None, help="Simulated GPU inventory for a host without GPUs, e.g. h100-80gb:8."),
    gpu_price: str = typer.Option("0", help="Per GPU per hour."),
    spot_price: str = typer.Option("0", help="Per GPU per hour, spot."),
    vcpu_price: str = typer.Option("0.010000", help="Per vCPU per hour."),
    memory_price: str = typer.Option("0.002000", help="Per GB of memory per hour."),
    data_dir: Path = typer.Option(None, help="Where this agent keeps instance data (~/.coldplate)."),
    heartbeat_interval: float = typer.Option(None, help="Seconds between heartbeats (each carries metrics); "
                                             "default: the interval the server names."),
    workspace_retention_days: float = typer.Option(7.0, min=0, help="Days a terminated instance's disk is kept."),
    unsandboxed: bool = typer.Option(False, help="process: run workloads without bubblewrap where it is missing "
                                     "(no isolation between tenants; the hostnode shows sandbox: none)."),
) -> None:
    """Run a host agent for this machine, or with --runtime sim a fleet of simulated hosts."""
    from coldplate.agent import credentials
    from coldplate.agent.fleet import DEMO_FLEET, FleetError, load_fleet, parse_shard, run_sim_fleet
    from coldplate.agent.fleet import shard as fleet_shard
    from coldplate.agent.local import RUNTIMES, local_host_spec, make_runtime, run_local_agent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if runtime not in RUNTIMES:
        raise typer.BadParameter(f"choose one of {', '.join(RUNTIMES)}", param_hint="--runtime")
    if join_token_value is not None:
        raise typer.BadParameter("a secret on the command line is visible to every user of this host (ps); "
                                 "put it in COLDPLATE_JOIN_TOKEN or a 0600 file given as --join-token-file",
                                 param_hint="--join-token")
    try:
        join_token = credentials.join_token(join_token_file)
    except credentials.CredentialError as exc:
        raise typer.BadParameter(str(exc), param_hint="--join-token-file") from exc
    tokens = credentials.TokenStore(_data_dir(data_dir))

    def need_join_token(names: list[str]) -> None:
        if join_token is None and any(tokens.load(n) is None for n in names):
            raise typer.BadParameter("a host registering for the first time needs a join token: set "
                                     "COLDPLATE_JOIN_TOKEN or give --join-token-file", param_hint="--join-token-file")

    stop = asyncio.Event()

    async def until_signalled(main: Awaitable[None]) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watcher = asyncio.create_task(_stop_with_parent(stop))
        await main
        watcher.cancel()

    if runtime == "sim" and (fleet is not None or hosts is not None):
        specs = load_fleet(fleet or DEMO_FLEET, hosts)
        if shard is not None:
            try:
                specs = fleet_shard(specs, *parse_shard(shard))
            except FleetError as exc:
                raise typer.BadParameter(str(exc), param_hint="--shard") from exc
        need_join_token([s.info.name for s in specs])
        _run(until_signalled(run_sim_fleet(server_url=server_url, join_token=join_token, specs=specs,
                                           stop=stop, tokens=tokens, heartbeat_interval=heartbeat_interval)))
        return
    lo, _, hi = port_range.partition("-")
    if not (lo.isdigit() and hi.isdigit()):
        raise typer.BadParameter("expected LOW-HIGH", param_hint="--port-range")
    try:
        spec = local_host_spec(name=name, region=region, city=city, country=country, address=address,
                               port_range=(int(lo), int(hi)), fake_gpus=fake_gpus, data_dir=_data_dir(data_dir),
                               prices={"gpu_per_hour": gpu_price, "spot_gpu_per_hour": spot_price,
                                       "vcpu_per_hour": vcpu_price, "memory_gb_per_hour": memory_price})
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fake-gpus") from exc
    need_join_token([spec.name])
    _run(until_signalled(run_local_agent(server_url=server_url, join_token=join_token, spec=spec,
                                         runtime=make_runtime(runtime, spec, data_dir=_data_dir(data_dir),
                                                              unsandboxed=unsandboxed),
                                         stop=stop, data_dir=_data_dir(data_dir),
                                         heartbeat_interval=heartbeat_interval,
                                         retention_days=workspace_retention_days)))


@app.command()
def up(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8787),
    data_dir: Path = typer.Option(None, help="Where the SQLite database and admin key live (~/.coldplate)."),
    demo: bool = typer.Option(False, help="Also start a simulated fleet in three regions."),
) -> None:
    """The embedded default: control plane on SQLite, a local agent, and with --demo a simulated fleet."""
    from coldplate.agent.fleet import DEMO_FLEET
    from coldplate.agent.local import docker_answers
    from coldplate.server import make_server_app, serve
    from coldplate.services import join_tokens
    from coldplate.state import Settings

    logging.basicConfig(level=logging.WARNING)
    directory = _data_dir(data_dir)
    # One user on one machine: webhooks to local receivers are what they want.
    fastapi_app, app_state, created = make_server_app(data_dir=directory, url=None,
                                                      settings=Settings(allow_private_webhooks=True))
    with app_state.tx() as session:
        # Only for the agents started below, which pass it in their environment and then re-register
        # with the agent tokens they keep in the data directory: it need not outlive their start.
        _, join_token = join_tokens.create(session, clock=app_state.clock, name="coldplate-up", expires_in_hours=1)
    url = f"http://{host}:{port}"
    children: list[subprocess.Popen[bytes]] = []

    def start_agents() -> None:
        _wait_healthy(url)
        env = {**os.environ, "COLDPLATE_JOIN_TOKEN": join_token, PARENT_PID: str(os.getpid())}
        base = [sys.executable, "-m", "coldplate", "agent", "--server", url]
        # The local agent runs containers where a Docker engine answers, else sandboxed processes.
        local_runtime = "docker" if docker_answers() else "process"
        children.append(subprocess.Popen([*base, "--name", f"local-{os.uname().nodename}", "--runtime",
                                          local_runtime, "--data-dir", str(directory)], env=env))
        if demo:
            children.append(subprocess.Popen([*base, "--runtime", "sim", "--fleet", str(DEMO_FLEET),
                                              "--data-dir", str(directory)], env=env))

    threading.Thread(target=start_agents, daemon=True).start()
    if created:
        typer.echo(f"admin API key (shown once, also in {directory / 'admin-key'}): {created}")
    typer.echo(f"coldplate is up on {url} (data in {directory}); Ctrl-C stops it")
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default handler that
    # would kill this process before the `finally` stops the agents.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        serve(fastapi_app, host=host, port=port)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:  # it is finishing a stop it had begun (up to its grace period)
                typer.echo(f"agent {child.pid} is finishing a stop in progress; it exits by itself when done")


async def _stop_with_parent(stop: asyncio.Event) -> None:
    """An agent started by `coldplate up` stops when `up` is gone, even if `up` was killed."""
    parent = os.environ.get(PARENT_PID)
    if not parent:
        return
    while not stop.is_set():
        if os.getppid() != int(parent):  # reparented: the process that started us has died
            stop.set()
            return
        await asyncio.sleep(0.5)


def _wait_healthy(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


register(app)
webhooks_cli.register(app)
billing.register(app, instances=instances_app, projects=projects_app)
