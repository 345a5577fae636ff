"""Billing commands: `costs`, `usage`, `instances extend`, `instances budget`, `projects budget`.

Apart from resources.py so that file stays about resources; `register` adds them to the same groups."""

from __future__ import annotations

from typing import Any

import typer

from coldplate.cli.output import api, show

JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
CSV = typer.Option(False, "--csv", help="Print CSV (the API's export) instead of a table.")
INSTANCE_COLUMNS: list[tuple[str, Any]] = [
    ("id", lambda i: i.id), ("name", lambda i: i.name), ("status", lambda i: i.status),
    ("expires", lambda i: i.expires_at), ("reserved h", lambda i: i.duration_hours),
    ("budget", lambda i: i.budget_limit), ("cost so far", lambda i: i.cost_so_far)]
ENTRY_COLUMNS: list[tuple[str, Any]] = [
    ("instance", lambda e: e.instance_id), ("kind", lambda e: e.kind), ("from", lambda e: e.period_start),
    ("to", lambda e: e.period_end), ("seconds", lambda e: e.seconds), ("$/h", lambda e: e.rate_per_hour),
    ("amount", lambda e: e.amount)]


def costs(month: str = typer.Option(None, help="YYYY-MM; default: this month."),
          group_by: str = typer.Option("instance", help="instance, gpu, day or label:<key>."),
          as_csv: bool = CSV, as_json: bool = JSON) -> None:
    """A month's costs grouped, with the total."""
    with api() as client:
        if as_csv:
            typer.echo(client.costs_csv(month=month, group_by=group_by), nl=False)
            return
        result = client.costs(month=month, group_by=group_by)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    show(result.groups, False, [(group_by, lambda g: g.key), ("seconds", lambda g: g.seconds),
                                ("amount", lambda g: g.amount)], title=f"{result.month}: total {result.total}")


def usage(instance: str = typer.Option(None, help="An instance id or name."),
          since: str = typer.Option(None, help="ISO 8601 time."), until: str = typer.Option(None),
          as_csv: bool = CSV, as_json: bool = JSON) -> None:
    """Ledger entries, oldest first."""
    with api() as client:
        if as_csv:
            typer.echo(client.usage_csv(instance_id=instance, since=since, until=until), nl=False)
            return
        show(client.usage(instance_id=instance, since=since, until=until), as_json, ENTRY_COLUMNS)


def extend(ref: str, hours: int = typer.Option(..., help="Hours to add to the reservation (168 in all)."),
           as_json: bool = JSON) -> None:
    """Lengthen a reservation; the added hours are charged now."""
    with api() as client:
        show(client.extend_instance(ref, hours=hours), as_json, INSTANCE_COLUMNS)


def budget(ref: str, limit: str = typer.Option(None, help="Dollars, e.g. 25.00."),
           clear: bool = typer.Option(False, help="Remove the limit."), as_json: bool = JSON) -> None:
    """Set an instance's budget limit: alerts at 50/80/100 %, terminated at 100 %."""
    if (limit is None) == (not clear):
        raise typer.BadParameter("give --limit or --clear", param_hint="--limit")
    with api() as client:
        show(client.set_budget_limit(ref, None if clear else limit), as_json, INSTANCE_COLUMNS)


def project_budget(project: str, monthly: str = typer.Option(None, help="Dollars a month, e.g. 500.00."),
                   on_exceeded: str = typer.Option(None, help="block_creates (default) or stop_instances."),
                   remove: bool = typer.Option(False, help="Remove the budget."), as_json: bool = JSON) -> None:
    """Set a project's monthly budget (admin)."""
    if (monthly is None) == (not remove):
        raise typer.BadParameter("give --monthly or --remove", param_hint="--monthly")
    with api() as client:
        result = client.set_project_budget(project, monthly_budget=None if remove else monthly,
                                           on_budget_exceeded=on_exceeded)
    show(result, as_json, [("id", lambda p: p.id), ("name", lambda p: p.name),
                           ("monthly budget", lambda p: p.monthly_budget),
                           ("on exceeded", lambda p: p.on_budget_exceeded)])


def register(app: typer.Typer, *, instances: typer.Typer, projects: typer.Typer) -> None:
    app.command("costs")(costs)
    app.command("usage")(usage)
    instances.command("extend")(extend)
    instances.command("budget")(budget)
    projects.command("budget")(project_budget)
