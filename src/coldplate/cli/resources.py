"""Resource commands: instances, offers, gpu-types, hostnodes, projects, keys."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import typer

from coldplate.cli.join_tokens import join_tokens_app
from coldplate.cli.output import api, console, pairs, show

instances_app = typer.Typer(help="Create and manage GPU instances.", no_args_is_help=True)
hostnodes_app = typer.Typer(help="Hostnodes (admin).", no_args_is_help=True)
projects_app = typer.Typer(help="Projects (admin).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (admin).", no_args_is_help=True)

JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
INSTANCE_COLUMNS: list[tuple[str, Any]] = [
    ("id", lambda i: i.id), ("name", lambda i: i.name), ("status", lambda i: i.status),
    ("gpu", lambda i: f"{i.gpu.count}x {i.gpu.type}"), ("region", lambda i: i.region),
    ("$/h", lambda i: i.price_per_hour), ("ssh", lambda i: i.ssh_command),
]


@instances_app.command("create")
def create(
    name: str = typer.Option(...), gpu: str = typer.Option(...), gpu_count: int = typer.Option(1),
    region: str = typer.Option(None), image: str = typer.Option(None), cmd: str = typer.Option(None),
    env: list[str] = typer.Option([], help="KEY=VALUE, repeatable."),
    label: list[str] = typer.Option([], help="KEY=VALUE, repeatable."),
    port: list[str] = typer.Option([], help="INTERNAL[:EXTERNAL], repeatable."),
    ssh_key_file: Path = typer.Option(None, help="An OpenSSH public key file."),
    volume: list[str] = typer.Option([], help="NAME:/MOUNT/PATH[:ro], a project volume on the host; repeatable."),
    cloud_init: Path = typer.Option(None, help="A #cloud-config YAML file run on first boot."),
    spot: bool = typer.Option(False), duration_hours: int = typer.Option(None), max_hours: float = typer.Option(None),
    budget_limit: str = typer.Option(None, help="Dollars; alerts at 50/80/100 %, terminated at 100 %."),
    idempotency_key: str = typer.Option(None), wait: bool = typer.Option(False, help="Wait until it is ready."),
    as_json: bool = JSON,
) -> None:
    """Create an instance on the cheapest host with capacity."""
    ports = []
    for item in port:
        internal, _, external = item.partition(":")
        if not internal.isdigit() or (external and not external.isdigit()):
            raise typer.BadParameter(f"expected INTERNAL[:EXTERNAL], got {item!r}", param_hint="--port")
        ports.append({"internal_port": int(internal), **({"external_port": int(external)} if external else {})})
    volumes = []
    for item in volume:
        volume_name, _, rest = item.partition(":")
        path, _, mode = rest.partition(":")
        if not volume_name or not path.startswith("/") or mode not in ("", "ro", "rw"):
            raise typer.BadParameter(f"expected NAME:/MOUNT/PATH[:ro], got {item!r}", param_hint="--volume")
        volumes.append({"name": volume_name, "mount_path": path, "readonly": mode == "ro"})
    fields: dict[str, Any] = {
        "name": name, "gpu": gpu, "gpu_count": gpu_count, "region": region, "image": image,
        "cmd": shlex.split(cmd) if cmd else None, "env": pairs(env, "--env") or None,
        "labels": pairs(label, "--label") or None, "ports": ports or None, "spot": spot or None,
        "duration_hours": duration_hours, "max_hours": max_hours,
        "ssh_keys": [ssh_key_file.read_text().strip()] if ssh_key_file else None,
        "volumes": volumes or None, "cloud_init": cloud_init.read_text() if cloud_init else None,
        "budget_limit": budget_limit,
    }
    with api() as client:
        inst = client.create_instance(idempotency_key=idempotency_key, **fields)
        if wait:
            with console.status(f"waiting for {inst.name} to be ready…"):
                inst = client.wait_instance(inst.id, status="ready", timeout=600)
    show(inst, as_json, INSTANCE_COLUMNS)


@instances_app.command("list")
def list_(status: str = typer.Option(None, help="Comma-separated statuses."),
          label: list[str] = typer.Option([], help="KEY=VALUE, repeatable."), as_json: bool = JSON) -> None:
    """List instances, newest first."""
    with api() as client:
        show(client.list_instances(status=status, label=pairs(label, "--label") or None), as_json, INSTANCE_COLUMNS)


@instances_app.command("get")
def get(ref: str, as_json: bool = JSON) -> None:
    """Show one instance by id or name."""
    with api() as client:
        show(client.get_instance(ref), as_json, INSTANCE_COLUMNS)


def _action(verb: str, ref: str, force: bool, as_json: bool) -> None:
    with api() as client:
        if verb == "stop":
            inst = client.stop_instance(ref, force=force)
        elif verb == "start":
            inst = client.start_instance(ref)
        elif verb == "restart":
            inst = client.restart_instance(ref, force=force)
        else:
            inst = client.terminate_instance(ref, force=force)
    show(inst, as_json, INSTANCE_COLUMNS)


@instances_app.command("stop")
def stop(ref: str, force: bool = typer.Option(False), as_json: bool = JSON) -> None:
    """Stop an instance (its disk is kept)."""
    _action("stop", ref, force, as_json)


@instances_app.command("start")
def start(ref: str, as_json: bool = JSON) -> None:
    """Start a stopped instance."""
    _action("start", ref, False, as_json)


@instances_app.command("restart")
def restart(ref: str, force: bool = typer.Option(False), as_json: bool = JSON) -> None:
    """Restart a running instance."""
    _action("restart", ref, force, as_json)


@instances_app.command("terminate")
def terminate(ref: str, force: bool = typer.Option(False), as_json: bool = JSON) -> None:
    """Terminate an instance (final)."""
    _action("terminate", ref, force, as_json)


@instances_app.command("wait")
def wait(ref: str, status: str = typer.Option("ready"), timeout: float = typer.Option(300),
         as_json: bool = JSON) -> None:
    """Wait until an instance reaches a status."""
    with api() as client, console.status(f"waiting for {ref} to be {status}…"):
        inst = client.wait_instance(ref, status=status, timeout=timeout)
    show(inst, as_json, INSTANCE_COLUMNS)


@instances_app.command("events")
def events(ref: str, as_json: bool = JSON) -> None:
    """An instance's lifecycle transitions, oldest first."""
    with api() as client:
        show(client.instance_events(ref), as_json, [
            ("at", lambda e: e.created_at), ("from", lambda e: e.from_status), ("to", lambda e: e.to_status),
            ("reason", lambda e: e.reason)])


