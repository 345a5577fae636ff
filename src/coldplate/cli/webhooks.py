"""`coldplate events` and `coldplate webhooks …`."""

from __future__ import annotations

import json
from typing import Any

import typer

from coldplate.cli.output import api, console, show

webhooks_app = typer.Typer(help="Signed webhooks for your project's events.", no_args_is_help=True)

JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
EVENT_TYPE = typer.Option([], "--event-type", help="Only these event types (repeatable); none: every type.")
WEBHOOK_COLUMNS: list[tuple[str, Any]] = [
    ("id", lambda h: h.id), ("url", lambda h: h.url), ("events", lambda h: ", ".join(h.event_types) or "all"),
    ("enabled", lambda h: "yes" if h.enabled else f"no ({h.disabled_reason})"),
    ("description", lambda h: h.description),
]
DELIVERY_COLUMNS: list[tuple[str, Any]] = [
    ("id", lambda d: d.id), ("event", lambda d: f"{d.event_seq} {d.event_type}"), ("status", lambda d: d.status),
    ("attempts", lambda d: d.attempts), ("http", lambda d: d.http_status), ("ms", lambda d: d.latency_ms),
    ("next attempt", lambda d: d.next_attempt_at), ("error", lambda d: d.error),
]


def events(type: str = typer.Option(None, "--type", help="e.g. instance.lifecycle"),
           instance: str = typer.Option(None, help="Only this instance's events (its id)."),
           since: str = typer.Option(None, help="ISO 8601 time, e.g. 2026-01-01T00:00:00Z."),
           as_json: bool = JSON) -> None:
    """Every event of your project, oldest first."""
    with api() as client:
        show(client.list_events(type=type, instance_id=instance, since=since), as_json, [
            ("seq", lambda e: e.seq), ("time", lambda e: e.timestamp), ("type", lambda e: e.type),
            ("instance", lambda e: e.data.get("id") if e.type == "instance.lifecycle" else e.data.get("instance_id")),
            ("detail", _detail)])


def _detail(event: Any) -> str:
    if event.type == "instance.lifecycle":
        previous = event.data.get("previous_status") or "new"
        return f"{previous} → {event.data.get('status')} ({event.data.get('status_reason')})"
    return json.dumps({k: v for k, v in event.data.items() if k != "instance_id"}, separators=(",", ":"))[:80]


def _secret_notice(secret: str | None) -> None:
    if secret:
        console.print(f"signing secret (shown once): {secret}", markup=False, highlight=False)


@webhooks_app.command("create")
def create(url: str, event_type: list[str] = EVENT_TYPE, description: str = typer.Option(None),
           disabled: bool = typer.Option(False, help="Create it disabled."), as_json: bool = JSON) -> None:
    """Add an endpoint; its signing secret is shown only now."""
    with api() as client:
        hook = client.create_webhook(url, event_types=event_type or None, description=description,
                                     enabled=False if disabled else None)
    show(hook, as_json, WEBHOOK_COLUMNS)
    if not as_json:
        _secret_notice(hook.secret)


@webhooks_app.command("list")
def list_(as_json: bool = JSON) -> None:
    """Your project's endpoints."""
    with api() as client:
        show(client.list_webhooks(), as_json, WEBHOOK_COLUMNS)


@webhooks_app.command("update")
def update(webhook_id: str, url: str = typer.Option(None), event_type: list[str] = EVENT_TYPE,
           all_events: bool = typer.Option(False, "--all-events", help="Clear the event type filter."),
           description: str = typer.Option(None),
           enabled: bool = typer.Option(None, "--enable/--disable", help="Turn deliveries on or off."),
           as_json: bool = JSON) -> None:
    """Change an endpoint's URL, event types, description or whether it is enabled."""
    if all_events and event_type:
        raise typer.BadParameter("give --event-type or --all-events, not both", param_hint="--all-events")
    types = [] if all_events else (event_type or None)
    with api() as client:
        show(client.update_webhook(webhook_id, url=url, event_types=types, description=description, enabled=enabled),
             as_json, WEBHOOK_COLUMNS)


@webhooks_app.command("delete")
def delete(webhook_id: str) -> None:
    """Remove an endpoint and its delivery log."""
    with api() as client:
        client.delete_webhook(webhook_id)
    typer.echo(f"deleted {webhook_id}")


@webhooks_app.command("rotate-secret")
def rotate_secret(webhook_id: str, as_json: bool = JSON) -> None:
    """A new signing secret (shown only now); the old one keeps signing for 24 hours."""
    with api() as client:
        hook = client.rotate_webhook_secret(webhook_id)
    show(hook, as_json, WEBHOOK_COLUMNS)
    if not as_json:
        _secret_notice(hook.secret)


@webhooks_app.command("deliveries")
def deliveries(webhook_id: str, status: str = typer.Option(None, help="pending, delivered or failed."),
               as_json: bool = JSON) -> None:
    """An endpoint's delivery log, newest first."""
    with api() as client:
        show(client.list_webhook_deliveries(webhook_id, status=status), as_json, DELIVERY_COLUMNS)


@webhooks_app.command("redeliver")
def redeliver(webhook_id: str, delivery_id: str, as_json: bool = JSON) -> None:
    """Send a delivery again now (same webhook-id and body)."""
    with api() as client:
        show(client.redeliver_webhook(webhook_id, delivery_id), as_json, DELIVERY_COLUMNS)


def register(app: typer.Typer) -> None:
    app.add_typer(webhooks_app, name="webhooks")
    app.command("events")(events)
