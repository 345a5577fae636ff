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
from pathlib import Path

import httpx
import typer

from coldplate.cli.resources import register

app = typer.Typer(help="coldplate: a self-hosted GPU cloud.", no_args_is_help=True, add_completion=False)

DEFAULT_DATA_DIR = Path(os.environ.get("COLDPLATE_DATA_DIR", str(Path.home() / ".coldplate")))


def _data_dir(value: Path | None) -> Path:
    return (value or DEFAULT_DATA_DIR).expanduser()


@app.command()
def server(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8787, help="Port to listen on."),
    data_dir: Path = typer.Option(None, help="Where the SQLite database and admin key live (~/.coldplate)."),
    database_url: str = typer.Option(None, envvar="COLDPLATE_DATABASE_URL", help="PostgreSQL URL instead of SQLite."),
) -> None:
    """Run the control plane (API and background loops)."""
    from coldplate.server import make_server_app, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    directory = _data_dir(data_dir)
    fastapi_app, _, created = make_server_app(data_dir=directory, url=database_url)
    if created:
        typer.echo(f"admin API key (shown once, also in {directory / 'admin-key'}): {created}")
    typer.echo(f"coldplate server listening on http://{host}:{port}")
    serve(fastapi_app, host=host, port=port)


@app.command()
def agent(
    server_url: str = typer.Option("http://127.0.0.1:8787", "--server", envvar="COLDPLATE_URL"),
    join_token: str = typer.Option(..., envvar="COLDPLATE_JOIN_TOKEN", help="Join token from an admin."),
    runtime: str = typer.Option("sim", help="Runtime: sim (simulated hosts)."),
    hosts: int = typer.Option(None, help="sim: how many hosts to simulate."),
    fleet: Path = typer.Option(None, help="sim: fleet file (default: the demo fleet)."),
    name: str = typer.Option(None, help="Host name for a single host (default: this machine's name)."),
    region: str = typer.Option("na", help="Region of a single host."),
) -> None:
    """Run a host agent (or, with --runtime sim, a fleet of simulated hosts)."""
    from coldplate.agent.fleet import DEMO_FLEET, load_fleet, local_host_spec, run_sim_fleet

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if runtime != "sim":
        raise typer.BadParameter("only the sim runtime exists so far", param_hint="--runtime")
    if fleet is not None or hosts is not None:
        specs = load_fleet(fleet or DEMO_FLEET, hosts)
    else:
        specs = [local_host_spec(name=name, region=region)]
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_sim_fleet(server_url=server_url, join_token=join_token, specs=specs, stop=stop)

    asyncio.run(main())


@app.command()
def up(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8787),
    data_dir: Path = typer.Option(None, help="Where the SQLite database and admin key live (~/.coldplate)."),
    demo: bool = typer.Option(False, help="Also start a simulated fleet in three regions."),
) -> None:
    """The embedded default: control plane on SQLite, a local agent, and with --demo a simulated fleet."""
    from coldplate.agent.fleet import DEMO_FLEET
    from coldplate.server import make_server_app, serve
    from coldplate.services import projects

    logging.basicConfig(level=logging.WARNING)
    directory = _data_dir(data_dir)
    fastapi_app, app_state, created = make_server_app(data_dir=directory, url=None)
    with app_state.tx() as session:
        _, join_token = projects.create_join_token(session, clock=app_state.clock, name="coldplate-up")
    url = f"http://{host}:{port}"
    children: list[subprocess.Popen[bytes]] = []

    def start_agents() -> None:
        _wait_healthy(url)
        env = {**os.environ, "COLDPLATE_JOIN_TOKEN": join_token}
        base = [sys.executable, "-m", "coldplate", "agent", "--server", url]
        children.append(subprocess.Popen([*base, "--name", f"local-{os.uname().nodename}"], env=env))
        if demo:
            children.append(subprocess.Popen([*base, "--runtime", "sim", "--fleet", str(DEMO_FLEET)], env=env))

    threading.Thread(target=start_agents, daemon=True).start()
    if created:
        typer.echo(f"admin API key (shown once, also in {directory / 'admin-key'}): {created}")
    typer.echo(f"coldplate is up on {url} (data in {directory}); Ctrl-C stops it")
    try:
        serve(fastapi_app, host=host, port=port)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=10)


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