@instances_app.command("exec")
def exec_(ref: str, cmd: str = typer.Argument(..., help="A shell command."), timeout: float = typer.Option(30),
          as_json: bool = JSON) -> None:
    """Run a command inside a ready instance; exits with the command's exit code."""
    with api() as client:
        result = client.exec_instance(ref, cmd, timeout=timeout)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        typer.echo(result.stdout, nl=False)
        typer.echo(result.stderr, nl=False, err=True)
    raise typer.Exit(result.exit_code)


@instances_app.command("logs")
def logs(ref: str, tail: int = typer.Option(100)) -> None:
    """The last lines of an instance's output."""
    with api() as client:
        typer.echo(client.instance_logs(ref, tail=tail), nl=False)


def offers(gpu: str = typer.Option(...), gpu_count: int = typer.Option(1), region: str = typer.Option(None),
           spot: bool = typer.Option(False), as_json: bool = JSON) -> None:
    """Every placeable option for a request, cheapest first."""
    with api() as client:
        show(client.offers(gpu=gpu, gpu_count=gpu_count, region=region, spot=spot), as_json, [
            ("hostnode", lambda o: o.hostnode_name), ("region", lambda o: o.region),
            ("city", lambda o: o.location.get("city")), ("gpu", lambda o: f"{o.gpu.count}x {o.gpu.type}"),
            ("free", lambda o: o.gpus_free), ("$/h", lambda o: o.price_per_hour), ("sandbox", lambda o: o.sandbox)])


def gpu_types(as_json: bool = JSON) -> None:
    """GPU types with availability and price range per region."""
    with api() as client:
        show(client.gpu_types(), as_json, [
            ("slug", lambda g: g.slug), ("name", lambda g: g.name), ("vram", lambda g: g.vram_gb),
            ("free", lambda g: ", ".join(f"{a.region}:{a.gpus_free}" for a in g.availability)),
            ("$/h", lambda g: ", ".join(f"{a.region}:{a.min_price_per_hour}-{a.max_price_per_hour}"
                                        for a in g.availability))])


HOST_COLUMNS: list[tuple[str, Any]] = [
    ("id", lambda h: h.id), ("name", lambda h: h.name), ("region", lambda h: h.region),
    ("status", lambda h: h.status), ("gpu", lambda h: f"{h.gpu.count}x {h.gpu.type}"),
    ("free", lambda h: h.gpus_free), ("$/gpu/h", lambda h: h.prices.get("gpu_per_hour")),
    ("sandbox", lambda h: h.sandbox)]


@hostnodes_app.command("list")
def hostnodes_list(as_json: bool = JSON) -> None:
    """All hostnodes."""
    with api() as client:
        show(client.hostnodes(), as_json, HOST_COLUMNS)


@hostnodes_app.command("get")
def hostnodes_get(host_id: str, as_json: bool = JSON) -> None:
    """One hostnode."""
    with api() as client:
        show(client.get_hostnode(host_id), as_json, HOST_COLUMNS)


def _set_status(host_id: str, status: str, as_json: bool) -> None:
    with api() as client:
        show(client.update_hostnode(host_id, status=status), as_json, HOST_COLUMNS)


@hostnodes_app.command("drain")
def drain(host_id: str, as_json: bool = JSON) -> None:
    """Take no new instances on a hostnode."""
    _set_status(host_id, "draining", as_json)


@hostnodes_app.command("maintenance")
def maintenance(host_id: str, as_json: bool = JSON) -> None:
    """Put a hostnode into maintenance."""
    _set_status(host_id, "maintenance", as_json)


@hostnodes_app.command("online")
def online(host_id: str, as_json: bool = JSON) -> None:
    """Put a hostnode back online."""
    _set_status(host_id, "online", as_json)


PROJECT_COLUMNS: list[tuple[str, Any]] = [("id", lambda p: p.id), ("name", lambda p: p.name),
                                          ("created", lambda p: p.created_at)]
KEY_COLUMNS: list[tuple[str, Any]] = [("id", lambda k: k.id), ("name", lambda k: k.name),
                                      ("scopes", lambda k: " ".join(k.scopes)), ("key", lambda k: k.key)]


@projects_app.command("create")
def projects_create(name: str, as_json: bool = JSON) -> None:
    """Create a project (a tenant)."""
    with api() as client:
        show(client.create_project(name), as_json, PROJECT_COLUMNS)


@projects_app.command("list")
def projects_list(as_json: bool = JSON) -> None:
    """All projects."""
    with api() as client:
        show(client.list_projects(), as_json, PROJECT_COLUMNS)


@keys_app.command("create")
def keys_create(project: str = typer.Option(...), name: str = typer.Option(...),
                scope: list[str] = typer.Option([], help="Repeatable; default: instances and billing."),
                as_json: bool = JSON) -> None:
    """Create an API key; the key is shown only now."""
    with api() as client:
        show(client.create_key(project, name, scope or None), as_json, KEY_COLUMNS)


@keys_app.command("list")
def keys_list(project: str = typer.Option(...), as_json: bool = JSON) -> None:
    """A project's keys."""
    with api() as client:
        show(client.list_keys(project), as_json, KEY_COLUMNS)


@keys_app.command("delete")
def keys_delete(key_id: str) -> None:
    """Revoke a key."""
    with api() as client:
        client.delete_key(key_id)
    typer.echo(f"revoked {key_id}")


def register(app: typer.Typer) -> None:
    app.add_typer(instances_app, name="instances")
    app.add_typer(hostnodes_app, name="hostnodes")
    app.add_typer(projects_app, name="projects")
    app.add_typer(keys_app, name="keys")
    app.add_typer(join_tokens_app, name="join-tokens")
    app.command("offers")(offers)
    app.command("gpu-types")(gpu_types)
